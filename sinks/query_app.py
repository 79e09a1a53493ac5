"""The query API of the store owner, assembled: ClickHouse-style SQL over HTTP (read-only),
reports on events, wallets, escalations and SLAs, health and ingestion figures, exports.
`curl 'http://127.0.0.1:8124/?query=SELECT+1'` works as it does against a ClickHouse
server, and so does clickhouse-connect's HTTP client (password = the token or key).

Who may read: the admin token and org-admin keys see every tenant; a tenant-admin key
sees its own tenant's rows only, on every route; other roles get 403 (the admin API's
rule, `gateway.admin.principals.principal_for`, passed in as `authenticate`).

The parts, each importing only those before it:
- `sinks/http_layer.py`: the presented credential, the guard, JSON and error responses;
- `sinks/sql_endpoint.py`: the SQL route, the entry to `sinks/sql_guard.py`;
- `sinks/query_api.py`: the report routes;
- `sinks/exports_api.py`: the export routes (`/v1/exports`) over the jobs of
  `sinks/exports/`;
- `sinks/export_schedules_api.py`: the schedule routes (`/v1/exports/schedules`);
- `sinks/verify_api.py`: the chain verification routes (`/v1/audit/verify`) over the jobs
  of `sinks/verify_jobs.py` (the verification itself is passed in: `replay/store_verify.py`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from schemas.access_log import access_lines
from schemas.http_errors import json_errors
from sinks.access import Authenticate
from sinks.export_schedules_api import ScheduleRoutes
from sinks.exports.jobs import ExportJobs
from sinks.exports.scheduler import ExportSchedules, RunFinished, ScheduleLimits
from sinks.exports_api import ExportRoutes
from sinks.http_layer import guard
from sinks.metrics import SinkMetrics
from sinks.query_api import Reports
from sinks.sql_endpoint import SqlEndpoint, StoreTables
from sinks.store import Store
from sinks.verify_api import VerifyRoutes
from sinks.verify_jobs import VerifyJobs

MAX_QUERY_BYTES = 256 * 1024


class QueryApi:
    """SQL, report, health and ingestion routes; every route but /ping needs a token."""

    def __init__(
        self,
        store: Store,
        authenticate: Authenticate,
        stats: Callable[[], dict[str, Any]],
        max_rows: int,
        *,
        consumer_lag: Callable[[], Awaitable[dict[str, int]]] | None = None,
        retention_days: Callable[[], dict[str, int]] | None = None,
        exports_dir: Path | None = None,
        schedule_limits: ScheduleLimits | None = None,
        metrics: SinkMetrics | None = None,
        on_schedule_run_finished: RunFinished | None = None,
        audit_verify: VerifyJobs | None = None,
    ) -> None:
        self.store = store
        # The process's registry (the sink writer's, served here at /metrics).
        self.metrics = metrics if metrics is not None else SinkMetrics(enabled=True)
        self._guard = guard(authenticate)
        tables = StoreTables(store)
        self.reports = Reports(
            store, tables, stats, consumer_lag=consumer_lag, retention_days=retention_days
        )
        self.sql_endpoint = SqlEndpoint(store, tables, max_rows)
        # Export jobs (`sinks/exports/`) keep their files and state under exports_dir.
        self.exports = ExportJobs(store, exports_dir) if exports_dir is not None else None
        # Export schedules (`sinks/exports/scheduler.py`) keep theirs in exports_dir/schedules;
        # its `on_run_finished` notifies routes when a run is done (govledger/export_notices).
        self.export_schedules = (
            ExportSchedules(
                self.exports,
                exports_dir / "schedules",
                schedule_limits,
                on_run_finished=on_schedule_run_finished,
            )
            if self.exports is not None and exports_dir is not None
            else None
        )
        self.audit_verify = audit_verify

    def application(self) -> web.Application:
        """The aiohttp application."""
        # json_errors: 404, 405, 413, a malformed credential and any bug answer JSON too.
        # access_lines first: one line per request with the status finally answered.
        app = web.Application(
            client_max_size=MAX_QUERY_BYTES,
            middlewares=[access_lines(), self.metrics.middleware(), json_errors],
        )
        app.add_routes([web.get("/ping", self.ping), *self.metrics.metrics.route()])
        app.add_routes(self.reports.routes(self._guard))
        app.add_routes(
            [
                web.get("/", self._guard(self.sql_endpoint.sql)),
                web.post("/", self._guard(self.sql_endpoint.sql)),
            ]
        )
        if self.exports is not None and self.export_schedules is not None:
            exports, schedules = self.exports, self.export_schedules
            # The schedules' routes first: `/v1/exports/{id}` would match `schedules`.
            app.add_routes(ScheduleRoutes(schedules).routes(self._guard))
            app.add_routes(ExportRoutes(exports).routes(self._guard))

            async def start_exports(_: web.Application) -> None:
                await exports.start()
                await schedules.start()

            async def stop_exports(_: web.Application) -> None:
                await schedules.stop()
                await exports.stop()

            app.on_startup.append(start_exports)
            app.on_cleanup.append(stop_exports)
        if self.audit_verify is not None:
            verify = self.audit_verify
            app.add_routes(VerifyRoutes(verify).routes(self._guard))

            async def start_verify(_: web.Application) -> None:
                await verify.start()

            async def stop_verify(_: web.Application) -> None:
                await verify.stop()

            app.on_startup.append(start_verify)
            app.on_cleanup.append(stop_verify)
        return app

    async def ping(self, request: web.Request) -> web.Response:
        """ClickHouse-style liveness."""
        return web.Response(text="Ok.\n")
