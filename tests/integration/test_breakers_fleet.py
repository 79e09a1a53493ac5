"""Fleet-wide circuit breakers on the running stack: the breakers processor folds every
gateway's attempts, opens a failing target for the whole fleet once, alerts once, and
closes it once a probe succeeds; a gateway that never called the target routes around it
as soon as it hears."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from aiokafka import AIOKafkaProducer
from openai.types.chat import ChatCompletionMessageParam

from schemas import authn, codec
from schemas.records import Attempt, LineageRecord
from schemas.topics import LINEAGE
from tests.integration.stack import (
    RunningStack,
    free_port,
    running_stack,
    stack_environ,
    wait_for,
)
from tests.integration.upstream import ECHO_MODEL, OUTAGE_MODEL, fake_upstream

TENANT = "fleet-co"
THRESHOLD = 3
RESET_S = 8  # long enough to see the second gateway route around the open target
TARGET = f"provider = 'openai' AND model = '{OUTAGE_MODEL}'"
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with fake_upstream({"unused"}, "unused-cut") as upstream:
        env = stack_environ(
            tmp_path_factory.mktemp("govledger-breakers-fleet"),
            GOVLEDGER_UPSTREAM_BASE_URL=upstream,
            GOVLEDGER_UPSTREAM_MODELS=f"{ECHO_MODEL},{OUTAGE_MODEL}",
            GOVLEDGER_FALLBACKS=f"{OUTAGE_MODEL}=sim-small",
            GOVLEDGER_RETRY_BACKOFF_MS="10",
            GOVLEDGER_UPSTREAM_RETRIES="0",
            GOVLEDGER_BREAKER_FAILURE_THRESHOLD=str(THRESHOLD),
            GOVLEDGER_BREAKER_RESET_TIMEOUT_S=str(RESET_S),
        )
        with running_stack(env) as running:
            running.upstream_url = upstream  # type: ignore[attr-defined]
            yield running


@contextlib.contextmanager
def second_gateway(stack: RunningStack) -> Iterator[str]:
    """Another gateway process on the same broker, as a fleet runs; its base URL."""
    port = free_port()
    env = {
        **stack.env,
        "GOVLEDGER_KAFKA_BOOTSTRAP": f"127.0.0.1:{stack.settings.broker_port}",
        "GOVLEDGER_GATEWAY_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "govledger", "gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url), timeout_s=60, every_s=0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def outage(stack: RunningStack, state: str) -> None:
    response = httpx.post(f"{stack.upstream_url}/outage/{state}")  # type: ignore[attr-defined]
    assert response.status_code == 200


def call(client: openai.OpenAI, trace_id: str) -> None:
    client.chat.completions.create(
        model=OUTAGE_MODEL,
        messages=HI,
        extra_headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )


def trail(stack: RunningStack, trace_id: str) -> list[str]:
    """How the gateway routed a call: selection reason, model served, attempts' statuses."""
    rows: list[list[str]] = wait_for(
        lambda: stack.sql(
            "SELECT selection_reason, model_selected, toString(attempts.status) FROM lineage "
            f"WHERE trace_id = '{trace_id}'"
        )
    )
    assert len(rows) == 1, rows
    return rows[0]


def rows_when(stack: RunningStack, query: str, count: int) -> list[list[str]]:
    """The query's rows once it returns `count` of them."""
    return list(wait_for(lambda: rows if len(rows := stack.sql(query)) == count else None))


def test_a_target_failing_on_one_gateway_is_routed_around_by_the_whole_fleet(
    stack: RunningStack,
) -> None:
    stack.fund("oncall", "5", tenant=TENANT)
    key = stack.create_key("oncall", tenant=TENANT)["key"]
    # The funding is folded and heard before the second gateway starts and reads it.
    wait_for(lambda: stack.balance_nanousd("oncall", tenant=TENANT) > 0)
    first = openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)
    states = (
        "SELECT state, toUnixTimestamp64Milli(open_until) FROM breaker_state "
        f"WHERE {TARGET} ORDER BY occurred_at"
    )
    alerts = (
        "SELECT event_type, before, after FROM alerts "
        f"WHERE {TARGET} AND event_type LIKE 'circuit.%' ORDER BY occurred_at"
    )
    traces = (f"{i:032x}" for i in range(0xF00, 0xFFF))

    with second_gateway(stack) as url:
        other = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)

        # (1) The target fails on the first gateway until its breakers open: this
        # gateway's own, and the fleet's, which the processor publishes with an alert.
        outage(stack, "on")
        failing = [next(traces) for _ in range(THRESHOLD)]
        for trace_id in failing:
            call(first, trace_id)
        assert [trail(stack, t) for t in failing] == [["fallback", "sim-small", "[503,200]"]] * 3
        [[state, open_until]] = rows_when(stack, states, 1)
        assert state == "open"
        assert rows_when(stack, alerts, 1) == [["circuit.opened", "closed", "open"]]

        # (2) The second gateway never called the target; it heard the fleet's state and
        # skips the target at once, without a failure of its own.
        assert time.time() * 1000 < int(open_until), "too slow to see the fleet breaker open"
        skipped = next(traces)
        call(other, skipped)
        assert trail(stack, skipped) == ["breaker_open", "sim-small", "[0,200]"]

        # (3) The target recovers; once the reset timeout has passed, a probe goes to it,
        # succeeds, and closes the fleet breaker: calls on either gateway reach it again.
        outage(stack, "off")

        def served_by_the_primary() -> bool:
            probe = next(traces)
            call(first, probe)
            return trail(stack, probe)[0] == "catalogue"

        wait_for(served_by_the_primary, timeout_s=RESET_S + 10, every_s=0.5)
        assert [row[0] for row in rows_when(stack, states, 2)] == ["open", "closed"]
        assert rows_when(stack, alerts, 2) == [
            ["circuit.opened", "closed", "open"],
            ["circuit.closed", "half_open", "closed"],
        ]
        served = next(traces)
        call(other, served)
        assert trail(stack, served) == ["catalogue", OUTAGE_MODEL, "[200]"]

    # Exactly once each: nothing more arrives for the target.
    assert len(stack.sql(alerts)) == 2
    assert len(stack.sql(states)) == 2


def test_records_the_processor_cannot_read_are_dead_lettered_with_the_reason(
    stack: RunningStack,
) -> None:
    keyring = authn.installed()
    assert keyring is not None, "the stack fixture installs its keyring"
    # Signed by a registered gateway: authentic, and still unreadable.
    credential = keyring.credential("gateway", "gateway-garbage")

    async def produce(topic: str, key: bytes, value: bytes) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=stack.stack.bootstrap, acks="all", enable_idempotence=False
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key, headers=credential.headers(value))
        finally:
            await producer.stop()

    by_target = "govledger-streams-breakers-by-target"
    asyncio.run(produce(LINEAGE.name, TENANT.encode(), b"breakers: not avro"))
    # A forward carries a batch's observations of its target; a whole record is not one.
    asyncio.run(produce(by_target, b"openai/outage-primary", codec.encode(lineage_record())))

    def dead_letters() -> list[list[str]] | None:
        rows = stack.sql(
            "SELECT consumer, origin_topic, error FROM dead_letters "
            "WHERE consumer IN ('streams', 'streams.breakers') AND "
            f"(origin_topic = '{by_target}' OR payload = 'breakers: not avro') "
            "ORDER BY consumer"
        )
        return rows if len(rows) == 2 else None

    # The worker's intake dead-letters what does not decode, once for every processor.
    [lineage, forward] = wait_for(dead_letters)
    assert lineage[:2] == ["streams", LINEAGE.name] and "C3 01" in lineage[2]
    assert forward[:2] == ["streams.breakers", by_target]
    assert forward[2].startswith("not a batch of breaker observations")


def lineage_record() -> LineageRecord:
    return LineageRecord(
        event_id="0190b6a8-0000-7000-8000-000000000001",
        event_type=LineageRecord.event_type_name,
        occurred_at=int(time.time() * 1000),
        tenant_id=TENANT,
        producer_id="gateway-test",
        seq=1,
        trace_id="ab" * 16,
        span_id="cd" * 8,
        team_id="oncall",
        key_id="k",
        wallet_id=f"{TENANT}/oncall",
        region="local",
        model_requested=OUTAGE_MODEL,
        model_selected=OUTAGE_MODEL,
        provider="openai",
        selection_reason="catalogue",
        attempts=(Attempt("openai", OUTAGE_MODEL, 503, 1.0, "http_5xx"),),
        decision="failed",
        prompt_tokens=0,
        completion_tokens=0,
        usage_source="none",
        cost_nanousd=0,
        reserved_nanousd=0,
        latency_ms=1.0,
        gateway_overhead_ms=0.1,
        http_status=503,
        stream=False,
        request_sha256="0" * 64,
    )
