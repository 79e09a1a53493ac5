"""Checking an export file on its own, without the store: `govledger audit verify-export`.

Every exported row carries `raw_base64`, the record's wire bytes as the store kept them,
beside the typed columns a reader uses (sinks/exports/). For each row this proves:

- its bytes are a sealed record: `record_hash` recomputes from them (else `modified`);
- every exported column that is a field of the record holds what the record says (else
  `column_mismatch`, naming the file, the event and the columns). Columns an export adds
  that no record carries (an escalation's resolution, joined from the admin log) are not
  the row's to prove.

Parquet keeps the store's types, so its rows are compared as the store's are
(`replay.columns.check_page`). CSV and JSON Lines are text: the decoded values are typed
as the store types them (from the record's Avro schema), rendered by the exporter's own
writer (`sinks.exports.writers.page_writer`), and compared with the file cell by cell as
text, so a value reads the same as its record or it is reported.

With the manifest the export came with, the file's SHA-256 and row count are checked too,
and each chain head it lists must be a row of the file with that hash.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from replay.columns import Column, check_page, expected_value
from replay.stored import StoredRow
from replay.verify import Finding, heads_of_manifest, unseal
from schemas import codec
from sinks.exports.formats import FORMATS
from sinks.exports.writers import HashingSink, page_writer

CHUNK_ROWS = 10_000
RAW_COLUMN = "raw_base64"
NOT_FROM_RAW_DEFAULT = "<export>"  # no zero default: a column no record fills is not judged
MAX_SHOWN_CHARS = 60


@dataclass(slots=True)
class ExportReport:
    """What checking an export found."""

    rows: int = 0
    findings: list[Finding] = field(default_factory=list)


def arrow_type(schema: Any) -> pa.DataType:
    """The Arrow type the store sends for a column filled from an Avro field of this type
    (ClickHouse's mapping: timestamp-millis → DateTime64(3), union with null →
    Nullable, record → Tuple, enum → String)."""
    if isinstance(schema, list):
        branches = [s for s in schema if s != "null"]
        assert len(branches) == 1, f"unions other than [null, T] are not used: {schema}"
        return arrow_type(branches[0])
    if isinstance(schema, dict):
        kind = schema["type"]
        if schema.get("logicalType") == "timestamp-millis":
            return pa.timestamp("ms", tz="UTC")
        if kind == "array":
            return pa.list_(arrow_type(schema["items"]))
        if kind == "map":
            return pa.map_(pa.string(), arrow_type(schema["values"]))
        if kind == "record":
            return pa.struct([(f["name"], arrow_type(f["type"])) for f in schema["fields"]])
        if kind == "enum":
            return pa.string()
        return arrow_type(kind)
    primitives = {
        "string": pa.string(),
        "long": pa.int64(),
        "int": pa.int32(),
        "double": pa.float64(),
        "float": pa.float32(),
        "boolean": pa.bool_(),
        "bytes": pa.binary(),
    }
    return primitives[schema]


def _field_types(entry: codec.SchemaEntry) -> dict[str, pa.DataType]:
    return {f["name"]: arrow_type(f["type"]) for f in entry.source["fields"]}


@dataclass(frozen=True, slots=True)
class _Decoded:
    raw: bytes
    record: dict[str, Any] | None
    types: dict[str, pa.DataType]
    error: str = ""


def _decode(cell: Any, cache: dict[bytes, dict[str, pa.DataType]]) -> _Decoded:
    try:
        raw = base64.b64decode(cell or "", validate=True)
        entry, record = codec.decode_fields(raw)
    except (binascii.Error, codec.DecodeError) as exc:
        return _Decoded(b"", None, {}, str(exc) or type(exc).__name__)
    types = cache.get(entry.fingerprint)
    if types is None:
        types = cache[entry.fingerprint] = _field_types(entry)
    return _Decoded(raw, record, types)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 1] + "…"


def _sealed_findings(source: str, rows: list[_Decoded]) -> list[Finding]:
    """`modified` for rows whose bytes are not a record sealed as it says."""
    findings = []
    for row in rows:
        if row.record is None:
            continue
        sealed = unseal(StoredRow(source, "", 0, row.raw))
        if not sealed.valid:
            findings.append(
                Finding(
                    "modified",
                    sealed.producer_id,
                    sealed.seq,
                    sealed.occurred_at,
                    "record_hash does not match the exported bytes",
                    tenant_id=sealed.tenant_id,
                    table=source,
                    event_id=sealed.event_id,
                )
            )
    return findings


# --- Parquet ------------------------------------------------------------------------------


def _parquet_chunks(path: Path) -> Iterator[pa.Table]:
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=CHUNK_ROWS):
        yield pa.Table.from_batches([batch])


def check_parquet_chunk(source: str, chunk: pa.Table) -> list[Finding]:
    """A Parquet chunk: its rows compared as the store's are."""
    cache: dict[bytes, dict[str, pa.DataType]] = {}
    decoded = [_decode(cell, cache) for cell in chunk.column(RAW_COLUMN).to_pylist()]
    raws = pa.array([row.raw for row in decoded], type=pa.binary())
    page = chunk.drop_columns([RAW_COLUMN]).append_column("raw", raws)
    columns = [
        Column(name, "UUID" if name == "event_id" else "export", NOT_FROM_RAW_DEFAULT)
        for name in page.column_names
    ]
    findings = check_page(source, columns, page, judged_elsewhere=frozenset())
    return findings + _sealed_findings(source, decoded)


# --- CSV and JSON Lines -------------------------------------------------------------------


def _text_rows(data: bytes, fmt: str) -> list[dict[str, Any]]:
    """The rows of CSV or JSON Lines text, as a reader parses them."""
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(data.decode())))
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def _text_chunks(path: Path, fmt: str) -> Iterator[list[dict[str, Any]]]:
    with path.open("rb") as file:
        if fmt == "csv":
            reader = csv.DictReader(io.TextIOWrapper(file, encoding="utf-8", newline=""))
            chunk: list[dict[str, Any]] = []
            for row in reader:
                chunk.append(row)
                if len(chunk) == CHUNK_ROWS:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
            return
        lines: list[bytes] = []
        for line in file:
            if line.strip():
                lines.append(line)
            if len(lines) == CHUNK_ROWS:
                yield _text_rows(b"".join(lines), fmt)
                lines = []
        if lines:
            yield _text_rows(b"".join(lines), fmt)


def _rendered(fmt: str, names: list[str], rows: list[_Decoded]) -> list[dict[str, Any]]:
    """What the exporter writes for rows holding what their records say."""
    arrays = []
    for name in names:
        kind = next((row.types[name] for row in rows if name in row.types), pa.null())
        values = [
            expected_value(Column(name, "UUID" if name == "event_id" else ""), row.record[name])
            if row.record is not None and name in row.record
            else None
            for row in rows
        ]
        arrays.append(pa.array(values, type=kind))
    buffer = io.BytesIO()
    writer = page_writer(fmt, HashingSink(buffer))
    writer.write(pa.table(arrays, names=names))
    writer.close()
    return _text_rows(buffer.getvalue(), fmt)


def check_text_chunk(source: str, fmt: str, chunk: list[dict[str, Any]]) -> list[Finding]:
    """CSV or JSON Lines rows: each field's cell as the exporter renders the record's value."""
    if not chunk:
        return []
    cache: dict[bytes, dict[str, pa.DataType]] = {}
    decoded = [_decode(row.get(RAW_COLUMN), cache) for row in chunk]
    names = [name for name in chunk[0] if name != RAW_COLUMN]
    rendered = _rendered(fmt, names, decoded)
    findings = []
    for row, wanted, cells in zip(decoded, rendered, chunk, strict=True):
        if row.record is None:
            detail = f"raw_base64 does not decode ({row.error}): its columns cannot be checked"
            findings.append(Finding("column_mismatch", "", 0, None, detail, table=source))
            continue
        differing = [
            f"{name}: exported {_shown(cells.get(name))}, raw {_shown(wanted.get(name))}"
            for name in names
            if name in row.record and cells.get(name) != wanted.get(name)
        ]
        if differing:
            findings.append(_mismatch(source, row.record, differing))
    return findings + _sealed_findings(source, decoded)


def _mismatch(source: str, record: Mapping[str, Any], differing: list[str]) -> Finding:
    names = [shown.split(":", 1)[0] for shown in differing]
    plural = len(names) > 1
    return Finding(
        "column_mismatch",
        str(record["producer_id"]),
        int(record["seq"]),
        int(record["occurred_at"]),
        f"column{'s' if plural else ''} {', '.join(names)} differ{'' if plural else 's'} "
        f"from raw ({'; '.join(differing)})",
        tenant_id=str(record["tenant_id"]),
        table=source,
        event_id=str(record["event_id"]),
    )


# --- the file -----------------------------------------------------------------------------


def format_of(path: Path) -> str:
    """The export format a file name says (as the exporter names its files)."""
    for fmt, (extension, _) in FORMATS.items():
        if path.name.endswith(extension):
            return fmt
    raise ValueError(f"{path}: not an export file (.csv, .jsonl or .parquet)")


def check_export(path: Path, manifest: Mapping[str, Any] | None = None) -> ExportReport:
    """Every row of an export file against its raw bytes; with its manifest, the file's
    SHA-256, row count and chain heads too. ValueError when the file is not an export."""
    fmt = format_of(path)
    report = ExportReport()
    source = path.name
    hashes: set[tuple[str, int, str]] = set()
    chunks: Iterator[Any] = _parquet_chunks(path) if fmt == "parquet" else _text_chunks(path, fmt)
    for chunk in chunks:
        rows = chunk.num_rows if isinstance(chunk, pa.Table) else len(chunk)
        if isinstance(chunk, pa.Table):
            if RAW_COLUMN not in chunk.column_names:
                raise ValueError(f"{path}: no {RAW_COLUMN} column: not an export of records")
            report.findings.extend(check_parquet_chunk(source, chunk))
            columns = chunk.select(["producer_id", "seq", "record_hash"]).to_pylist()
        else:
            if rows and RAW_COLUMN not in chunk[0]:
                raise ValueError(f"{path}: no {RAW_COLUMN} column: not an export of records")
            report.findings.extend(check_text_chunk(source, fmt, chunk))
            columns = chunk
        hashes.update((str(r["producer_id"]), int(r["seq"]), str(r["record_hash"]))
                      for r in columns)  # fmt: skip
        report.rows += rows
    if manifest is not None:
        report.findings.extend(_against_manifest(path, manifest, report.rows, hashes))
    return report


def _against_manifest(
    path: Path, manifest: Mapping[str, Any], rows: int, hashes: set[tuple[str, int, str]]
) -> list[Finding]:
    findings = []
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    described = manifest.get("file")
    if not isinstance(described, dict):
        described = {}
    if digest.hexdigest() != described.get("sha256"):
        detail = f"the file's SHA-256 {digest.hexdigest()[:12]}… is not the manifest's"
        findings.append(Finding("modified", "", 0, None, detail, table=path.name))
    if rows != manifest.get("rows"):
        detail = f"{rows} rows in the file, {manifest.get('rows')} in the manifest"
        findings.append(Finding("modified", "", 0, None, detail, table=path.name))
    for head in heads_of_manifest(manifest, path.name):
        if (head.producer_id, head.seq, head.record_hash) not in hashes:
            detail = f"the manifest's chain head {head.record_hash[:12]}… is not in the file"
            findings.append(Finding("deleted", head.producer_id, head.seq, None, detail))
    return findings
