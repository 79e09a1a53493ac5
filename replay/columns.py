"""Typed columns against `raw`: what users read against what the producer sealed.

Every audit table keeps, beside `raw` (the record's wire bytes, which the hash chains
cover), the typed columns that SQL analytics, reports and exports read. The chain walk
(`replay.verify`) proves `raw`; this module proves each typed column of each row equals
what the sink wrote for that `raw`, so a column changed in the store (`ALTER TABLE lineage
UPDATE model_requested = …`, raw untouched) is a `column_mismatch` finding.

The expected values are built the way the sink built them, with its own mapping
(`sinks.avro_batch.insert_columns`): the columns the sink names are the record's fields
that the table has, which ClickHouse fills from the Avro field of the same name; every
other column took its default. ClickHouse's conversions are mirrored value by value:
timestamp-millis → DateTime64(3) (epoch ms both sides), union with null → Nullable,
arrays of records → Array(Tuple), enums → their symbol text, map → Map, string → UUID (in
canonical text); String columns are compared as bytes (they hold Avro `bytes` too). A
column of a type not mirrored here does not pass silently: its values differ and it is
reported. A column a record does not fill must hold its default, known here when it is
its type's zero (every migration's default is; a test holds them to it); another default
is not judged.

Not checked here: `raw` itself (the chain walk's), `ingested_at` (the store's arrival
time, in no record), `auth` (the record's authentication header, checked against raw by
`replay.forged`), and `producer_id` and `seq`, which the chain walk reads to place
each row and reports as `modified` / `reordered` when they differ from the bytes.

Speed: tables are read in Arrow pages in their sort key's order (range reads of the
primary index), the next page while this one is checked; each row's `raw` is decoded
once (fastavro), the expected values of a page are built into Arrow arrays of the
stored column's own type, and each whole column is compared at once; only a column that
differs is compared row by row. Decoding is what costs: `jobs` > 1 checks pages in that
many worker processes (`govledger audit verify --jobs N`).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import operator
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from replay.sources import ArrowReader, blobs, literal, texts
from replay.verify import Finding
from schemas import codec
from sinks.avro_batch import insert_columns
from sinks.tables import ALL_TABLES, SORT_KEYS

PAGE_ROWS = 20_000
NOT_FROM_RAW = frozenset({"raw", "ingested_at", "auth"})
"""`auth` is the record's Kafka header (schemas.authn), beside raw, not in it: replay.forged
checks it against raw."""
CHAIN_PLACED = frozenset({"producer_id", "seq"})
# Defaults of the migrations' columns that a record may not fill: each is its type's zero.
ZERO_DEFAULTS = frozenset({"", "''", "0", "[]", "false"})
MAX_SHOWN_CHARS = 60
# A plain string literal as a column default ('chat.completions'): no quote or escape.
STRING_LITERAL = re.compile(r"'([^'\\]+)'")


@dataclass(frozen=True, slots=True)
class Column:
    """One stored column: its name, ClickHouse type and default expression."""

    name: str
    type: str
    default: str = ""


class _Unknown:
    """A default this module cannot evaluate: the cell is not compared."""


UNKNOWN = _Unknown()


def _unwrapped(ch_type: str) -> str:
    for wrapper in ("LowCardinality(",):
        if ch_type.startswith(wrapper):
            return ch_type[len(wrapper) : -1]
    return ch_type


def zero_of(column: Column) -> Any:
    """The value ClickHouse gives `column` when an insert does not name it, in the form an
    Arrow read of it gives back; UNKNOWN for a default that is not its type's zero."""
    kind = _unwrapped(column.type)
    literal = STRING_LITERAL.fullmatch(column.default)
    if literal is not None and kind == "String":
        # A field added with a default (lineage v2's api): the rows of older records
        # hold the default the newer schema reads them with.
        return literal.group(1)
    if column.default not in ZERO_DEFAULTS:
        return UNKNOWN
    if kind.startswith("Nullable("):
        return None
    if kind.startswith(("Array(", "Map(")):
        return []
    if kind.startswith(("String", "FixedString(")):
        return ""
    if kind == "UUID":
        return str(uuid.UUID(int=0))
    if kind == "Bool":
        return False
    if kind.startswith(("Int", "UInt", "Float", "DateTime", "Date", "Decimal")):
        return 0
    return UNKNOWN


def select_expression(column: Column) -> str:
    """How a column is read so that it compares with the decoded value (UUIDs as text)."""
    if column.type in ("UUID", "Nullable(UUID)"):
        return f"toString(t.{column.name}) AS {column.name}"
    return f"t.{column.name} AS {column.name}"


def _canonical_uuid(value: Any) -> Any:
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        return value  # ClickHouse would have refused it: the stored value differs


def _map_entries(value: Any) -> Any:
    return list(value.items()) if isinstance(value, dict) else value


def _converter(column: Column) -> Callable[[Any], Any] | None:
    """How a decoded Avro value becomes the stored column's value, where they differ in
    form (see the module's doc); None where they are alike."""
    kind = _unwrapped(column.type)
    if kind in ("UUID", "Nullable(UUID)"):
        return _canonical_uuid
    if kind.startswith("Map("):
        return _map_entries
    return None


def expected_value(column: Column, value: Any) -> Any:
    """A decoded Avro value as the stored column holds it."""
    convert = _converter(column)
    return convert(value) if convert is not None and value is not None else value


def checked_columns(
    columns: Sequence[Column], judged_elsewhere: frozenset[str] = CHAIN_PLACED
) -> list[Column]:
    """The columns this module compares (see the module's doc for those it leaves)."""
    return [c for c in columns if c.name not in NOT_FROM_RAW | judged_elsewhere]


@dataclass(slots=True)
class ColumnReport:
    """What the column check read and found."""

    rows: int = 0
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Row:
    """A row's record as decoded from `raw` (None when the bytes do not decode)."""

    fields: dict[str, Any] | None
    inserted: frozenset[str]
    error: str = ""


def _decode(raw: bytes, present: Sequence[str], cache: dict[bytes, frozenset[str]]) -> _Row:
    try:
        entry, record = codec.decode_fields(raw)
    except codec.DecodeError as exc:
        return _Row(None, frozenset(), str(exc) or type(exc).__name__)
    inserted = cache.get(entry.fingerprint)
    if inserted is None:
        inserted = cache[entry.fingerprint] = frozenset(insert_columns(entry, present))
    return _Row(record, inserted)


def _shown(value: Any) -> str:
    if isinstance(value, bytes):  # String columns are read as bytes: most are text
        with contextlib.suppress(UnicodeDecodeError):
            value = value.decode()
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 1] + "…"


def _as_py(array: pa.Array, index: int) -> Any:
    try:
        return array[index].as_py()
    except (ValueError, UnicodeDecodeError, pa.ArrowException):
        return array[index]


def _same(stored: pa.Array, index: int, expected: Any, kind: pa.DataType) -> bool:
    try:
        wanted = pa.scalar(expected, type=kind)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return False
    if stored[index].equals(wanted):
        return True
    a, b = _as_py(stored, index), wanted.as_py()
    return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)


def _stored_array(page: pa.Table, name: str) -> pa.Array:
    array = page.column(name).combine_chunks()
    if pa.types.is_dictionary(array.type):  # LowCardinality, when sent as a dictionary
        array = array.dictionary_decode()
    # A ClickHouse String holds bytes (Avro `bytes` land there too), whatever Arrow type
    # the store labels it with: compared as bytes, never decoded as text.
    if pa.types.is_string(array.type):
        array = array.cast(pa.binary())
    elif pa.types.is_large_string(array.type):
        array = array.cast(pa.large_binary())
    return array


def _wanted(column: Column, rows: Sequence[_Row]) -> tuple[list[Any], set[int]]:
    """The values `column` should hold for each row, as decoded, and the rows it cannot be
    judged on (raw does not decode, or a default this module cannot evaluate)."""
    name, zero = column.name, zero_of(column)
    wanted: list[Any] = []
    skip: set[int] = set()
    for i, row in enumerate(rows):
        if row.fields is not None and name in row.inserted:
            wanted.append(row.fields[name])
        elif row.fields is None or zero is UNKNOWN:
            skip.add(i)
            wanted.append(None)
        else:
            wanted.append(zero)
    return wanted, skip


def _transposed(rows: Sequence[_Row], names: list[str]) -> dict[str, Sequence[Any]]:
    """Each named field's values over rows that all carry every one of them, read in one
    pass (the usual page: one schema, every row decoded)."""
    if not names:
        return {}
    if len(names) == 1:
        return {names[0]: [row.fields[names[0]] for row in rows]}  # type: ignore[index]
    getter = operator.itemgetter(*names)
    columns = zip(*(getter(row.fields) for row in rows), strict=True)  # type: ignore[arg-type]
    return dict(zip(names, columns, strict=True))


def _equal(stored: pa.Array, wanted: Sequence[Any]) -> bool:
    try:
        return bool(stored.equals(pa.array(wanted, type=stored.type)))
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return False  # a value the column's type cannot hold: compared row by row


def check_page(
    table: str,
    columns: Sequence[Column],
    page: pa.Table,
    judged_elsewhere: frozenset[str] = CHAIN_PLACED,
) -> list[Finding]:
    """Findings for the rows of one page (`select_expression` of every column, and raw).
    `judged_elsewhere`: columns left to another check (the chain walk's, in the store)."""
    present = [c.name for c in columns]
    cache: dict[bytes, frozenset[str]] = {}
    rows = [_decode(raw, present, cache) for raw in blobs(page.column("raw"))]
    differing: dict[int, list[str]] = {}
    checked = checked_columns(columns, judged_elsewhere)
    inserted = {row.inserted for row in rows}
    common: dict[str, Sequence[Any]] = {}
    if len(inserted) == 1 and rows and rows[0].fields is not None:
        common = _transposed(rows, [c.name for c in checked if c.name in rows[0].inserted])
    for column in checked:
        stored = _stored_array(page, column.name)
        skip: set[int] = set()
        if column.name in common:
            wanted = common[column.name]
        else:
            wanted, skip = _wanted(column, rows)
        if not skip and _equal(stored, wanted):
            continue
        # As decoded, the values differ: in the form ClickHouse stores them, they may not.
        convert = _converter(column)
        if convert is not None:
            wanted = [v if v is None or i in skip else convert(v) for i, v in enumerate(wanted)]
            if not skip and _equal(stored, wanted):
                continue
        for i, value in enumerate(wanted):
            if i not in skip and not _same(stored, i, value, stored.type):
                shown = f"{column.name}: stored {_shown(_as_py(stored, i))}, raw {_shown(value)}"
                differing.setdefault(i, []).append(shown)
    findings = []
    producers, seqs = texts(page.column("producer_id")), page.column("seq").to_pylist()
    for i, row in enumerate(rows):
        if row.fields is None:
            detail = f"raw does not decode ({row.error}): its columns cannot be checked"
            findings.append(
                Finding("column_mismatch", producers[i], int(seqs[i]), None, detail, table=table)
            )
            continue
        if i not in differing:
            continue
        names = [shown.split(":", 1)[0] for shown in differing[i]]
        findings.append(
            Finding(
                "column_mismatch",
                str(row.fields["producer_id"]),
                int(row.fields["seq"]),
                int(row.fields["occurred_at"]),
                f"column{'s' if len(names) > 1 else ''} {', '.join(names)} differ"
                f"{'' if len(names) > 1 else 's'} from raw ({'; '.join(differing[i])})",
                tenant_id=str(row.fields["tenant_id"]),
                table=table,
                event_id=str(row.fields["event_id"]),
            )
        )
    return findings


# --- reading the store ------------------------------------------------------------------


def table_columns(read: ArrowReader, table: str) -> list[Column]:
    """The stored columns of a table, in order. The SQL endpoint has no `currentDatabase()`
    for readers: the store's tables are those outside the engine's own databases, and a
    table name found in two databases is an error rather than a guess."""
    result = read(
        "SELECT name, type, default_expression FROM system.columns "  # noqa: S608
        f"WHERE table = {literal(table)} AND lower(database) NOT IN "
        "('system', 'information_schema') ORDER BY database, position"
    )
    if result.num_rows == 0:
        return []
    names, types, defaults = (texts(result.column(i)) for i in range(3))
    if len(set(names)) != len(names):
        raise ValueError(f"table {table} is found in more than one database of the store")
    return [Column(n, t, d) for n, t, d in zip(names, types, defaults, strict=True)]


@dataclass(frozen=True, slots=True)
class _Key:
    """One column of a table's sort key, as a page reads it back and a next page's query
    compares with it (so each page is a range read of the primary index)."""

    column: str
    read_as: str
    literal: Callable[[Any], str]


def _key(column: Column, index: int) -> _Key | None:
    kind, name = _unwrapped(column.type), f"t.{column.name}"
    alias = f"__key{index}"
    if kind == "String":
        return _Key(column.name, f"{name} AS {alias}", lambda v: literal(_text(v)))
    if kind == "UUID":
        return _Key(column.name, f"toString({name}) AS {alias}",
                    lambda v: f"toUUID({literal(_text(v))})")  # fmt: skip
    if kind == "DateTime64(3, 'UTC')":
        return _Key(column.name, f"toUnixTimestamp64Milli({name}) AS {alias}",
                    lambda v: f"fromUnixTimestamp64Milli(toInt64({int(v)}), 'UTC')")  # fmt: skip
    if kind.startswith(("Int", "UInt")):
        return _Key(column.name, f"{name} AS {alias}", lambda v: str(int(v)))
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def sort_keys(table: str, columns: Sequence[Column]) -> list[_Key]:
    """The table's sort key (`sinks.tables.SORT_KEYS`) when each part is a plain column of a
    type a key can be compared in, else (producer_id, seq)."""
    by_name = {c.name: c for c in columns}
    names = SORT_KEYS.get(table, ())
    keys = [_key(by_name[n], i) if n in by_name else None for i, n in enumerate(names)]
    if names and all(k is not None for k in keys):
        return [k for k in keys if k is not None]
    fallback = [_key(by_name[n], i) for i, n in enumerate(("producer_id", "seq"))]
    return [k for k in fallback if k is not None]


def pages(
    read: ArrowReader,
    table: str,
    columns: Sequence[Column],
    scope: str,
    *,
    page_rows: int,
    keys: Sequence[_Key],
) -> Iterator[pa.Table]:
    """Every row of a table within `scope`, in pages in `keys` order. Rows sharing a full
    page's last key are read with the next page (or, when they fill it, all at once), so
    none is skipped however many rows share one key."""
    select = ", ".join(select_expression(c) for c in columns if c.name != "raw")
    select += ", " + ", ".join(k.read_as for k in keys)
    query = f"SELECT {select}, t.raw AS raw FROM {table} AS t WHERE {scope}"  # noqa: S608
    key_tuple = "(" + ", ".join(f"t.{k.column}" for k in keys) + ")"
    order = "ORDER BY " + ", ".join(f"t.{k.column}" for k in keys)

    def key_at(page: pa.Table, index: int) -> tuple[Any, ...]:
        return tuple(page.column(f"__key{i}")[index].as_py() for i in range(len(keys)))

    def values(key: tuple[Any, ...]) -> str:
        return "(" + ", ".join(k.literal(v) for k, v in zip(keys, key, strict=True)) + ")"

    after = "1"
    while True:
        page = read(f"{query} AND {after} {order} LIMIT {int(page_rows)}")
        if page.num_rows < page_rows:
            if page.num_rows:
                yield page
            return
        top = key_at(page, page.num_rows - 1)
        if key_at(page, 0) == top:
            yield read(f"{query} AND {key_tuple} = {values(top)}")
            last = top
        else:
            keep = page.num_rows - 1
            while key_at(page, keep - 1) == top:
                keep -= 1
            yield page.slice(0, keep)
            last = key_at(page, keep - 1)
        after = f"{key_tuple} > {values(last)}"


class _Checkers:
    """Where pages are checked: here, or (with jobs > 1, once a table fills a page) in
    worker processes, at most two pages each in flight so memory stays bounded."""

    def __init__(self, jobs: int, report: ColumnReport) -> None:
        self.jobs = jobs
        self.report = report
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[Future[list[Finding]]] = deque()

    def check(self, table: str, columns: Sequence[Column], page: pa.Table, full: bool) -> None:
        self.report.rows += page.num_rows
        if self.jobs <= 1 or not (full or self._pool is not None):
            self.report.findings.extend(check_page(table, columns, page))
            return
        if self._pool is None:
            # forkserver: the workers do not inherit this process's threads or engines.
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=context)
        self._pending.append(self._pool.submit(check_page, table, columns, page))
        while len(self._pending) > 2 * self.jobs:
            self.report.findings.extend(self._pending.popleft().result())

    def close(self) -> None:
        while self._pending:
            self.report.findings.extend(self._pending.popleft().result())
        if self._pool is not None:
            self._pool.shutdown()


def check_store(
    read: ArrowReader,
    *,
    tenant_id: str | None = None,
    tables: Iterable[str] = ALL_TABLES,
    page_rows: int = PAGE_ROWS,
    jobs: int = 1,
) -> ColumnReport:
    """Every typed column of every row of every audit table against the row's `raw`. With
    a tenant: the rows of the producers that wrote its records, and findings on its own.
    `jobs` > 1 checks pages in that many worker processes."""
    report = ColumnReport()
    checkers = _Checkers(jobs, report)
    try:
        for table in tables:
            columns = table_columns(read, table)
            if not any(c.name == "raw" for c in columns):
                continue
            scope = "1"
            if tenant_id is not None:
                scope = (
                    f"t.producer_id IN (SELECT producer_id FROM {table} "  # noqa: S608
                    f"WHERE tenant_id = {literal(tenant_id)})"
                )
            keys = sort_keys(table, columns)
            # The next page is read (by the store, or the query API's process) while this
            # one is checked: reading and decoding overlap.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="column-pages") as ahead:
                stream = pages(read, table, columns, scope, page_rows=page_rows, keys=keys)
                coming = ahead.submit(next, stream, None)
                while (page := coming.result()) is not None:
                    coming = ahead.submit(next, stream, None)
                    checkers.check(table, columns, page, page.num_rows >= page_rows // 2)
    finally:
        checkers.close()
    if tenant_id is not None:
        report.findings = [f for f in report.findings if f.tenant_id in (tenant_id, "")]
    return report
