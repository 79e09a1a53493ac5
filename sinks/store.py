"""The ClickHouse store behind one small interface; chDB (in-process) or a server over
HTTP, chosen by DSN. chDB has no async client and one engine per process, so every call
runs on one worker thread, off the event loop."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
import structlog
from clickhouse_connect.driver.binding import bind_query

from sinks import reader_access
from sinks.cluster_ddl import check_cluster_name, clustered

log = structlog.get_logger(__name__)

# Tenant reader clients kept open on a server (each a user with its row policies).
MAX_TENANT_READERS = 256
SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def settings_clause(settings: dict[str, Any]) -> str:
    """` SETTINGS a = 1, b = 'x'` from our own settings (never the user's): names checked,
    values rendered as literals. Settings in a query's own SETTINGS clause live and die
    with that query, on chDB as on a server (proven by tests/security)."""
    if not settings:
        return ""
    parts = []
    for name, value in settings.items():
        assert SETTING_NAME.match(name), name
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError(f"setting {name} must be an int or a string")
        if isinstance(value, int):
            parts.append(f"{name} = {value}")
        else:
            escaped = value.replace("\\", "\\\\").replace("'", "\\'")
            parts.append(f"{name} = '{escaped}'")
    return " SETTINGS " + ", ".join(parts)


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

    def __init__(self, dsn: str, reader_dsn: str | None = None, *, cluster: str = "") -> None:
        if dsn.startswith("chdb://"):
            # chDB creates its directory lazily; make sure the parent exists.
            from pathlib import Path

            Path(dsn.removeprefix("chdb://")).parent.mkdir(parents=True, exist_ok=True)
        self.dsn = dsn
        # GOVLEDGER_STORE_CLUSTER: migrations in cluster form (sinks/cluster_ddl.py).
        self.cluster = check_cluster_name(cluster) if cluster else ""
        self.is_embedded = dsn.startswith("chdb://")
        self.client: Any = clickhouse_connect.get_client(dsn=dsn)
        # Readers (the SQL endpoint and the reports) get a client of their own: on chDB
        # its own connection handle, hence its own session, so nothing a read does (even
        # a setting that outlived its query) reaches the sink's inserts, and the other way
        # round. On a server it may log in as a reader user (`reader_dsn`).
        self.reader: Any = clickhouse_connect.get_client(dsn=reader_dsn or dsn)
        # The SQL endpoint's own chDB connection handle (a session of its own, values of
        # query parameters bound as ClickHouse's HTTP interface binds them).
        self._sql_conn: Any = None
        if self.is_embedded:
            import chdb

            path = os.path.realpath(dsn.removeprefix("chdb://"))
            self._sql_conn = chdb.connect(path)  # type: ignore[no-untyped-call]
        # On a server: clients of the reader users, "" for the org reader, else per tenant.
        self._readers: dict[str, Any] = {}
        self._org_password = ""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._lock = threading.Lock()

    def migrate(self) -> list[str]:
        """Apply migrations not yet applied; return the names applied now."""
        self.client.command(
            self._ddl(
                "CREATE TABLE IF NOT EXISTS schema_migrations (number UInt32, name String, "
                "applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY number"
            )
        )
        done = {
            row[0] for row in self.client.query("SELECT number FROM schema_migrations").result_rows
        }
        applied = []
        for number, name, sql in migrations():
            if number in done:
                continue
            for statement in _statements(sql):
                self.client.command(self._ddl(statement))
            self.client.insert(
                "schema_migrations", [(number, name)], column_names=["number", "name"]
            )
            applied.append(name)
        if applied:
            log.info("migrations applied", names=applied)
        return applied

    def _ddl(self, statement: str) -> str:
        return clustered(statement, self.cluster) if self.cluster else statement

    def insert_avro(
        self, table: str, columns: Sequence[str], data: bytes | Sequence[bytes], token: str
    ) -> None:
        """Insert an Avro container file (or its chunks, in order); ClickHouse maps its
        fields to columns by name."""
        # Chunks go as a generator (what clickhouse-connect takes for a streamed body).
        block = data if isinstance(data, bytes) else (chunk for chunk in data)
        with self._lock:
            self.client.raw_insert(
                table,
                list(columns),
                insert_block=block,
                fmt="Avro",
                settings={
                    "insert_deduplication_token": token,
                    "input_format_avro_allow_missing_fields": 1,
                    # A retried insert that ClickHouse drops must feed no rollup either.
                    "deduplicate_blocks_in_dependent_materialized_views": 1,
                    # On a cluster: done only once a majority of replicas hold the rows, so
                    # the sink that next owns the partition finds them on any replica.
                    **({"insert_quorum": "auto"} if self.cluster else {}),
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
        """Rows of one of our own queries, on the reader session (settings ride on the
        query as a SETTINGS clause and end with it)."""
        with self._lock:
            return list(
                self.reader.query(sql, parameters=parameters, settings=settings).result_rows
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
        """Bytes of a checked query (`sql_guard.check`: one read, re-rendered, no SETTINGS
        of its own) in a ClickHouse output format, on the reader session. Our settings
        ride as the query's own SETTINGS clause, `readonly = 1` last: it lives and dies
        with the query, and the engine refuses any write, any setting change and any table
        function in it."""
        text = sql + settings_clause({**settings, "readonly": 1})
        self._assert_bound_as_sent(text, parameters)
        with self._lock:
            result: bytes = self.reader.raw_query(text, parameters=parameters or None, fmt=fmt)
            return result

    def reader_query(
        self,
        sql: str,
        fmt: str,
        settings: dict[str, Any],
        parameters: dict[str, Any] | None,
        tenant: str | None,
    ) -> bytes:
        """A checked query of the SQL endpoint. On chDB as `read_only` (per-query filters
        and `readonly = 1`). On a server it runs as a reader user (`sinks.reader_access`):
        the org reader, or the tenant's own user whose row policies keep its rows only;
        readonly comes from their profile, so the clause carries only our limits."""
        if self.is_embedded:
            text = sql + settings_clause({**settings, "readonly": 1})
            with self._lock:
                # chDB binds the values itself, read as ClickHouse's HTTP interface reads
                # `param_*` (escaped text of the placeholder's type).
                return bytes(self._sql_conn.query(text, fmt, params=parameters or None).bytes())
        client = self._server_reader(tenant)
        limits = {k: v for k, v in settings.items() if k != "additional_table_filters"}
        text = sql + settings_clause(limits)
        self._assert_bound_as_sent(text, parameters)
        with self._lock:
            result: bytes = client.raw_query(text, parameters=parameters or None, fmt=fmt)
            return result

    def _server_reader(self, tenant: str | None) -> Any:
        """The client of a reader user on a ClickHouse server, made (users, grants, row
        policies, a fresh password) the first time this process needs it."""
        key = tenant or ""
        if key in self._readers:
            return self._readers[key]
        database, tables, tenant_tables = self.tables()
        if not self._readers:
            self._org_password = secrets.token_urlsafe(32)
            for statement in reader_access.shared_access_sql(
                database, tables, tenant_tables, self._org_password
            ):
                self.command(statement)
            self._readers[""] = self._server_client(reader_access.ORG_USER, self._org_password)
        if tenant is not None:
            if len(self._readers) > MAX_TENANT_READERS:
                oldest = next(k for k in self._readers if k)
                self._readers.pop(oldest).close()
            password = secrets.token_urlsafe(32)
            for statement in reader_access.tenant_access_sql(
                database, tenant_tables, tenant, password
            ):
                self.command(statement)
            self._readers[key] = self._server_client(reader_access.tenant_user(tenant), password)
        return self._readers[key]

    def _server_client(self, user: str, password: str) -> Any:
        parts = urlsplit(self.dsn)
        return clickhouse_connect.get_client(
            host=parts.hostname,
            port=parts.port,
            secure=parts.scheme == "https",
            database=parts.path.strip("/") or None,
            username=user,
            password=password,
        )

    def explain_ast(self, sql: str, parameters: dict[str, Any] | None = None) -> list[str]:
        """Lines of ClickHouse's `EXPLAIN AST` of a checked query (one statement: parsing
        only, nothing runs), read on a reader session."""
        text = f"EXPLAIN AST {sql}" + settings_clause({"readonly": 1})
        if self.is_embedded:
            with self._lock:
                raw: bytes = bytes(
                    self._sql_conn.query(text, "TabSeparatedRaw", params=parameters or None).bytes()
                )
            return raw.decode(errors="replace").splitlines()
        self._assert_bound_as_sent(text, parameters)
        with self._lock:
            raw = bytes(
                self.reader.raw_query(text, parameters=parameters or None, fmt="TabSeparatedRaw")
            )
        return raw.decode(errors="replace").splitlines()

    @staticmethod
    def _assert_bound_as_sent(text: str, parameters: dict[str, Any] | None) -> None:
        """clickhouse-connect formats values into the text itself when it finds no
        `{name:Type}` placeholder; a checked query must reach the engine unchanged, its
        parameters bound by the engine."""
        if parameters:
            bound, engine_bound = bind_query(text, parameters)
            if bound != text.rstrip(";") or len(engine_bound) != len(parameters):
                raise ValueError("query parameters would change the query text")

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
        for client in self._readers.values():
            client.close()
        if self._sql_conn is not None:
            self._sql_conn.close()
        self.reader.close()
        self.client.close()
