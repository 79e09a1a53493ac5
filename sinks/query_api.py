"""The query API of the store owner: ClickHouse-style SQL over HTTP (read-only), health
and ingestion figures. `curl 'http://127.0.0.1:8124/?query=SELECT+1'` works as it does
against a ClickHouse server."""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from schemas.auth import bearer_token
from sinks.store import Store

DEFAULT_FORMAT = "TabSeparated"
TRAILING_FORMAT = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
MAX_QUERY_BYTES = 256 * 1024


def _presented_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if token := bearer_token(header):
        return token
    if header.startswith("Basic "):
        try:
            _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return ""
        return password
    return request.headers.get("X-ClickHouse-Key", "") or request.query.get("password", "")


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class QueryApi:
    """SQL and health routes; every query route needs the admin token."""

    def __init__(
        self, store: Store, token: str, stats: Callable[[], dict[str, Any]], max_rows: int
    ) -> None:
        assert token, "the query API needs a token"
        self.store = store
        self._token = token
        self._stats = stats
        self.max_rows = max_rows

    def application(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=MAX_QUERY_BYTES)
        app.add_routes(
            [
                web.get("/ping", self.ping),
                web.get("/v1/ingestion", self.ingestion),
                web.get("/", self.sql),
                web.post("/", self.sql),
            ]
        )
        return app

    async def ping(self, request: web.Request) -> web.Response:
        """ClickHouse-style liveness."""
        return web.Response(text="Ok.\n")

    async def ingestion(self, request: web.Request) -> web.Response:
        """Rows written, dead letters and time of the last insert."""
        if not hmac.compare_digest(_presented_token(request), self._token):
            return _error(401, "invalid_api_key", "admin token required")
        return web.Response(body=orjson.dumps(self._stats()), content_type="application/json")

    async def sql(self, request: web.Request) -> web.Response:
        """Run a read-only query; output in the query's FORMAT or TabSeparated."""
        if not hmac.compare_digest(_presented_token(request), self._token):
            return _error(401, "invalid_api_key", "admin token required")
        query = request.query.get("query", "")
        if request.method == "POST":
            body = (await request.read()).decode(errors="replace")
            query = f"{query} {body}".strip() if query else body
        if not query.strip():
            return _error(400, "invalid_request", "no query: pass ?query= or a POST body")
        fmt = request.query.get("default_format", DEFAULT_FORMAT)
        named = TRAILING_FORMAT.search(query)
        if named is not None:
            # The client passes the format separately; a FORMAT clause is moved there.
            fmt, query = named.group(1), query[: named.start()]
        settings = {"max_result_rows": self.max_rows, "result_overflow_mode": "throw"}
        try:
            result = await self.store.run(self.store.raw_read_only, query, fmt, settings)
        except PermissionError as exc:
            return _error(403, "read_only", str(exc))
        except Exception as exc:  # noqa: BLE001 - the engine's message is the useful answer to a bad query
            return _error(400, "query_failed", str(exc).split("\n", 1)[0][:2000])
        return web.Response(body=result, content_type="text/plain", charset="utf-8")
