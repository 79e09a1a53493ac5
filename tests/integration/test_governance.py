"""Governance on the running stack: cost limits over what the worker folds, and a fleet of
gateways sharing one wallet. What needs no broker, worker or store (policy packs and the
policy command, the policy chain, admin roles, routing, breakers) is in tests/component/."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.integration.stack import (
    RunningStack,
    free_port,
    wait_for,
)

# A tenant of this run's own: the stack is shared with other modules (tests/conftest.py).
# The two checks here use the sim targets and the default settings only.
TENANT = f"acme-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def stack(shared_stack: RunningStack) -> RunningStack:
    return shared_stack


def push(stack: RunningStack, source: str, tenant: str = TENANT) -> httpx.Response:
    return stack.admin("POST", "/v1/admin/policies", json={"tenant": tenant, "source_yaml": source})


def pack(name: str, chain: str) -> str:
    return f"name: {name}\npolicies:\n  chain:\n" + textwrap.indent(
        textwrap.dedent(chain).strip() + "\n", "    "
    )


def client_for(stack: RunningStack, team: str, tenant: str = TENANT, **key: Any) -> openai.OpenAI:
    stack.fund(team, "5", tenant=tenant)
    secret = stack.create_key(team, tenant=tenant, **key)["key"]
    return openai.OpenAI(base_url=stack.base_url, api_key=secret, max_retries=0)


def spent_when_recorded(stack: RunningStack, where: str, calls: int) -> int:
    """Sum of cost_nanousd over the calls matching `where`, once all of them are in."""

    def spent() -> str | None:
        total, count = stack.sql(f"SELECT sum(cost_nanousd), count() FROM lineage WHERE {where}")[0]
        return total if count == str(calls) else None

    return int(wait_for(spent))


def test_cost_limit_stops_a_team_at_its_monthly_limit(stack: RunningStack) -> None:
    # sim-small: 150 nano-USD per prompt token, 600 per completion token; a call here
    # costs about $0.000016, so a $0.0001 limit lets a handful through.
    assert (
        push(
            stack, pack("tight", "- name: cost-limit\n  policy: {monthly_limit_usd: '0.0001'}")
        ).status_code
        == 201
    )
    client = client_for(stack, "growth", policy_pack="tight")
    outcomes = []
    for _ in range(15):
        try:
            client.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": "hi"}], max_tokens=24
            )
            outcomes.append("ok")
        except openai.APIStatusError as exc:
            outcomes.append(f"{exc.status_code} {exc.code}")
    assert outcomes[0] == "ok"
    assert outcomes[-1] == "402 cost_limit_exceeded"
    assert set(outcomes) == {"ok", "402 cost_limit_exceeded"}
    spent = spent_when_recorded(
        stack, f"team_id = 'growth' AND tenant_id = '{TENANT}'", len(outcomes)
    )
    assert 0 < spent <= 100_000  # the limit holds: no call pushed the month past it


@contextlib.contextmanager
def extra_gateways(stack: RunningStack, count: int) -> Iterator[list[str]]:
    """More gateway processes on the same broker (as a fleet runs); their base URLs."""
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for _ in range(count):
            port = free_port()
            env = {
                **stack.env,
                "GOVLEDGER_KAFKA_BOOTSTRAP": f"127.0.0.1:{stack.settings.broker_port}",
                "GOVLEDGER_GATEWAY_PORT": str(port),
            }
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "govledger", "gateway"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_for(functools.partial(_healthy, url), timeout_s=60, every_s=0.2)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_several_gateways_overspend_at_most_what_the_others_admit_before_they_hear(
    stack: RunningStack,
) -> None:
    """Each gateway refuses past the balance it has heard of, minus its own commitments;
    it cannot know what the others admitted in the last moments. The bound stated in
    docs/failures.md: overspend <= (gateways - 1) x the balance at the start of a burst, reached
    only when the whole burst lands before any settlement is heard. Measured here at its
    worst: every call of the burst in flight at once."""
    gateways = 3
    calls_per_gateway = 8
    price = 5 * 150 + 24 * 600  # sim-small, 'hi' (5 tokens), 24 completion tokens
    stack.fund("fleet", f"{4 * price / 1e9:.9f}", tenant=TENANT)  # room for four calls
    key = stack.create_key("fleet", tenant=TENANT)["key"]
    hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    with extra_gateways(stack, gateways - 1) as others:
        urls = [stack.settings.gateway_url, *others]
        clients = [openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) for url in urls]
        # Every gateway has heard of the funding before the burst.
        for url in urls:
            wait_for(functools.partial(_heard_balance, url, stack.token, 4 * price))

        def call(index: int) -> int:
            try:
                clients[index % gateways].chat.completions.create(
                    model="sim-small", messages=hi, max_tokens=24
                )
            except openai.APIStatusError as exc:
                return exc.status_code
            return 200

        with concurrent.futures.ThreadPoolExecutor(gateways * calls_per_gateway) as pool:
            statuses = list(pool.map(call, range(gateways * calls_per_gateway)))

    allowed = statuses.count(200)
    assert statuses.count(402) == len(statuses) - allowed
    spent = spent_when_recorded(stack, f"wallet_id = '{TENANT}/fleet'", len(statuses))
    funded = 4 * price
    overspend = max(0, spent - funded)
    print(
        f"\n{gateways} gateways, burst of {len(statuses)}: {allowed} admitted, "
        f"overspend {overspend} nano-USD = {overspend / price:.0f} calls"
    )
    assert spent == allowed * price
    assert allowed >= 4  # no gateway refuses what the wallet can pay
    assert overspend <= (gateways - 1) * funded


def _heard_balance(url: str, token: str, nanousd: int) -> bool:
    response = httpx.get(
        f"{url}/v1/admin/wallets/balance",
        params={"tenant": TENANT, "team": "fleet"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    return response.status_code == 200 and response.json()["balance_nanousd"] == nanousd
