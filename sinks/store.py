"""The ClickHouse store behind one small interface; chDB (in-process) or a server over
HTTP, chosen by DSN. chDB has no async client and one engine per process, so every call
runs on one worker thread, off the event loop."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import clickhouse_connect
import structlog

log = structlog.get_logger(__name__)

READ_ONLY_STATEMENT = re.compile(
    r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b",
    re.IGNORECASE,
)
# chDB keeps settings for the whole session, so `readonly=1` on one query would make the
# sink's own inserts fail afterwards. On chDB the query API therefore refuses, besides
# non-read statements, the table functions and clauses that reach outside the store.
OUTSIDE_THE_STORE = re.compile(
    r"\b(INTO\s+OUTFILE|file|url|s3|s3Cluster|hdfs|remote|remoteSecure|mysql|postgresql|"
    r"sqlite|mongodb|redis|jdbc|odbc|executable|input|azureBlobStorage|gcs|iceberg\w*|"
    r"deltaLake\w*|hudi\w*|python)\s*\(|\bINTO\s+OUTFILE\b|\bSETTINGS\b",
    re.IGNORECASE,
)


def migrations() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every shipped migration, in order."""
    folder = resources.files("sinks") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text()))
    return sorted(found)


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class Store:
    """A ClickHouse client whose calls run serially on one thread."""

    def __init__(self, dsn: str) -> None:
        if dsn.startswith("chdb://"):
            # chDB creates its directory lazily; make sure the parent exists.
            from pathlib import Path

            Path(dsn.removeprefix("chdb://")).parent.mkdir(parents=True, exist_ok=True)
        self.dsn = dsn
        self.is_embedded = dsn.startswith("chdb://")
        self.client: Any = clickhouse_connect.get_client(dsn=dsn)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._lock = threading.Lock()

    def migrate(self) -> list[str]:
        """Apply migrations not yet applied; return the names applied now."""
        self.client.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (number UInt32, name String, "
            "applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY number"
        )
        done = {
            row[0] for row in self.client.query("SELECT number FROM schema_migrations").result_rows
        }
        applied = []
        for number, name, sql in migrations():
            if number in done:
                continue
            for statement in _statements(sql):
                self.client.command(statement)
            self.client.insert(
                "schema_migrations", [(number, name)], column_names=["number", "name"]
            )
            applied.append(name)
        if applied:
            log.info("migrations applied", names=applied)
        return applied

    def insert_avro(self, table: str, columns: Sequence[str], data: bytes, token: str) -> None:
        """Insert an Avro container file; ClickHouse maps its fields to columns by name."""
        with self._lock:
            self.client.raw_insert(
                table,
                list(columns),
                insert_block=data,
                fmt="Avro",
                settings={
                    "insert_deduplication_token": token,
                    "input_format_avro_allow_missing_fields": 1,
                },
            )

    def table_columns(self, table: str) -> list[str]:
        """Column names of a table."""
        rows = self.query_rows(
            "SELECT name FROM system.columns WHERE database = currentDatabase() "
            "AND table = %(table)s ORDER BY position",
            {"table": table},
        )
        return [str(row[0]) for row in rows]

    def query_rows(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Rows of a query."""
        with self._lock:
            return list(self.client.query(sql, parameters=parameters).result_rows)

    def raw_read_only(self, sql: str, fmt: str, settings: dict[str, Any]) -> bytes:
        """Bytes of a read-only query in a ClickHouse output format."""
        if not READ_ONLY_STATEMENT.match(sql):
            raise PermissionError("only read-only statements are allowed")
        if self.is_embedded:
            if OUTSIDE_THE_STORE.search(sql):
                raise PermissionError(
                    "table functions, SETTINGS and INTO OUTFILE are not allowed here"
                )
            query_settings: dict[str, Any] = {}  # they would outlive the query on chDB
        else:
            query_settings = {**settings, "readonly": 1}
        with self._lock:
            result: bytes = self.client.raw_query(sql, fmt=fmt, settings=query_settings)
            return result

    async def run(self, function: Any, *args: Any) -> Any:
        """Run a store call on the store thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def close(self) -> None:
        """Release the client."""
        self._executor.shutdown(wait=True)
        self.client.close()
