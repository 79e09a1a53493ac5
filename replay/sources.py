"""Where replay reads history: ClickHouse (all of it) or Kafka (what the topics retain).

ClickHouse is read through an `ArrowReader`: a function from a read-only SQL query to an
Arrow table. `store_reader` asks a `Store` the process owns (the bench, tests, a stopped
stack's chDB); `http_reader` asks the running sink's query API, since chDB has one owner.
Only the columns a fold needs are read, in big pages of Arrow (binary, columnar): the
settlements are never decoded from `raw`, their entries are built from the columns. The
admin log, budgets, escalations and alerts are few and are decoded from `raw`, the bytes
that crossed the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

import httpx
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import ipc

from schemas import authn, codec
from schemas.records import Attempt, Event
from sinks.store import Store

ArrowReader = Callable[[str], pa.Table]
PAGE_ROWS = 500_000
HTTP_TIMEOUT_S = 300.0


def _table(data: bytes) -> pa.Table:
    if not data:
        return pa.table({})
    return ipc.open_stream(data).read_all()


def store_reader(store: Store) -> ArrowReader:
    """Read from a store this process owns."""

    def read(sql: str) -> pa.Table:
        return _table(store.read_only(sql, "ArrowStream", {}))

    return read


def http_reader(query_url: str, token: str, timeout_s: float = HTTP_TIMEOUT_S) -> ArrowReader:
    """Read through the sink's query API (the owner of the store) with the admin token."""
    client = httpx.Client(
        base_url=query_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s
    )

    def read(sql: str) -> pa.Table:
        try:
            response = client.post("/", params={"default_format": "ArrowStream"}, content=sql)
        except httpx.HTTPError as exc:
            raise ConnectionError(f"cannot reach the query API at {query_url}: {exc}") from exc
        if response.status_code >= 400:
            raise RuntimeError(f"query failed ({response.status_code}): {response.text[:500]}")
        return _table(response.content)

    return read


# --- SQL pieces -------------------------------------------------------------------------


def literal(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def until(at_ms: int, tenant_id: str | None) -> str:
    """The filter of history as it stood at `at_ms` (of one tenant, if given)."""
    where = f"occurred_at <= fromUnixTimestamp64Milli(toInt64({int(at_ms)}), 'UTC')"
    return where if tenant_id is None else f"{where} AND tenant_id = {literal(tenant_id)}"


def texts(column: pa.ChunkedArray) -> list[str]:
    """A String column as Python strings (servers may send Arrow binary or string)."""
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        column = column.cast(pa.string())
    return column.to_pylist()  # type: ignore[no-any-return]


def blobs(column: pa.ChunkedArray) -> list[bytes]:
    """A String column as bytes (the `raw` wire bytes are not text)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = column.cast(pa.binary())
    return column.to_pylist()  # type: ignore[no-any-return]


# --- ClickHouse history -----------------------------------------------------------------


def paged(
    read: ArrowReader, select: str, where: str, keys: Sequence[str], page_rows: int
) -> Iterator[pa.Table]:
    """`SELECT {select} … WHERE {where} ORDER BY {keys}` in pages of at most `page_rows`
    (keyset pagination: the query API caps the rows of one answer). `select` must name
    the key columns; string keys must be text."""
    order = ", ".join(keys)
    after = ""
    while True:
        result = read(
            f"SELECT {select} WHERE ({where}){after} ORDER BY {order} LIMIT {int(page_rows)}"
        )
        if result.num_rows == 0:
            return
        yield result
        if result.num_rows < page_rows:
            return
        last = [result.column(k)[result.num_rows - 1].as_py() for k in keys]
        values = ", ".join(
            literal(_text(v)) if isinstance(v, str | bytes) else str(int(v)) for v in last
        )
        after = f" AND ({order}) > ({values})"


def decoded(read: ArrowReader, table: str, where: str, page_rows: int = PAGE_ROWS) -> list[Event]:
    """The records of a table matching `where`, decoded from their wire bytes, in
    (producer_id, seq) order."""
    events: list[Event] = []
    for page in paged(read, f"producer_id, seq, raw FROM {table}", where,
                      ("producer_id", "seq"), page_rows):  # fmt: skip
        events.extend(codec.decode(raw) for raw in blobs(page.column("raw")))
    return events


def types_in(types: Sequence[str]) -> str:
    """`event_type IN (…)`."""
    return "event_type IN (" + ", ".join(literal(t) for t in types) + ")"


SETTLED = "cost_nanousd > 0 AND wallet_id != ''"


def count_settlements(read: ArrowReader, at_ms: int, tenant_id: str | None) -> int:
    """How many settlements a replay to `at_ms` folds (for the progress bar)."""
    result = read(f"SELECT count() AS n FROM lineage WHERE {SETTLED} AND {until(at_ms, tenant_id)}")  # noqa: S608
    return int(result.column("n")[0].as_py()) if result.num_rows else 0


class SettlementPage:
    """One page of settlements as columns, sorted by (wallet_id, producer_id, seq), with
    each wallet's run: `wallet_ids[i]` owns rows `run_ends[i-1]:run_ends[i]`."""

    __slots__ = ("amounts", "event_ids", "occurred_at", "producer_ids", "rows", "run_ends",
                 "seqs", "wallet_ids")  # fmt: skip

    def __init__(self, table: pa.Table) -> None:
        wallet_column = table.column("wallet_id")
        if pa.types.is_binary(wallet_column.type):
            wallet_column = wallet_column.cast(pa.string())
        runs = pc.run_end_encode(wallet_column.combine_chunks())
        self.wallet_ids: list[str] = runs.values.to_pylist()
        self.run_ends: list[int] = runs.run_ends.to_pylist()
        self.amounts: list[int] = table.column("amount").to_pylist()
        self.event_ids = texts(table.column("event_id"))
        self.producer_ids = texts(table.column("producer_id"))
        self.seqs: list[int] = table.column("seq").to_pylist()
        self.occurred_at: list[int] = table.column("at").to_pylist()
        self.rows = table.num_rows


def settlement_pages(
    read: ArrowReader, at_ms: int, tenant_id: str | None, page_rows: int = PAGE_ROWS
) -> Iterator[SettlementPage]:
    """Every settlement at or before `at_ms`, in pages of columns sorted by (wallet_id,
    producer_id, seq): just what a wallet entry needs, never `raw`."""
    select = (
        "wallet_id, producer_id, seq, toString(event_id) AS event_id, -cost_nanousd AS amount, "
        "toUnixTimestamp64Milli(occurred_at) AS at FROM lineage"
    )
    where = f"{SETTLED} AND {until(at_ms, tenant_id)}"
    for page in paged(read, select, where, ("wallet_id", "producer_id", "seq"), page_rows):
        yield SettlementPage(page)


# One text per record naming its attempts (provider, model, status, error class; fields
# split by \x1f, attempts by \x1e): records share a handful of shapes, so each shape's
# attempts are built once and shared (they are frozen values).
ATTEMPTS_SHAPE = (
    "arrayStringConcat(arrayMap(a -> concat(a.provider, '\\x1f', a.model, '\\x1f', "
    "toString(a.status), '\\x1f', ifNull(a.error_class, '\\x00')), attempts), '\\x1e')"
)


def attempts_of_shape(shape: str) -> tuple[Attempt, ...]:
    """The attempts an `ATTEMPTS_SHAPE` text names (latency is not kept: no fold reads it)."""
    attempts = []
    for part in shape.split("\x1e"):
        provider, model, status, error = part.split("\x1f")
        attempts.append(
            Attempt(provider, model, int(status), 0.0, None if error == "\x00" else error)
        )
    return tuple(attempts)


def calls(
    read: ArrowReader, at_ms: int, tenant_id: str | None, page_rows: int = PAGE_ROWS
) -> Iterator[tuple[str, int, int, str, tuple[Attempt, ...]]]:
    """(producer_id, seq, occurred_at, tenant_id, attempts) of every lineage record with
    attempts, at or before `at_ms`, in (producer_id, seq) order: what the breakers fold."""
    select = (
        "producer_id, seq, toUnixTimestamp64Milli(occurred_at) AS at, tenant_id, "
        f"{ATTEMPTS_SHAPE} AS shape FROM lineage"
    )
    where = f"notEmpty(attempts) AND {until(at_ms, tenant_id)}"
    shapes: dict[str, tuple[Attempt, ...]] = {}
    for result in paged(read, select, where, ("producer_id", "seq"), page_rows):
        columns = (
            texts(result.column("producer_id")),
            result.column("seq").to_pylist(),
            result.column("at").to_pylist(),
            texts(result.column("tenant_id")),
            texts(result.column("shape")),
        )
        for producer, seq, at, tenant, shape in zip(*columns, strict=True):
            attempts = shapes.get(shape)
            if attempts is None:
                attempts = shapes[shape] = attempts_of_shape(shape)
            yield producer, seq, at, tenant, attempts


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- Kafka history ----------------------------------------------------------------------


async def read_topics(bootstrap: str, topics: Sequence[str], at_ms: int) -> list[Event]:
    """Every record of the topics from the beginning to their current end that decodes and
    occurred at or before `at_ms`, in partition order (Kafka keeps what its retention
    keeps: recent history only on a broker that compacts or expires)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from schemas.aiokafka_guard import skip_batches_with_undecodable_headers
    from schemas.kafka_security import client_options

    skip_batches_with_undecodable_headers()  # one hostile record must not stop a replay
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        client_id="govledger-replay",
        **client_options(),
    )
    await consumer.start()
    events: list[Event] = []
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return events
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        pending = {tp for tp, end in ends.items() if end > 0}
        while pending:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        break
                    try:
                        # Only what registered producers wrote: a forged record is
                        # skipped here as every consumer refuses it.
                        event = authn.decode_message(message)
                    except codec.DecodeError:
                        continue
                    if event.occurred_at <= at_ms:
                        events.append(event)
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return events


def read_kafka(bootstrap: str, topics: Sequence[str], at_ms: int) -> list[Event]:
    """`read_topics`, from synchronous code."""
    return asyncio.run(read_topics(bootstrap, topics, at_ms))


def parse_moment(text: str, now_ms: int) -> int:
    """Epoch ms from `now`, epoch ms digits, or ISO 8601 (no zone means UTC)."""
    text = text.strip()
    if text == "now":
        return now_ms
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not a moment: {text!r} (ISO 8601, epoch ms or 'now')") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
