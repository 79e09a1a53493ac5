"""Writing an export file page by page: CSV, JSON Lines or Parquet through a sink that
hashes the bytes as they go out, so the file's SHA-256 is known when it is closed."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

# JSON Lines are built from Python objects (~10x the Arrow size): a page is converted in
# slices of this many rows so that blow-up stays small.
JSONL_SLICE_ROWS = 1_000


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


def plain_decimal(value: Decimal) -> str:
    """A decimal in plain notation, every digit kept (`0.000000001`, not `1E-9`)."""
    return format(value, "f")


def _json_default(value: object) -> orjson.Fragment:
    """orjson's fallback: a decimal goes out as a JSON number, digit for digit (a float
    would round money)."""
    if isinstance(value, Decimal):
        return orjson.Fragment(plain_decimal(value))
    raise TypeError(f"{type(value).__name__} is not JSON")


def textual(page: pa.Table, *, nested_as_json: bool) -> pa.Table:
    """A page for text formats: timestamps as ISO 8601 UTC with milliseconds (whole
    seconds for a column of seconds), decimals in plain notation for CSV (JSON Lines
    writes them as numbers), and (for CSV) lists and tuples as JSON text. Integers stay
    integers: money is nano-USD."""
    columns = []
    for column in page.columns:
        kind = column.type
        if pa.types.is_timestamp(kind):
            unit = "s" if kind.unit == "s" else "ms"
            at = column.cast(pa.timestamp(unit, tz="UTC"))
            columns.append(pc.strftime(at, format="%Y-%m-%dT%H:%M:%SZ"))
        elif nested_as_json and pa.types.is_decimal(kind):
            values = column.to_pylist()
            text = [None if v is None else plain_decimal(v) for v in values]
            columns.append(pa.array(text, pa.string()))
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
                b"".join(
                    orjson.dumps(row, default=_json_default, option=orjson.OPT_APPEND_NEWLINE)
                    for row in rows
                )
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
