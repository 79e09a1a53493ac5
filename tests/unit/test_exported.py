"""`govledger audit verify-export` (replay/exported.py): an export file written by the
exporter's own writers from a page as the store sends it is clean in every format; a
typed cell changed in the file (raw_base64 untouched) is a `column_mismatch` naming the
event and the column; with the manifest, the changed file's SHA-256 is reported too."""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replay.exported import arrow_type, check_export
from schemas import codec
from schemas.records import LineageRecord
from sinks.exports.manifest import write_pages
from tests.unit.test_columns import CALLS, LINEAGE, page

FORMATS = ["csv", "jsonl", "parquet"]


def _export(tmp_path: Path, fmt: str) -> tuple[Path, dict[str, Any]]:
    """An events export of CALLS, and its manifest's checked parts."""
    _, stored = page(LINEAGE, CALLS)
    raw_base64 = pa.array([base64.b64encode(raw).decode() for raw in CALLS])
    stored = stored.drop_columns(["raw"]).append_column("raw_base64", raw_base64)
    path = tmp_path / f"export.{fmt}"
    summary, tally = write_pages(iter([stored]), fmt, path, "occurred_at")
    manifest = {
        "rows": tally.rows,
        "file": {"sha256": summary.sha256},
        "chain_heads": tally.chain_heads(),
    }
    return path, manifest


def _change(path: Path, fmt: str, row: int, column: str, value: Any) -> None:
    """Change one cell of an export file, as someone with the file in hand would."""
    if fmt == "parquet":
        table = pq.read_table(path)
        values = table.column(column).to_pylist()
        values[row] = value
        index = table.column_names.index(column)
        changed = pa.array(values, type=table.schema.field(column).type)
        pq.write_table(table.set_column(index, column, changed), path)
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        rows[row][column] = str(value)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        path.write_text(out.getvalue())
    else:
        lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        lines[row][column] = value
        path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_as_written_is_clean_with_and_without_its_manifest(
    tmp_path: Path, fmt: str
) -> None:
    path, manifest = _export(tmp_path, fmt)
    assert check_export(path).findings == []
    report = check_export(path, manifest)
    assert report.findings == [] and report.rows == len(CALLS)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("column", "value"),
    [("model_requested", "cheap-model"), ("cost_nanousd", 1), ("team_id", "other-team")],
)
def test_a_changed_cell_is_named_at_its_event(
    tmp_path: Path, fmt: str, column: str, value: Any
) -> None:
    path, manifest = _export(tmp_path, fmt)
    _change(path, fmt, 1, column, value)
    (finding,) = check_export(path).findings
    assert finding.kind == "column_mismatch"
    assert finding.event_id == codec.decode(CALLS[1]).event_id and finding.seq == 2
    assert finding.detail.startswith(f"column {column} differs from raw"), finding.detail
    with_manifest = check_export(path, manifest).findings
    assert sorted(f.kind for f in with_manifest) == ["column_mismatch", "modified"]
    assert any("SHA-256" in f.detail for f in with_manifest)


def test_a_guardrail_hidden_in_a_csv_cell_is_found(tmp_path: Path) -> None:
    path, _ = _export(tmp_path, "csv")
    _change(path, "csv", 0, "guardrails_triggered", "[]")
    (finding,) = check_export(path).findings
    assert finding.detail.startswith("column guardrails_triggered differs"), finding.detail


def test_changed_bytes_with_columns_to_match_are_caught_by_the_hash(tmp_path: Path) -> None:
    path, _ = _export(tmp_path, "jsonl")
    record = codec.decode_as(CALLS[0], LineageRecord)
    forged = codec.encode(dataclasses.replace(record, cost_nanousd=1))  # hash left as it was
    _change(path, "jsonl", 0, "raw_base64", base64.b64encode(forged).decode())
    _change(path, "jsonl", 0, "cost_nanousd", 1)
    (finding,) = check_export(path).findings
    assert (finding.kind, finding.seq) == ("modified", 1)


def test_avro_types_map_to_the_store_s_arrow_types() -> None:
    assert arrow_type({"type": "long", "logicalType": "timestamp-millis"}) == pa.timestamp(
        "ms", tz="UTC"
    )
    assert arrow_type(["null", "string"]) == pa.string()
    assert arrow_type({"type": "enum", "name": "e", "symbols": ["a"]}) == pa.string()
    assert arrow_type({"type": "map", "values": "long"}) == pa.map_(pa.string(), pa.int64())
    assert arrow_type({"type": "array", "items": "int"}) == pa.list_(pa.int32())


def test_a_file_that_is_not_an_export_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ValueError, match="not an export file"):
        check_export(other)
