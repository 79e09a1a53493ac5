"""The ClickHouse store behind one small interface; chDB (in-process) or a server over
HTTP, chosen by DSN. chDB has no async client and one engine per process, so every call
runs on one worker thread, off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import clickhouse_connect
import structlog

log = structlog.get_logger(__name__)

# Settings that a SETTINGS clause on chDB would leave behind in the session (the engine
# cannot reset them afterwards): never sent to the embedded store.
SESSION_STICKY_SETTINGS = frozenset({"readonly"})


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
                    # A retried insert that ClickHouse drops must feed no rollup either.
                    "deduplicate_blocks_in_dependent_materialized_views": 1,
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
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Rows of a query (settings ride on the query and end with it; never `readonly`
        on chDB, see `read_only`)."""
        with self._lock:
            return list(
                self.client.query(sql, parameters=parameters, settings=settings).result_rows
            )

    def insert_rows(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]
    ) -> None:
        """Insert rows given as Python values (the sink's own bookkeeping tables)."""
        with self._lock:
            self.client.insert(table, rows, column_names=list(columns))

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        """Run a statement that returns nothing (the sink's own maintenance)."""
        with self._lock:
            self.client.command(sql, parameters=parameters)

    def read_only(
        self,
        sql: str,
        fmt: str,
        settings: dict[str, Any],
        parameters: dict[str, Any] | None = None,
    ) -> bytes:
        """Bytes of a query in a ClickHouse output format. The caller has checked that the
        statement only reads (`sql_guard`); a ClickHouse server also enforces readonly=1.
        On chDB the settings ride on the query itself and end with it, except `readonly`,
        which the embedded engine would keep for the session (the sink's inserts would
        fail), so it is not sent there."""
        if self.is_embedded:
            query_settings = {k: v for k, v in settings.items() if k not in SESSION_STICKY_SETTINGS}
        else:
            query_settings = {**settings, "readonly": 1}  # last: it freezes what follows
        with self._lock:
            result: bytes = self.client.raw_query(
                sql, parameters=parameters or None, fmt=fmt, settings=query_settings
            )
            return result

    def explain(
        self,
        kind: str,
        sql: str,
        settings: dict[str, Any],
        parameters: dict[str, Any] | None = None,
    ) -> list[str]:
        """Lines of `EXPLAIN AST` or `EXPLAIN QUERY TREE` of a query."""
        assert kind in ("AST", "QUERY TREE"), kind
        text = self.read_only(f"EXPLAIN {kind} {sql}", "TabSeparatedRaw", settings, parameters)
        return text.decode(errors="replace").splitlines()

    def tables(self) -> tuple[str, frozenset[str], frozenset[str]]:
        """The current database, its tables, and those of them with a tenant_id column."""
        with self._lock:
            database = str(self.client.query("SELECT currentDatabase()").result_rows[0][0])
            rows = self.client.query(
                "SELECT name, has(groupArray(column), 'tenant_id') FROM ("
                "SELECT t.name AS name, c.name AS column FROM system.tables AS t "
                "LEFT JOIN system.columns AS c ON c.database = t.database AND c.table = t.name "
                "WHERE t.database = currentDatabase()) GROUP BY name"
            ).result_rows
        existing = frozenset(str(row[0]) for row in rows)
        tenant = frozenset(str(row[0]) for row in rows if row[1])
        return database, existing, tenant

    async def run(self, function: Any, *args: Any) -> Any:
        """Run a store call on the store thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def close(self) -> None:
        """Release the client."""
        self._executor.shutdown(wait=True)
        self.client.close()
