"""Exports: a tenant's (or the org's) events, escalations or wallet history over a window,
written to a file in CSV, JSON Lines or Parquet with a manifest (rows, time range, SHA-256
of the file, the hash-chain heads it covers), as background jobs of the sink.

Memory stays bounded however large the export: the store is read in pages of at most
`PAGE_ROWS` rows (keyset pagination on the table's sort key, one `store.run` call per
page so the sink's inserts interleave on the store thread), each page is written to disk
and dropped before the next is asked for, and the SHA-256 is computed as bytes go out.
What is kept across pages is O(producers): the chain head of each producer seen.

A job is a directory `<root>/<export_id>/` holding `job.json` (its state), the file and
`manifest.json`; jobs are reloaded when the sink starts, so finished exports survive a
restart (a job that was running is marked failed, one still queued runs again)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import structlog
from pyarrow import ipc

from schemas.ids import now_ms, uuid7
from sinks import sql_guard
from sinks.access import Reader
from sinks.store import Store

log = structlog.get_logger(__name__)

# Rows per page read from the store. A lineage row with its wire bytes (base64) is about
# 1-2 KB, so a page is some tens of MB in Arrow; the cap keeps a misconfigured page size
# from turning one read into a giant query on the shared store thread.
PAGE_ROWS = 20_000
MAX_PAGE_ROWS = 50_000
# JSON Lines are built from Python objects (~10x the Arrow size): a page is converted in
# slices of this many rows so that blow-up stays small.
JSONL_SLICE_ROWS = 1_000
MAX_RUNNING = 2  # exports running at once (each holds one page; the store thread is shared)
MAX_QUEUED = 16  # waiting behind them; more is a 429
MAX_KEPT = 200  # jobs remembered (with their files); the oldest finished ones are deleted
MAX_DESCRIPTION_CHARS = 500
PAGE_TIMEOUT_S = 120  # max_execution_time of one page's query
MAX_ERROR_CHARS = 2_000

FORMATS: dict[str, tuple[str, str]] = {  # format: (file extension, content type)
    "csv": (".csv", "text/csv; charset=utf-8"),
    "jsonl": (".jsonl", "application/x-ndjson"),
    "parquet": (".parquet", "application/vnd.apache.parquet"),
}
Status = Literal["queued", "running", "succeeded", "failed"]
FINISHED: tuple[Status, ...] = ("succeeded", "failed")
JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


# --- what an export reads -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    """One column of the keyset: the table column (`expr`), its name in a page, and how
    its last value is passed back as a query parameter."""

    expr: str
    column: str
    kind: Literal["str", "ms", "int", "uuid"]


@dataclass(frozen=True, slots=True)
class ExportType:
    """An export type: the table counted, what a page selects and from where, and the keyset
    (the table's sort key, so each page is a range read of the primary index)."""

    name: str
    table: str
    source: str
    columns: tuple[str, ...]
    keys: tuple[Key, ...]
    time_column: str = "occurred_at"

    @property
    def column_names(self) -> list[str]:
        """The exported columns' names, in order."""
        return [c.rsplit(" AS ", 1)[-1] for c in self.columns]


# Every row carries the envelope (event_id … record_hash) and the record's wire bytes
# (`raw_base64`): with them a recipient can re-verify the hash chains without us.
ENVELOPE = (
    "toString(t.event_id) AS event_id",
    "t.event_type AS event_type",
    "t.occurred_at AS occurred_at",
    "t.tenant_id AS tenant_id",
    "t.producer_id AS producer_id",
    "t.seq AS seq",
    "t.prev_hash AS prev_hash",
    "t.record_hash AS record_hash",
)
RAW = "base64Encode(t.raw) AS raw_base64"
TIME_KEYS = (
    Key("t.tenant_id", "tenant_id", "str"),
    Key("t.occurred_at", "occurred_at", "ms"),
    Key("t.event_id", "event_id", "uuid"),
)


def _fields(names: str) -> tuple[str, ...]:
    """`t.x AS x` for each space-separated name."""
    return tuple(f"t.{name} AS {name}" for name in names.split())


# The first resolution of each escalation (as the escalations report reads it), as of the
# job's snapshot; resolutions are one per escalation, so this stays small next to a page.
RESOLUTIONS = (
    "SELECT escalation_id, argMin(decision, occurred_at) AS decision, "
    "argMin(resolved_by, occurred_at) AS resolved_by, min(occurred_at) AS resolved_at "
    "FROM control_events WHERE event_type = 'escalation.resolved' "
    "AND ({all:Bool} OR tenant_id = {tenant:String}) "
    "AND ingested_at <= fromUnixTimestamp64Milli({as_of_ms:Int64}, 'UTC') "
    "GROUP BY escalation_id"
)

EXPORT_TYPES: dict[str, ExportType] = {
    "events": ExportType(
        name="events",
        table="lineage",
        source="lineage AS t",
        columns=(
            *ENVELOPE,
            *_fields(
                "trace_id span_id parent_span_id team_id user_id key_id wallet_id region "
                "model_requested model_selected provider selection_reason attempts "
                "policies_applied guardrails_triggered decision prompt_tokens completion_tokens "
                "usage_source cost_nanousd reserved_nanousd latency_ms ttft_ms "
                "gateway_overhead_ms http_status error_code stream request_sha256 "
                "response_sha256"
            ),
            RAW,
        ),
        keys=TIME_KEYS,
    ),
    "escalations": ExportType(
        name="escalations",
        table="escalation_events",
        source=f"escalation_events AS t LEFT JOIN ({RESOLUTIONS}) AS r "
        "ON r.escalation_id = t.escalation_id",
        columns=(
            *ENVELOPE,
            *_fields(
                "escalation_id trace_id team_id key_id policy_pack category priority mode "
                "reason model_requested request_sha256"
            ),
            "if(r.decision = '', 'open', 'resolved') AS status",
            "nullIf(r.decision, '') AS decision",
            "nullIf(r.resolved_by, '') AS resolved_by",
            "if(r.decision = '', NULL, r.resolved_at) AS resolved_at",
            RAW,
        ),
        keys=TIME_KEYS,
    ),
    "wallets": ExportType(
        name="wallets",
        table="wallet_state",
        source="wallet_state AS t",
        columns=(
            *ENVELOPE,
            *_fields(
                "wallet_id team_id balance_nanousd funded_nanousd spent_nanousd entry_count "
                "last_event_id last_occurred_at period_start_at period_spent_nanousd "
                "allocated_in_nanousd allocated_out_nanousd refunded_nanousd corrected_nanousd "
                "overdraft_limit_nanousd rejected_count last_decided_event_id last_decision "
                "revision"
            ),
            RAW,
        ),
        keys=(
            Key("t.tenant_id", "tenant_id", "str"),
            Key("t.wallet_id", "wallet_id", "str"),
            Key("t.entry_count", "entry_count", "int"),
            Key("t.event_id", "event_id", "uuid"),
        ),
    ),
}

SCOPE = (
    "({all:Bool} OR t.tenant_id = {tenant:String}) "
    "AND t.occurred_at >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC') "
    "AND t.occurred_at < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')"
)


def count_sql(spec: ExportType) -> str:
    """Rows in the window and the store's clock now (the job's snapshot: rows ingested
    later are left out of every page, so the count is what the pages will hold)."""
    return (
        f"SELECT count(), toUnixTimestamp64Milli(now64(3)) FROM {spec.table} AS t "  # noqa: S608 - fixed text
        f"WHERE {SCOPE} AND t.ingested_at <= now64(3)"
    )


def _key_param(key: Key, index: int) -> str:
    name = f"k{index}"
    return {
        "str": f"{{{name}:String}}",
        "ms": f"fromUnixTimestamp64Milli({{{name}:Int64}}, 'UTC')",
        "int": f"{{{name}:Int64}}",
        "uuid": f"toUUID({{{name}:String}})",
    }[key.kind]


def page_sql(spec: ExportType, rows: int, *, after: bool) -> str:
    """One page: rows of the window after the last key (parameters `k0…`), in key order.
    `LIMIT 1 BY` the key drops a record stored twice (same event id) within a page, as the
    strict `>` does across pages."""
    assert 0 < rows <= MAX_PAGE_ROWS, rows
    keys = ", ".join(k.expr for k in spec.keys)
    where = f"{SCOPE} AND t.ingested_at <= fromUnixTimestamp64Milli({{as_of_ms:Int64}}, 'UTC')"
    if after:
        values = ", ".join(_key_param(k, i) for i, k in enumerate(spec.keys))
        where += f" AND ({keys}) > ({values})"
    return (
        f"SELECT {', '.join(spec.columns)} FROM {spec.source} WHERE {where} "  # noqa: S608 - fixed text
        f"ORDER BY {keys} LIMIT 1 BY {keys} LIMIT {int(rows)}"
    )


def _ms_values(column: pa.ChunkedArray | pa.Array) -> pa.Array | pa.ChunkedArray:
    """A timestamp column as epoch milliseconds (int64)."""
    return column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())


def last_key(page: pa.Table, spec: ExportType) -> dict[str, Any]:
    """The parameters `k0…` of the next page: the last row's key."""
    assert page.num_rows > 0
    at = page.num_rows - 1
    found: dict[str, Any] = {}
    for index, key in enumerate(spec.keys):
        column = page.column(key.column)
        if key.kind == "ms":
            found[f"k{index}"] = int(_ms_values(column.slice(at, 1))[0].as_py())
        elif key.kind == "int":
            found[f"k{index}"] = int(column[at].as_py())
        else:
            found[f"k{index}"] = str(column[at].as_py())
    return found


# --- writing pages ------------------------------------------------------------------------


class HashingSink:
    """A write-only file object that hashes what goes through it (pyarrow's writers and
    ours write to it): the SHA-256 of the file is known the moment it is closed."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._sha256 = hashlib.sha256()
        self.bytes_written = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write and hash."""
        self._sha256.update(data)
        self._raw.write(data)
        self.bytes_written += len(data)
        return len(data)

    def tell(self) -> int:
        """Bytes written so far (pyarrow asks)."""
        return self.bytes_written

    def writable(self) -> bool:
        """Always."""
        return True

    def flush(self) -> None:
        """Flush the file."""
        self._raw.flush()

    def close(self) -> None:
        """pyarrow closes the sinks it wraps; the file is closed by its owner."""
        self.closed = True

    def hexdigest(self) -> str:
        """SHA-256 of everything written."""
        return self._sha256.hexdigest()


def textual(page: pa.Table, *, nested_as_json: bool) -> pa.Table:
    """A page for text formats: timestamps as ISO 8601 UTC with milliseconds, and (for
    CSV) lists and tuples as JSON text. Integers stay integers: money is nano-USD."""
    columns = []
    for column in page.columns:
        kind = column.type
        if pa.types.is_timestamp(kind):
            ms = column.cast(pa.timestamp("ms", tz="UTC"))
            columns.append(pc.strftime(ms, format="%Y-%m-%dT%H:%M:%SZ"))
        elif nested_as_json and (
            pa.types.is_list(kind) or pa.types.is_struct(kind) or pa.types.is_map(kind)
        ):
            values = column.to_pylist()
            json = [None if v is None else orjson.dumps(v).decode() for v in values]
            columns.append(pa.array(json, pa.string()))
        else:
            columns.append(column)
    return pa.table(columns, names=page.column_names)


class PageWriter(Protocol):
    """Writes pages of one export to a sink as they come."""

    def write(self, page: pa.Table) -> None:
        """Write one page (may be empty; the first page carries the schema)."""

    def close(self) -> None:
        """End the file (a footer, for Parquet)."""


class CsvPages:
    """CSV with a header; nested values as JSON text."""

    def __init__(self, sink: HashingSink) -> None:
        self._sink = sink
        self._writer: pa_csv.CSVWriter | None = None

    def write(self, page: pa.Table) -> None:
        """Write one page (the first one writes the header)."""
        text = textual(page, nested_as_json=True)
        if self._writer is None:
            self._writer = pa_csv.CSVWriter(self._sink, text.schema)
        self._writer.write_table(text)

    def close(self) -> None:
        """Flush the writer."""
        if self._writer is not None:
            self._writer.close()


class JsonlPages:
    """One JSON object per line."""

    def __init__(self, sink: HashingSink) -> None:
        self._sink = sink

    def write(self, page: pa.Table) -> None:
        """Write one page, a slice at a time."""
        text = textual(page, nested_as_json=False)
        for offset in range(0, text.num_rows, JSONL_SLICE_ROWS):
            rows = text.slice(offset, JSONL_SLICE_ROWS).to_pylist()
            self._sink.write(
                b"".join(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE) for row in rows)
            )

    def close(self) -> None:
        """Nothing to end."""


class ParquetPages:
    """Parquet (zstd), one row group per page; types as the store gives them (timestamps
    in UTC milliseconds, lists and structs nested)."""

    def __init__(self, sink: HashingSink) -> None:
        self._sink = sink
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, page: pa.Table) -> None:
        """Write one page as a row group."""
        if self._writer is None:
            self._schema = page.schema
            self._writer = pq.ParquetWriter(self._sink, page.schema, compression="zstd")
        if page.num_rows == 0:
            return
        if page.schema != self._schema:
            page = page.cast(self._schema)
        self._writer.write_table(page, row_group_size=page.num_rows)

    def close(self) -> None:
        """Write the footer."""
        if self._writer is not None:
            self._writer.close()


def page_writer(fmt: str, sink: HashingSink) -> PageWriter:
    """The writer of a format."""
    writers: dict[str, type[CsvPages | JsonlPages | ParquetPages]] = {
        "csv": CsvPages,
        "jsonl": JsonlPages,
        "parquet": ParquetPages,
    }
    return writers[fmt](sink)


@dataclass(frozen=True, slots=True)
class FileSummary:
    """What was written: bytes and SHA-256."""

    bytes: int
    sha256: str


class ExportFile:
    """An export file being written page by page."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self._file = path.open("wb")
        self._sink = HashingSink(self._file)
        self._pages = page_writer(fmt, self._sink)

    def write(self, page: pa.Table) -> None:
        """Append a page."""
        self._pages.write(page)

    def finish(self) -> FileSummary:
        """End the file, make it durable, and say what it holds."""
        self._pages.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return FileSummary(self._sink.bytes_written, self._sink.hexdigest())

    def abort(self) -> None:
        """Close and delete a file that will not be finished."""
        self._file.close()
        self.path.unlink(missing_ok=True)


# --- the manifest -------------------------------------------------------------------------


@dataclass(slots=True)
class ChainHead:
    """One producer's records in an export: first and last seq, and the last record's hash
    (the head of the chain as far as the export covers it)."""

    producer_id: str
    first_seq: int
    last_seq: int
    record_hash: str
    rows: int


@dataclass(slots=True)
class Tally:
    """What the manifest says about the rows, accumulated page by page."""

    time_column: str
    rows: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    heads: dict[str, ChainHead] = field(default_factory=dict)

    def add(self, page: pa.Table) -> None:
        """Count a page's rows, widen the time range, advance the chain heads."""
        if page.num_rows == 0:
            return
        self.rows += page.num_rows
        bounds = pc.min_max(_ms_values(page.column(self.time_column)))
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        self.first_ms = low if self.first_ms is None else min(self.first_ms, low)
        self.last_ms = high if self.last_ms is None else max(self.last_ms, high)
        producers = page.column("producer_id").to_pylist()
        seqs = page.column("seq").to_pylist()
        hashes = page.column("record_hash").to_pylist()
        for producer, seq, record_hash in zip(producers, seqs, hashes, strict=True):
            head = self.heads.get(producer)
            if head is None:
                self.heads[producer] = ChainHead(producer, seq, seq, record_hash, 1)
                continue
            head.rows += 1
            head.first_seq = min(head.first_seq, seq)
            if seq > head.last_seq:
                head.last_seq, head.record_hash = seq, record_hash

    def chain_heads(self) -> list[dict[str, Any]]:
        """The heads, by producer id."""
        return [asdict(self.heads[p]) for p in sorted(self.heads)]


def write_pages(pages: Iterable[pa.Table], fmt: str, path: Path, time_column: str) -> tuple[
    FileSummary, Tally
]:  # fmt: skip
    """Write pages to `path` as they come, one at a time (nothing keeps a page once it is
    written); the first page carries the schema even when empty."""
    out = ExportFile(path, fmt)
    tally = Tally(time_column)
    try:
        for page in pages:
            out.write(page)
            tally.add(page)
        return out.finish(), tally
    except BaseException:
        out.abort()
        raise


# --- jobs ---------------------------------------------------------------------------------


class ExportQueueFullError(Exception):
    """Too many exports are waiting."""


@dataclass(slots=True)
class ExportJob:
    """One export: what was asked, by whom, and how far it got."""

    id: str
    type: str
    format: str
    since: str
    since_ms: int
    until_ms: int
    tenant: str | None
    description: str
    created_by: str
    created_at_ms: int
    status: Status = "queued"
    rows_done: int = 0
    rows_total: int | None = None
    as_of_ms: int | None = None
    error: str | None = None
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    manifest: dict[str, Any] | None = None

    @property
    def file_name(self) -> str:
        """The export file's name in the job's directory."""
        return "export" + FORMATS[self.format][0]

    def record(self) -> dict[str, Any]:
        """The job as kept in job.json (the manifest is its own file)."""
        kept = asdict(self)
        kept.pop("manifest")
        return kept

    def public(self, *, with_manifest: bool) -> dict[str, Any]:
        """The job as the API shows it."""
        shown = self.record()
        if with_manifest:
            shown["manifest"] = self.manifest
        if self.status == "succeeded":
            shown["download_url"] = f"/v1/exports/{self.id}/download"
            shown["manifest_url"] = f"/v1/exports/{self.id}/manifest"
        return shown


def build_manifest(
    job: ExportJob, spec: ExportType, summary: FileSummary, tally: Tally
) -> dict[str, Any]:
    """The manifest of a finished export."""
    return {
        "export_id": job.id,
        "type": job.type,
        "table": spec.table,
        "format": job.format,
        "tenant": job.tenant,
        "description": job.description,
        "created_by": job.created_by,
        "created_at_ms": job.created_at_ms,
        "since": job.since,
        "window": {"from_ms": job.since_ms, "to_ms": job.until_ms},
        "as_of_ms": job.as_of_ms,
        "rows": tally.rows,
        "time_range": {"first_ms": tally.first_ms, "last_ms": tally.last_ms},
        "columns": spec.column_names,
        "file": {"name": job.file_name, "bytes": summary.bytes, "sha256": summary.sha256},
        "chain_heads": tally.chain_heads(),
    }


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a reader (or a restart) never sees half a file."""
    partial = path.with_suffix(".json.partial")
    partial.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    os.replace(partial, path)


def _write_page(out: ExportFile, tally: Tally, data: bytes, spec: ExportType) -> tuple[int, Any]:
    """Decode one page of Arrow, write it, count it; the page is dropped on return."""
    page = ipc.open_stream(data).read_all() if data else pa.table({})
    if page.num_columns == 0:
        # A store that sends nothing for an empty result: an empty page of text columns.
        page = pa.table({name: pa.array([], pa.string()) for name in spec.column_names})
    out.write(page)
    tally.add(page)
    return page.num_rows, (last_key(page, spec) if page.num_rows else None)


class ExportJobs:
    """Export jobs of the sink: at most `max_running` at once, `max_queued` waiting,
    `max_kept` remembered; state on disk under `root`."""

    def __init__(
        self,
        store: Store,
        root: Path,
        *,
        page_rows: int = PAGE_ROWS,
        max_running: int = MAX_RUNNING,
        max_queued: int = MAX_QUEUED,
        max_kept: int = MAX_KEPT,
    ) -> None:
        assert 0 < page_rows <= MAX_PAGE_ROWS, page_rows
        assert max_kept > max_running + max_queued, "every live job must fit the memory"
        self.store = store
        self.root = root
        self.page_rows = page_rows
        self.max_running = max_running
        self.max_kept = max_kept
        self._jobs: dict[str, ExportJob] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=max_queued)
        self._workers: list[asyncio.Task[None]] = []
        self._tenant_tables: frozenset[str] | None = None

    # --- lifecycle ---

    async def start(self) -> None:
        """Reload the jobs kept on disk and start the workers."""
        loaded = await asyncio.to_thread(self._load)
        requeue = []
        for job in sorted(loaded, key=lambda j: j.created_at_ms):
            if job.id in self._jobs:
                continue  # submitted before start: already queued
            self._jobs[job.id] = job
            if job.status == "running":
                self._fail(job, "sink restarted")
                await asyncio.to_thread(self._save, job)
            elif job.status == "queued":
                requeue.append(job)
        for job in requeue:
            try:
                self._queue.put_nowait(job.id)
            except asyncio.QueueFull:
                self._fail(job, "sink restarted")
                await asyncio.to_thread(self._save, job)
        self._workers = [
            asyncio.create_task(self._work(), name=f"export-{n}") for n in range(self.max_running)
        ]

    async def stop(self) -> None:
        """Stop the workers; a running job is marked failed, queued ones run next start."""
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []

    def _load(self) -> list[ExportJob]:
        if not self.root.is_dir():
            return []
        found = []
        for directory in self.root.iterdir():
            path = directory / "job.json"
            if not JOB_ID.match(directory.name) or not path.is_file():
                continue
            try:
                job = ExportJob(**orjson.loads(path.read_bytes()))
                if job.status == "succeeded":
                    job.manifest = orjson.loads((directory / "manifest.json").read_bytes())
            except (OSError, TypeError, ValueError):
                log.warning("export job not readable; skipped", path=str(path))
                continue
            if job.status != "succeeded":
                for partial in directory.glob("*.partial"):
                    partial.unlink(missing_ok=True)
            found.append(job)
        found.sort(key=lambda j: j.created_at_ms)
        for old in found[: max(0, len(found) - self.max_kept)]:
            shutil.rmtree(self.root / old.id, ignore_errors=True)
        return found[-self.max_kept :]

    # --- the API's side ---

    def submit(
        self,
        *,
        type_name: str,
        fmt: str,
        since: str,
        since_ms: int,
        until_ms: int,
        tenant: str | None,
        description: str,
        created_by: str,
    ) -> ExportJob:
        """Queue an export (ExportQueueFullError when too many wait)."""
        assert type_name in EXPORT_TYPES and fmt in FORMATS
        assert len(description) <= MAX_DESCRIPTION_CHARS
        if self._queue.full():
            raise ExportQueueFullError(f"{self._queue.maxsize} exports are already waiting")
        job = ExportJob(
            id=uuid7(),
            type=type_name,
            format=fmt,
            since=since,
            since_ms=since_ms,
            until_ms=until_ms,
            tenant=tenant,
            description=description,
            created_by=created_by,
            created_at_ms=now_ms(),
        )
        self._save(job)
        self._jobs[job.id] = job
        self._queue.put_nowait(job.id)
        self._forget_oldest()
        return job

    def visible(self, reader: Reader) -> list[ExportJob]:
        """Jobs the reader may see, newest first: all for the org level, else the jobs
        scoped to the reader's tenant."""
        return sorted(
            (j for j in self._jobs.values() if self._may_see(reader, j)),
            key=lambda j: j.created_at_ms,
            reverse=True,
        )

    def get(self, job_id: str, reader: Reader) -> ExportJob | None:
        """A job the reader may see, else None (another tenant's job does not exist)."""
        job = self._jobs.get(job_id)
        return job if job is not None and self._may_see(reader, job) else None

    def file_path(self, job: ExportJob) -> Path:
        """Where a job's file is."""
        return self.root / job.id / job.file_name

    def manifest_path(self, job: ExportJob) -> Path:
        """Where a job's manifest is."""
        return self.root / job.id / "manifest.json"

    @staticmethod
    def _may_see(reader: Reader, job: ExportJob) -> bool:
        return reader.tenant_id is None or job.tenant == reader.tenant_id

    def _forget_oldest(self) -> None:
        """Keep at most `max_kept` jobs: delete the oldest finished ones and their files."""
        excess = len(self._jobs) - self.max_kept
        if excess <= 0:
            return
        finished = sorted(
            (j for j in self._jobs.values() if j.status in FINISHED),
            key=lambda j: j.created_at_ms,
        )
        for job in finished[:excess]:
            del self._jobs[job.id]
            shutil.rmtree(self.root / job.id, ignore_errors=True)

    # --- running ---

    def _save(self, job: ExportJob) -> None:
        directory = self.root / job.id
        directory.mkdir(parents=True, exist_ok=True)
        _write_json(directory / "job.json", job.record())

    @staticmethod
    def _fail(job: ExportJob, error: str) -> None:
        job.status = "failed"
        job.error = error[:MAX_ERROR_CHARS]
        job.finished_at_ms = now_ms()

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            job = self._jobs.get(job_id)
            if job is None or job.status != "queued":
                continue
            try:
                await self._run(job)
            except asyncio.CancelledError:
                self._fail(job, "sink stopped")
                await asyncio.to_thread(self._save, job)
                raise
            except Exception as exc:
                log.exception("export failed", export_id=job.id)
                self._fail(job, str(exc).split("\n", 1)[0] or type(exc).__name__)
                await asyncio.to_thread(self._save, job)

    async def _settings(self, tenant: str | None) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "max_execution_time": PAGE_TIMEOUT_S,
            "output_format_arrow_string_as_string": 1,
        }
        if tenant is not None:
            # Engine-side filters as well as our WHERE, as the tenant reports run.
            if self._tenant_tables is None:
                _, _, self._tenant_tables = await self.store.run(self.store.tables)
            settings["additional_table_filters"] = sql_guard.tenant_filters(
                self._tenant_tables, tenant
            )
        return settings

    async def _run(self, job: ExportJob) -> None:
        spec = EXPORT_TYPES[job.type]
        job.status, job.started_at_ms = "running", now_ms()
        await asyncio.to_thread(self._save, job)
        settings = await self._settings(job.tenant)
        parameters: dict[str, Any] = {
            "all": job.tenant is None,
            "tenant": job.tenant or "",
            "since_ms": job.since_ms,
            "until_ms": job.until_ms,
        }
        rows = await self.store.run(self.store.query_rows, count_sql(spec), parameters, settings)
        job.rows_total, job.as_of_ms = int(rows[0][0]), int(rows[0][1])
        parameters["as_of_ms"] = job.as_of_ms
        directory = self.root / job.id
        partial = directory / (job.file_name + ".partial")
        out = await asyncio.to_thread(ExportFile, partial, job.format)
        tally = Tally(spec.time_column)
        after: dict[str, Any] | None = None
        try:
            while True:
                # One page per store call: inserts queued on the store thread run between.
                data = await self.store.run(
                    self.store.read_only,
                    page_sql(spec, self.page_rows, after=after is not None),
                    "ArrowStream",
                    settings,
                    {**parameters, **(after or {})},
                )
                count, after = await asyncio.to_thread(_write_page, out, tally, data, spec)
                del data
                job.rows_done = tally.rows
                if count < self.page_rows:
                    break
            summary = await asyncio.to_thread(out.finish)
        except asyncio.CancelledError:
            raise  # the page may still be being written: the restart removes the partial file
        except BaseException:
            await asyncio.to_thread(out.abort)
            raise
        await asyncio.to_thread(os.replace, partial, self.file_path(job))
        manifest = build_manifest(job, spec, summary, tally)
        await asyncio.to_thread(_write_json, self.manifest_path(job), manifest)
        job.manifest = manifest
        job.status, job.finished_at_ms = "succeeded", now_ms()
        await asyncio.to_thread(self._save, job)
        log.info("export done", export_id=job.id, rows=tally.rows, bytes=summary.bytes)
