"""The manifest of an export: rows, time range and the hash-chain head of each producer,
tallied page by page, and the file's size and SHA-256."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sinks.exports.job import ExportJob
from sinks.exports.queries import ExportType, ms_values
from sinks.exports.writers import ExportFile, FileSummary


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
    # The producer id, seq and record hash columns.
    chain_columns: tuple[str, str, str] = ("producer_id", "seq", "record_hash")
    rows: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    heads: dict[str, ChainHead] = field(default_factory=dict)

    def add(self, page: pa.Table) -> None:
        """Count a page's rows, widen the time range, advance the chain heads."""
        if page.num_rows == 0:
            return
        self.rows += page.num_rows
        bounds = pc.min_max(ms_values(page.column(self.time_column)))
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        self.first_ms = low if self.first_ms is None else min(self.first_ms, low)
        self.last_ms = high if self.last_ms is None else max(self.last_ms, high)
        producer_column, seq_column, hash_column = self.chain_columns
        producers = page.column(producer_column).to_pylist()
        seqs = page.column(seq_column).to_pylist()
        hashes = page.column(hash_column).to_pylist()
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


def write_pages(
    pages: Iterable[pa.Table],
    fmt: str,
    path: Path,
    time_column: str,
    chain_columns: tuple[str, str, str] = ("producer_id", "seq", "record_hash"),
) -> tuple[FileSummary, Tally]:
    """Write pages to `path` as they come, one at a time (nothing keeps a page once it is
    written); the first page carries the schema even when empty."""
    out = ExportFile(path, fmt)
    tally = Tally(time_column, chain_columns)
    try:
        for page in pages:
            out.write(page)
            tally.add(page)
        return out.finish(), tally
    except BaseException:
        out.abort()
        raise


def build_manifest(
    job: ExportJob, spec: ExportType, summary: FileSummary, tally: Tally
) -> dict[str, Any]:
    """The manifest of a finished export."""
    standard: dict[str, Any] = {}
    if spec.standard is not None:
        standard = {"standard": spec.standard, "standard_metadata": spec.standard_metadata}
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
        **standard,
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a reader (or a restart) never sees half a file. Each write has a
    partial file of its own: a job's state may be saved twice at once (a stop arriving
    while the save of its success runs on a thread), and the last replace wins."""
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        partial.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
