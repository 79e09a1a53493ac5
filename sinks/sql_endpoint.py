"""The SQL route of the query API (`GET|POST /?query=`), ClickHouse's HTTP interface for
reads: the entry to `sql_guard`. Every SQL text is proven to be one allowed read and what
runs is its re-rendering from the checked tree, on the store's reader session with
`readonly = 1` in its own SETTINGS clause, and for tenant keys with
`additional_table_filters` restricting each tenant table to the key's tenant. Settings in
the URL are not passed to the engine (only the values of the query's own `{name:Type}`
parameters, as `param_<name>`, and an allowed `default_format`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sinks import sql_guard
from sinks.access import Reader
from sinks.http_layer import BadRequestError
from sinks.sql_guard import QueryRefusedError
from sinks.store import Store

DEFAULT_FORMAT = "TabSeparated"
MAX_EXECUTION_S = 60


class StoreTables:
    """The store's database, its tables and those with a tenant_id column, read once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._tables: tuple[str, frozenset[str], frozenset[str]] | None = None

    async def read(self) -> tuple[str, frozenset[str], frozenset[str]]:
        """(database, tables, tenant tables), from the store the first time."""
        if self._tables is None:
            self._tables = await self.store.run(self.store.tables)
        return self._tables


class SqlEndpoint:
    """The SQL handler over a store, at most `max_rows` rows per answer."""

    def __init__(self, store: Store, tables: StoreTables, max_rows: int) -> None:
        self.store = store
        self._tables = tables
        self.max_rows = max_rows

    async def sql(self, request: web.Request, reader: Reader) -> web.Response:
        """Run a read-only query; output in the query's FORMAT, `default_format`, or
        TabSeparated. The text is proven to be one allowed read (`sql_guard.check`) and
        what runs is its re-rendering, with our settings as its own SETTINGS clause."""
        query = request.query.get("query", "")
        if request.method == "POST":
            body = (await request.read()).decode(errors="replace")
            query = f"{query} {body}".strip() if query else body
        if not query.strip():
            raise BadRequestError(400, "invalid_request", "no query: pass ?query= or a POST body")
        tenant = reader.tenant_id
        refused_code = "read_only" if tenant is None else "query_refused"
        try:
            policy = await self._policy(tenant)
            checked = sql_guard.check(query, policy)
            fmt = sql_guard.check_format(
                checked.fmt or request.query.get("default_format", DEFAULT_FORMAT)
            )
            # Values of the query's own {name:Type} parameters only; the engine binds them.
            parameters = {
                name: request.query[f"param_{name}"]
                for name in checked.parameters
                if f"param_{name}" in request.query
            }
            # Second line: ClickHouse's own parse of the one checked statement.
            ast = await self.store.run(self.store.explain_ast, checked.sql, parameters)
            sql_guard.check_engine_ast(ast, policy, sql_guard.cte_names(checked.sql))
        except QueryRefusedError as exc:
            raise BadRequestError(403, refused_code, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the engine's message is the useful answer to a bad query
            raise BadRequestError(400, "query_failed", _first_line(exc)) from None
        settings: dict[str, Any] = {
            "max_result_rows": self.max_rows,
            "result_overflow_mode": "throw",
            "max_execution_time": MAX_EXECUTION_S,
            # FORMAT JSON's statistics (rows_read, bytes_read) count every tenant's rows.
            "output_format_write_statistics": 0,
        }
        if tenant is not None:
            _, _, tenant_tables = await self._tables.read()
            settings["additional_table_filters"] = sql_guard.tenant_filters(tenant_tables, tenant)
        try:
            result = await self.store.run(
                self.store.reader_query, checked.sql, fmt, settings, parameters, tenant
            )
        except Exception as exc:  # noqa: BLE001 - as above
            raise BadRequestError(400, "query_failed", _first_line(exc)) from None
        return web.Response(
            body=result,
            content_type="text/plain",
            charset="utf-8",
            headers={"X-ClickHouse-Format": fmt, "X-ClickHouse-Timezone": "UTC"},
        )

    async def _policy(self, tenant: str | None) -> sql_guard.Policy:
        database, tables, tenant_tables = await self._tables.read()
        return sql_guard.Policy.for_reader(database, tables, tenant_tables, org=tenant is None)


def _first_line(exc: Exception) -> str:
    return str(exc).split("\n", 1)[0][:2000]
