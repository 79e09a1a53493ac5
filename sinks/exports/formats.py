"""The export formats: each one's file extension and HTTP content type. Kept apart from the
writers (pyarrow) so the command line can name the formats without loading them."""

from __future__ import annotations

FORMATS: dict[str, tuple[str, str]] = {  # format: (file extension, content type)
    "csv": (".csv", "text/csv; charset=utf-8"),
    "jsonl": (".jsonl", "application/x-ndjson"),
    "parquet": (".parquet", "application/vnd.apache.parquet"),
}
# format: file extension, as the command line names a downloaded file.
EXTENSIONS: dict[str, str] = {name: extension for name, (extension, _) in FORMATS.items()}
