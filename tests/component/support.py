"""The component tier's support: the gateway, its admin API and the query API assembled
in-process as their processes assemble them, with an in-memory publisher in place of
the broker and an httpx MockTransport in place of the upstream provider.

The in-memory publisher seals and signs each record as ChainedPublisher does and hands it,
as a consumed message, to the gateway's views: keys issued, packs pushed and escalations
decided through the admin API reach the gateway the way the broker delivers them. What a
processor would publish (wallet balances) is published with `publish_balance`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import httpx
import openai
import orjson
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application
from aiohttp.web_runner import BaseRunner

from gateway.admin.api import AdminApi
from gateway.catalogue import build_catalogue
from gateway.pipeline import Gateway
from gateway.providers.openai_compat import OpenAICompatProvider
from gateway.providers.sim import SimProvider
from gateway.server import gateway_application, gateway_runner
from gateway.views import LocalViews
from govledger.services import query_readers, query_runner
from schemas import authn
from schemas.authn import Keyring, Role, SignedChain
from schemas.records import Event, LineageRecord
from schemas.settings import GatewaySettings, SinkSettings, load
from schemas.topics import WALLET_STATE
from sinks.query_app import QueryApi
from streams.escalations.logic import EscalationConfig
from streams.wallets import logic as wallets_logic
from tests.unit import builders

E = TypeVar("E", bound=Event)

ADMIN_TOKEN = "adm_test_token_0123456789abcdef"
KEYRING: Keyring = builders.TEST_KEYRING
CAPTURE_MODEL = "capture-model"
ECHO_MODEL = "echo"
OUTAGE_MODEL = "outage-primary"
FAILING_MODEL = "broken-upstream"  # always answers 500
FLAKY_MODEL = "flaky-primary"  # always answers 500 (tests give it a fallback)
CUT_STREAM_MODEL = "cut-stream"  # streams two chunks, then the connection drops


def install_keyring() -> Keyring:
    """The process's keyring (installed once): the views verify what publishers sign."""
    keyring = authn.installed()
    if keyring is None:
        keyring = KEYRING
        authn.install(keyring)
    return keyring


class MemoryPublisher:
    """A Publisher (schemas.publisher) with no broker: each record is sealed into its
    signed chain, kept, and delivered at once, as a consumed message, to each subscriber."""

    def __init__(
        self,
        producer_id: str,
        *,
        role: Role | None = None,
        keyring: Keyring | None = None,
        subscribers: list[Callable[[Any], None]] | None = None,
    ) -> None:
        self.chain = SignedChain(producer_id, role, keyring)
        self.records: list[tuple[str, Event]] = []
        self.subscribers = list(subscribers or [])
        self.pending = 0
        self.degraded = False
        self.accepting = True
        self.started = False

    @property
    def producer_id(self) -> str:
        return self.chain.producer_id

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def publish(self, topic: str, key: str, record: E) -> E:
        sealed, value = self.chain.seal_encoded(record)
        self.records.append((topic, sealed))
        message = SimpleNamespace(
            topic=topic, key=key.encode(), value=value, headers=self.chain.headers(value)
        )
        for deliver in self.subscribers:
            deliver(message)
        return sealed

    publish_and_wait = publish

    def lineage(self) -> list[LineageRecord]:
        """The lineage records published, in order."""
        return [r for _, r in self.records if isinstance(r, LineageRecord)]

    def of_type(self, kind: type[E]) -> list[E]:
        """The records of one type published, in order."""
        return [r for _, r in self.records if isinstance(r, kind)]


def chat_answer(
    model: str, content: str, prompt_tokens: int = 10, completion_tokens: int = 10
) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-component",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
    )


def _chunk(text: str) -> bytes:
    body = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": CUT_STREAM_MODEL,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


class CutStream(httpx.AsyncByteStream):
    """Two chunks of an answer, then the peer closes the connection mid-stream."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield _chunk("The first part of an answer")
        yield _chunk(" that never finishes because")
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


@dataclass
class Upstream:
    """The provider's side of the wire: keeps every chat request body it received.
    `echo` answers the text it received; `outage-primary` answers 503 while `outage` is
    on, else echoes; `broken-upstream` and `flaky-primary` answer 500; `cut-stream`
    streams two chunks and then the connection drops; any other model answers "ok"."""

    received: list[dict[str, Any]] = field(default_factory=list)
    outage: bool = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        payload = orjson.loads(request.content)
        self.received.append(payload)
        model = payload.get("model")
        if model in (FAILING_MODEL, FLAKY_MODEL):
            return httpx.Response(500, json={"error": {"message": "boom"}})
        if model == OUTAGE_MODEL and self.outage:
            return httpx.Response(503, json={"error": {"message": "outage"}})
        if model == CUT_STREAM_MODEL:
            return httpx.Response(
                200, headers={"Content-Type": "text/event-stream"}, stream=CutStream()
            )
        if model in (ECHO_MODEL, OUTAGE_MODEL):
            seen = "\n".join(str(m.get("content")) for m in payload["messages"])
            return chat_answer(ECHO_MODEL, seen)
        return chat_answer(CAPTURE_MODEL, "ok", prompt_tokens=3, completion_tokens=1)


class GatewayTestServer(TestServer):
    """A TestServer on the gateway's own runner (its HTTP parser limits, as JSON)."""

    def __init__(self, app: Application, settings: GatewaySettings) -> None:
        super().__init__(app)
        self.settings = settings

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return gateway_runner(self.settings, self.app)


@dataclass
class Component:
    """A gateway with its admin API, in-process: a TestClient, its views, its publishers
    (lineage, control) and what its upstream received."""

    client: TestClient[Any, Any]
    settings: GatewaySettings
    views: LocalViews
    lineage: MemoryPublisher
    control: MemoryPublisher
    upstream: Upstream
    gateway: Gateway

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    async def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self.as_key(ADMIN_TOKEN, method, path, **kwargs)

    async def as_key(self, secret: str, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {secret}", **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def create_key(self, team: str, tenant: str = "default", **fields: Any) -> dict[str, Any]:
        response = await self.admin(
            "POST", "/v1/admin/keys", json={"team": team, "tenant": tenant, **fields}
        )
        assert response.status == 201, await response.text()
        return dict(await response.json())

    def publish_balance(self, team: str, usd: str, tenant: str = "default") -> None:
        """The team wallet's balance as the wallets processor publishes it once funded."""
        nanousd = round(float(usd) * 1e9)
        wallet_id = wallets_logic.team_wallet_id(tenant, team)
        known = self.views.wallets.get(wallet_id)
        record = builders.balance(
            wallet_id=wallet_id,
            team_id=team,
            tenant_id=tenant,
            balance_nanousd=nanousd,
            funded_nanousd=nanousd,
            spent_nanousd=0,
            seq=(known.entry_count + 1) if known is not None else 1,
            entry_count=(known.entry_count + 1) if known is not None else 1,
        )
        self.views.apply(builders.signed_message(WALLET_STATE.name, record))

    async def sdk_for(
        self, team: str, tenant: str = "default", usd: str = "5", **key: Any
    ) -> openai.AsyncOpenAI:
        """A funded key for the team, through the official SDK (as client_for did)."""
        self.publish_balance(team, usd, tenant=tenant)
        secret = (await self.create_key(team, tenant=tenant, **key))["key"]
        return self.sdk(secret)

    def sdk(self, secret: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=secret, max_retries=0)

    def lineage_of(self, trace_id: str) -> LineageRecord:
        """The one lineage record of a trace."""
        found = [r for r in self.lineage.lineage() if r.trace_id == trace_id]
        assert len(found) == 1, found
        return found[0]


def gateway_settings(tmp_path: Path, **overrides: Any) -> GatewaySettings:
    fields: dict[str, Any] = {
        "data_dir": str(tmp_path),
        "upstream_base_url": "http://upstream.test/v1",
        "upstream_models": ",".join(
            (CAPTURE_MODEL, ECHO_MODEL, OUTAGE_MODEL, FAILING_MODEL, FLAKY_MODEL, CUT_STREAM_MODEL)
        ),
    }
    fields.update(overrides)
    return load(GatewaySettings, environ={}, **fields)


def wire_gateway(
    settings: GatewaySettings, views: LocalViews, upstream: Upstream, producer: str
) -> tuple[Gateway, AdminApi, MemoryPublisher, MemoryPublisher, dict[str, Any]]:
    """The gateway and admin API assembled as GatewayProcess assembles them."""
    keyring = install_keyring()
    lineage = MemoryPublisher(f"gateway-{producer}", keyring=keyring, subscribers=[views.apply])
    control = MemoryPublisher(f"admin-{producer}", keyring=keyring, subscribers=[views.apply])
    providers: dict[str, Any] = {
        "sim": SimProvider(latency_ms=0, error_rate=0, chunk_tokens=4, completion_tokens=8),
        "openai": OpenAICompatProvider(
            name="openai",
            base_url=settings.upstream_base_url,
            api_key="upstream-key",
            timeout_s=5,
            transport=httpx.MockTransport(upstream.handle),
        ),
    }
    gateway = Gateway(
        settings=settings,
        views=views,
        lineage=lineage,
        providers=providers,
        catalogue=build_catalogue(settings),
    )
    admin = AdminApi(
        token=ADMIN_TOKEN,
        views=views,
        control=control,
        budget=gateway.budget,
        default_tenant=settings.default_tenant,
        escalation_config=EscalationConfig(),
    )
    return gateway, admin, lineage, control, providers


@contextlib.asynccontextmanager
async def running_component(
    tmp_path: Path,
    views: LocalViews | None = None,
    upstream: Upstream | None = None,
    **overrides: Any,
) -> AsyncIterator[Component]:
    """The gateway and admin API under a TestClient; settings overridden by name."""
    settings = gateway_settings(tmp_path, **overrides)
    views = views if views is not None else LocalViews()
    upstream = upstream if upstream is not None else Upstream()
    gateway, admin, lineage, control, providers = wire_gateway(
        settings, views, upstream, "component"
    )
    server = GatewayTestServer(gateway_application(settings, gateway, admin), settings)
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    try:
        yield Component(client, settings, views, lineage, control, upstream, gateway)
    finally:
        await client.close()
        for provider in providers.values():
            await provider.close()


class QueryTestServer(TestServer):
    """A TestServer on the query API's own runner (its HTTP parser limits, as JSON)."""

    def __init__(self, app: Application, settings: SinkSettings) -> None:
        super().__init__(app)
        self.settings = settings

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return query_runner(self.settings, self.app)


@contextlib.asynccontextmanager
async def running_query_api(
    tmp_path: Path, views: LocalViews
) -> AsyncIterator[TestClient[Any, Any]]:
    """The query API's routes under a TestClient, reading keys from `views` (as the sink
    folds the control topic) and with no store behind them: only what is decided before
    a query reaches ClickHouse (authentication, roles, parameters) can be checked here."""
    settings = load(SinkSettings, environ={}, data_dir=str(tmp_path))
    api = QueryApi(
        None,  # type: ignore[arg-type]
        query_readers(views, ADMIN_TOKEN),
        dict,
        settings.query_max_rows,
    )
    client: TestClient[Any, Any] = TestClient(QueryTestServer(api.application(), settings))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def review_pack(name: str, priority: str, category: str) -> str:
    """A pack that refuses a diagnosis request and escalates it for human review."""
    oversight = (
        f"{{triggers: [content-filter], mode: refuse, priority: {priority}, category: {category}}}"
    )
    return (
        f"name: {name}\npolicies:\n  chain:\n"
        "    - name: content-filter\n"
        "      policy: {deny: [diagnosis], action: flag}\n"
        "    - name: human-oversight\n"
        f"      policy: {oversight}\n"
    )
