"""An in-process gateway (with its admin API) and query API on 127.0.0.1, for attack
corpora that need no broker and no store: lineage goes to the component tier's in-memory
publisher, the provider's side of the wire is its Upstream, an httpx MockTransport that
keeps every request body it received (tests/component/support.py).

Shared by the gateway-input security tests; imported explicitly (no conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.policy.pack import parse_pack
from gateway.server import gateway_application, gateway_runner
from gateway.views import LocalViews, PublishedPack
from govledger.services import query_runner
from schemas.settings import GatewaySettings, SinkSettings, load
from sinks.access import AccessDeniedError, Reader
from sinks.query_app import QueryApi
from streams.keys import logic as keys_logic
from streams.wallets import logic as wallets_logic
from tests.component.support import (
    ADMIN_TOKEN,
    CAPTURE_MODEL,
    MemoryPublisher,
    Upstream,
    wire_gateway,
)
from tests.raw_http import RawResponse, parse_response, read_raw
from tests.unit import builders

SECRET = "gk_test_secret_0123456789abcdef"
TENANT = builders.TENANT
PII_PACK = """\
name: default
policies:
  chain:
    - name: pii-detector
      policy: {detect: [email, phone, card, iban, national_id, secret], action: redact}
"""


@dataclass
class Served:
    """A running gateway: its base URL, its lineage and what its provider received."""

    host: str
    port: int
    lineage: MemoryPublisher
    upstream: Upstream
    settings: GatewaySettings

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _views(with_pii_pack: bool) -> LocalViews:
    views = LocalViews()
    issued = builders.key_issued(
        key_id="key_security",
        key_prefix=SECRET[:10],
        key_sha256=hashlib.sha256(SECRET.encode()).hexdigest(),
        expires_at=None,
    )
    key = keys_logic.evolve(None, issued)
    assert key is not None
    views.keys[key.key_id] = key
    views.keys_by_hash[key.key_sha256] = key
    funded = builders.balance(wallet_id=key.wallet_id, balance_nanousd=10**15)
    views.wallets[key.wallet_id] = wallets_logic.latest(None, funded)
    if with_pii_pack:
        views.packs[(key.tenant_id, "default")] = PublishedPack(1, PII_PACK, parse_pack(PII_PACK))
    return views


async def _serve(runner: web.AppRunner) -> int:
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server  # the listening socket's port (0 asked the OS for one)
    assert isinstance(server, asyncio.Server)
    return int(server.sockets[0].getsockname()[1])


@contextlib.asynccontextmanager
async def running_gateway(
    tmp_path: Path,
    *,
    with_pii_pack: bool = False,
    upstream: Upstream | None = None,
    **overrides: Any,
) -> AsyncIterator[Served]:
    """The gateway and admin API, assembled as GatewayProcess does, on a free port."""
    settings = load(
        GatewaySettings,
        environ={},
        data_dir=str(tmp_path),
        upstream_base_url="http://upstream.test/v1",
        **{"upstream_models": CAPTURE_MODEL, **overrides},
    )
    views = _views(with_pii_pack)
    upstream = upstream if upstream is not None else Upstream()
    gateway, admin, lineage, _, providers = wire_gateway(settings, views, upstream, "security")
    runner = gateway_runner(settings, gateway_application(settings, gateway, admin))
    port = await _serve(runner)
    try:
        yield Served("127.0.0.1", port, lineage, upstream, settings)
    finally:
        await runner.cleanup()
        for provider in providers.values():
            await provider.close()


def _authenticate(presented: str) -> Reader:
    if presented == ADMIN_TOKEN:
        return Reader("admin", None)
    raise AccessDeniedError(401, "invalid_api_key", "admin key required")


@contextlib.asynccontextmanager
async def running_query_api(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """The query API's routes and runner, with no store behind them (the attacks here
    never reach one); yields (host, port)."""
    settings = load(SinkSettings, environ={}, data_dir=str(tmp_path))
    api = QueryApi(None, _authenticate, dict, settings.query_max_rows)  # type: ignore[arg-type]
    runner = query_runner(settings, api.application())
    port = await _serve(runner)
    try:
        yield "127.0.0.1", port
    finally:
        await runner.cleanup()


async def raw_exchange(host: str, port: int, request: bytes, timeout_s: float = 5) -> bytes:
    """Send raw bytes on a fresh connection; everything the server answered until it closed
    (or, for a kept-alive connection, the first response)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        return await read_raw(reader, timeout_s)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def send(host: str, port: int, request: bytes) -> RawResponse:
    return parse_response(await raw_exchange(host, port, request))


MARK = "Zq7Marker"  # planted in hostile bytes: must never come back, nor be logged


def assert_json_error(response: RawResponse, status: int, code: str) -> dict[str, Any]:
    """The documented shape: JSON {"error": {"message", "type", "code", "param"}}."""
    assert response.status == status, response.body
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert MARK not in response.body.decode("utf-8", "replace")
    return error


def request(
    method: str,
    path: str,
    headers: list[bytes] | None = None,
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    lines += headers or []
    if body or method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chat_body(**fields: Any) -> bytes:
    payload: dict[str, Any] = {
        "model": "sim-small",
        "messages": [{"role": "user", "content": "Hi"}],
    }
    payload.update(fields)
    return json.dumps(payload).encode()


def bearer(secret: str = SECRET) -> bytes:
    return b"Authorization: Bearer " + secret.encode()


JSON = b"Content-Type: application/json"
