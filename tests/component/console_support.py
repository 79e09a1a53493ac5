"""The console in-process, in front of the real admin API (the component tier's gateway,
`tests/component/support.py`) and a query API whose authentication is the real one
(`govledger.services.query_readers` behind `sinks.http_layer.guard`, over the keys the
admin API issued) but whose store is a recorder: each SQL query answers no rows and is
kept with the tenant its reader sees, so tests can check what the console asked and with
which key. Its chain verification routes are the real ones (`sinks/verify_api.py` over
`sinks/verify_jobs.py`) over a verification that records the tenant it was asked for and
answers a canned result (`VERIFIED`), held while `verify_release` is clear. Pages are
driven as a browser would: a cookie jar, the login form, the CSRF token read from the
page."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from console.backend import Backend
from console.server import console_application
from govledger.services import query_readers
from schemas.http_errors import json_response
from schemas.metrics import CONTENT_TYPE, METRICS_PATH
from schemas.settings import ConsoleSettings, load
from sinks.access import Reader
from sinks.http_layer import guard
from sinks.verify_api import VerifyRoutes
from sinks.verify_jobs import VerifyJob, VerifyJobs
from streams.metrics import StreamMetrics
from tests.component.support import ADMIN_TOKEN, Component, running_component

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
# What the recorder's verification answers: a gap in a chain, named by producer and seq.
VERIFIED: dict[str, Any] = {
    "clean": False,
    "producers": 2,
    "records": 7,
    "checkpoints": 1,
    "open_chains": 1,
    "expired": 0,
    "links": 0,
    "columns_rows": 7,
    "findings_total": 1,
    "findings_by_kind": {"deleted": 1},
    "findings": [
        {
            "kind": "deleted",
            "producer_id": "gateway-shared",
            "seq": 4,
            "at": "-",
            "table": "",
            "event_id": "",
            "detail": "seq 4 missing (seq 5 links to 0123456789ab…)",
        }
    ],
    "verify_ms": 3,
}


@dataclass
class AskedQuery:
    """One SQL query the recorder was asked: the reader's tenant (None: every tenant) and
    the bound parameters."""

    reader_tenant: str | None
    text: str
    params: dict[str, str]


@dataclass
class RecordingQueryApi:
    """A query API with the real guard and no store."""

    asked: list[AskedQuery] = field(default_factory=list)
    # Rows a query answers when its text contains the key (else none), as a store would.
    rows_for: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # The scopes verifications were run for (None: every tenant), and a gate holding them.
    verified: list[str | None] = field(default_factory=list)
    verify_release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.verify_release.set()

    def _verify(self, job: VerifyJob, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        self.verified.append(job.tenant)
        job.records_total, job.records_checked, job.phase = 7, 3, "chains"
        while not self.verify_release.wait(0.01):
            if job.stop.is_set():
                raise RuntimeError("stopped")
        return VERIFIED

    def asked_about(self, text: str) -> bool:
        """Whether any query asked so far mentions `text`."""
        return any(text in q.text for q in self.asked)

    def application(self, component: Component) -> web.Application:
        protect = guard(query_readers(component.views, ADMIN_TOKEN))

        async def me(request: web.Request, reader: Reader) -> web.Response:
            return json_response({"identity": reader.identity, "tenant": reader.tenant_id})

        async def sql(request: web.Request, reader: Reader) -> web.Response:
            params = {k[6:]: v for k, v in request.query.items() if k.startswith("param_")}
            text = await request.text()
            self.asked.append(AskedQuery(reader.tenant_id, text, params))
            rows = next((r for key, r in self.rows_for.items() if key in text), [])
            return json_response({"data": rows})

        async def report(request: web.Request, reader: Reader) -> web.Response:
            asked = request.query.get("tenant")
            if asked and not reader.sees(asked):
                return json_response({"error": {"code": "forbidden", "message": "no"}}, 403)
            return json_response({"tenant": asked, "wallets": [], "data": []})

        async def ingestion(request: web.Request, reader: Reader) -> web.Response:
            if reader.tenant_id is not None:
                return json_response({"error": {"code": "forbidden", "message": "org"}}, 403)
            return json_response(
                {
                    "rows_inserted": 7,
                    "dead_lettered": 0,
                    "last_insert_ms": None,
                    "commit_failures": 0,
                    "store": {"state": "ok"},
                    "tables": {},
                    "consumer_lag_records": {},
                }
            )

        async def exports(request: web.Request, reader: Reader) -> web.Response:
            if request.method == "POST":
                asked = (await request.json()).get("tenant")
                if asked is not None and not reader.sees(asked):
                    return json_response({"error": {"code": "forbidden", "message": "no"}}, 403)
                return json_response({"id": "x"}, 202)
            return json_response({"exports": []})

        async def no_export(request: web.Request, reader: Reader) -> web.Response:
            return json_response({"error": {"code": "export_not_found", "message": "no"}}, 404)

        app = web.Application()
        jobs = VerifyJobs(self._verify, timeout_s=10)
        app.add_routes(VerifyRoutes(jobs).routes(protect))

        async def start_verify(_: web.Application) -> None:
            await jobs.start()

        async def stop_verify(_: web.Application) -> None:
            self.verify_release.set()
            await jobs.stop()

        app.on_startup.append(start_verify)
        app.on_cleanup.append(stop_verify)
        app.add_routes(
            [
                web.get("/v1/me", protect(me)),
                web.post("/", protect(sql)),
                web.get("/v1/ingestion", protect(ingestion)),
                web.get("/v1/wallets/balance", protect(report)),
                web.get("/v1/exports", protect(exports)),
                web.post("/v1/exports", protect(exports)),
                web.get("/v1/exports/{id}", protect(no_export)),
                web.get("/v1/exports/{id}/download", protect(no_export)),
            ]
        )
        return app


@dataclass
class ConsoleHarness:
    """The console's TestClient (one browser: one cookie jar), the gateway component
    behind it and the recording query API."""

    client: TestClient[Any, Any]
    component: Component
    query: RecordingQueryApi

    async def login(self, key: str) -> Any:
        """Log in as a browser does: the form, its token, the key."""
        form = await self.client.get("/login")
        token = CSRF.search(await form.text())
        assert token is not None
        return await self.client.post(
            "/login", data={"csrf": token.group(1), "key": key}, allow_redirects=False
        )

    async def csrf(self, path: str = "/keys") -> str:
        """The session's CSRF token, as a page carries it."""
        page = await self.client.get(path)
        token = CSRF.search(await page.text())
        assert token is not None, await page.text()
        return token.group(1)

    def session_cookie(self) -> str | None:
        """The session id this browser holds, if any."""
        jar = self.client.session.cookie_jar.filter_cookies(self.client.make_url("/"))
        cookie = jar.get("govledger_console")
        return None if cookie is None else cookie.value

    def plant_session_cookie(self, value: str) -> None:
        """Set the session cookie to a value of the test's choosing (an attacker's)."""
        self.client.session.cookie_jar.update_cookies(
            {"govledger_console": value}, response_url=self.client.make_url("/")
        )


@contextlib.asynccontextmanager
async def running_console(tmp_path: Path, **settings: Any) -> AsyncIterator[ConsoleHarness]:
    """The console in front of the component gateway and a recording query API."""
    async with running_component(tmp_path) as component:
        recorder = RecordingQueryApi()
        query: TestClient[Any, Any] = TestClient(TestServer(recorder.application(component)))
        await query.start_server()
        backend = Backend(component.url, str(query.make_url("")).rstrip("/"), 10)
        await backend.start()
        # No worker unless a test serves one (never whatever listens on 6066 here).
        settings.setdefault("console_worker_urls", "")
        console_settings = load(ConsoleSettings, environ={}, **settings)
        client: TestClient[Any, Any] = TestClient(
            TestServer(console_application(console_settings, backend))
        )
        await client.start_server()
        try:
            yield ConsoleHarness(client, component, recorder)
        finally:
            await client.close()
            await backend.close()
            await query.close()


@dataclass
class FakeWorker:
    """A worker's web port: the real `StreamMetrics` page, and how often it was read."""

    metrics: StreamMetrics
    url: str
    scrapes: int = 0


@contextlib.asynccontextmanager
async def serving_worker_metrics() -> AsyncIterator[FakeWorker]:
    """A worker's /metrics (streams/metrics.py's own registry and exposition)."""
    worker = FakeWorker(StreamMetrics(enabled=True), "")

    async def page(request: web.Request) -> web.Response:
        worker.scrapes += 1
        body = await worker.metrics.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get(METRICS_PATH, page)
    server: TestClient[Any, Any] = TestClient(TestServer(app))
    await server.start_server()
    worker.url = str(server.make_url("")).rstrip("/")
    try:
        yield worker
    finally:
        await server.close()
