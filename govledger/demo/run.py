"""The demo's HTTP clients: the admin API, the query API and the `openai` SDK as each team,
and the errors that say the stack is unreachable or answered wrongly."""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionMessageParam

from gateway.catalogue import SIM_TARGETS, Target
from gateway.providers.sim import FLAKY_MODEL
from schemas.settings import GatewaySettings

HTTP_TIMEOUT_S = 30.0
PRICES: dict[str, Target] = {t.model: t for t in SIM_TARGETS}


class StackUnreachableError(Exception):
    """The gateway or the query API did not answer: nothing to demonstrate against."""


class DemoError(Exception):
    """The stack answered, but not as the demo needs (a refused admin call, a bad query)."""


@dataclass(frozen=True, slots=True)
class Team:
    """A product team: its policy pack, the model it calls and what it asks."""

    name: str
    pack: str
    model: str
    prompts: tuple[str, ...]
    # The end user each call names (`user`): customer-facing's rbac step requires it, and
    # the other packs record it.
    user: str


def say(step: str, text: str) -> None:
    """One line per step, as it happens."""
    sys.stdout.write(f"{step:<9}{text}\n")
    sys.stdout.flush()


def ms_text(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]


def new_trace_id() -> str:
    return secrets.token_hex(16)


def chat_messages(user: str, system: str | None = None) -> list[ChatCompletionMessageParam]:
    messages: list[ChatCompletionMessageParam] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    return messages


@dataclass
class Run:
    """One demo run against a stack: its tenant, clients and what it has sent."""

    tenant: str
    settings: GatewaySettings
    admin: httpx.Client
    store: httpx.Client
    started_ms: int
    sdk: dict[str, openai.OpenAI] = field(default_factory=dict)
    key_ids: list[str] = field(default_factory=list)
    calls: int = 0  # every call, refused ones too, has exactly one lineage record
    spent_nanousd: dict[str, int] = field(default_factory=dict)
    escalation_id: str = ""
    budget_nanousd: int = 0
    recovery_tried: bool = False

    # --- the stack's HTTP surfaces ------------------------------------------------------

    def admin_call(self, method: str, path: str, **kwargs: Any) -> Any:
        """An admin API call; its JSON answer."""
        try:
            response = self.admin.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StackUnreachableError(f"gateway at {self.admin.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise DemoError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def report(self, path: str, **params: str) -> Any:
        """A JSON report route of the query API."""
        try:
            response = self.store.get(path, params=params)
        except httpx.HTTPError as exc:
            raise StackUnreachableError(f"query API at {self.store.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise DemoError(f"GET {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def rows(self, sql: str, **params: str | int) -> list[dict[str, Any]]:
        """Rows of a read-only query; values bound as ClickHouse query parameters."""
        query = {"default_format": "JSONEachRow"} | {
            f"param_{k}": str(v) for k, v in params.items()
        }
        try:
            response = self.store.post("/", params=query, content=sql.encode())
        except httpx.HTTPError as exc:
            raise StackUnreachableError(f"query API at {self.store.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise DemoError(f"query failed: {response.status_code} {response.text[:300]}")
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]

    # --- calls through the SDK ----------------------------------------------------------

    def chat(
        self,
        team: Team,
        model: str,
        messages: list[ChatCompletionMessageParam],
        *,
        stream: bool = False,
        trace_id: str | None = None,
    ) -> int:
        """One chat completion as the team; the nano-USD it costs (0 when refused, which
        raises the SDK's APIStatusError). Prices are the catalogue's, as the gateway's."""
        client = self.sdk[team.name]
        headers = {"traceparent": f"00-{trace_id or new_trace_id()}-{secrets.token_hex(8)}-01"}
        self.calls += 1
        usage: CompletionUsage | None = None
        try:
            if stream:
                for chunk in client.chat.completions.create(
                    model=model,
                    messages=messages,
                    user=team.user,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_headers=headers,
                ):
                    usage = chunk.usage or usage
            else:
                usage = client.chat.completions.create(
                    model=model, messages=messages, user=team.user, extra_headers=headers
                ).usage
        except openai.APIConnectionError as exc:
            raise StackUnreachableError(f"gateway at {client.base_url}: {exc}") from exc
        cost = (
            0
            if usage is None
            else PRICES[model].cost_nanousd(usage.prompt_tokens, usage.completion_tokens)
        )
        self.spent_nanousd[team.name] = self.spent_nanousd.get(team.name, 0) + cost
        return cost

    def breaker_state(self, *, since_ms: int = 0) -> dict[str, Any] | None:
        """sim-flaky's latest fleet-wide breaker state published since `since_ms`."""
        found = self.rows(
            "SELECT state, toUnixTimestamp64Milli(open_until) AS open_until_ms FROM breaker_state "
            "WHERE provider = 'sim' AND model = {model:String} "
            "AND occurred_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC') "
            "ORDER BY occurred_at DESC LIMIT 1",
            model=FLAKY_MODEL,
            since=since_ms,
        )
        return found[0] if found else None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@contextlib.contextmanager
def clients(settings: GatewaySettings) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    from govledger.admin_token import resolve_admin_token

    try:
        token = resolve_admin_token(settings, create=False)
    except FileNotFoundError as exc:
        raise StackUnreachableError(str(exc)) from exc
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(
            base_url=settings.gateway_url, headers=headers, timeout=HTTP_TIMEOUT_S
        ) as admin,
        httpx.Client(base_url=settings.query_url, headers=headers, timeout=HTTP_TIMEOUT_S) as store,
    ):
        for client, path in ((admin, "/healthz"), (store, "/ping")):
            try:
                client.get(path, timeout=5.0).raise_for_status()
            except httpx.HTTPError as exc:
                raise StackUnreachableError(f"{client.base_url}{path}: {exc}") from exc
        yield admin, store
