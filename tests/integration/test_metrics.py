"""`/metrics` of every process of a running stack (the shared one), scraped before and
after calls and one record nobody can read: the gateway counts and times the calls, the
sink the rows it stored and the record it dead-lettered, the query API its request, the
worker the dead letter, its fold lag and its consumer lag (docs/metrics.md)."""

from __future__ import annotations

import asyncio
import secrets

import httpx
import openai
import pytest
from aiokafka import AIOKafkaProducer

from schemas import authn
from tests.integration.stack import RunningStack, wait_for
from tests.scrape import Samples, families, moved, parse, value

pytestmark = pytest.mark.integration

TENANT = f"metrics-{secrets.token_hex(3)}"
CALLS = 3
GARBAGE = f"metrics garbage {secrets.token_hex(4)}".encode()


@pytest.fixture(scope="module")
def stack(shared_stack: RunningStack) -> RunningStack:
    return shared_stack


def urls(stack: RunningStack) -> dict[str, str]:
    worker_port = stack.env["GOVLEDGER_WORKER_WEB_PORT"]
    return {
        "gateway": stack.settings.gateway_url,
        "query": stack.settings.query_url,
        "worker": f"http://127.0.0.1:{worker_port}",
    }


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def publish_garbage(stack: RunningStack) -> None:
    """One lineage record from a registered gateway that is not a record (dead-lettered
    by the sink and by the worker's intake, once each)."""

    async def produce() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=stack.stack.bootstrap, acks="all", enable_idempotence=False
        )
        await producer.start()
        try:
            keyring = authn.installed()
            assert keyring is not None, "the stack fixture installs its keyring"
            credential = keyring.credential("gateway", "gateway-metrics")
            await producer.send_and_wait(
                "govledger.lineage",
                GARBAGE,
                key=TENANT.encode(),
                headers=credential.headers(GARBAGE),
            )
        finally:
            await producer.stop()

    asyncio.run(produce())


def test_every_process_exports_metrics_that_move_with_the_calls(stack: RunningStack) -> None:
    key = stack.create_key("metrics", tenant=TENANT)
    stack.fund("metrics", "1", tenant=TENANT)
    wait_for(lambda: stack.balance_nanousd("metrics", tenant=TENANT) > 0)
    where = urls(stack)
    before = {service: scrape(url) for service, url in where.items()}

    sdk = openai.OpenAI(base_url=stack.base_url, api_key=key["key"], max_retries=0)
    for _ in range(CALLS):
        sdk.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "hi"}])
    publish_garbage(stack)
    stack.sql("SELECT 1")  # one query API request

    seen: dict[str, object] = {}  # what the last look found, for the failure message

    def settled() -> dict[str, Samples] | None:
        now = {"query": scrape(where["query"]), "worker": scrape(where["worker"])}
        sink_rows = moved(
            before["query"], now["query"], "govledger_sink_rows_total", table="lineage"
        )
        dead = "govledger_dead_letters_total"
        sink_dead = moved(before["query"], now["query"], dead, service="sink")
        worker_dead = moved(before["worker"], now["worker"], dead, service="streams")
        folded = value(now["worker"], "govledger_processor_fold_lag_seconds", processor="wallets")
        lag = "govledger_consumer_lag"
        lagging = {dict(labels)["service"] for name, labels in now["worker"] if name == lag} == {
            "streams",
            "streams-agents",
        }  # the intake's and the Faust agents' partitions
        # At least: this stack is shared, and a row another module's gateway resends from
        # its outbox may land meanwhile (exactly once per call is checked in the store).
        done = sink_rows >= CALLS and (sink_dead, worker_dead) == (1, 1)
        done = done and folded > 0 and lagging
        seen.update(sink_rows=sink_rows, sink_dead=sink_dead, worker_dead=worker_dead)
        seen.update(fold_lag=folded, both_lags=lagging)
        return now if done else None

    try:
        # (30 s: under the parallel suite, settling once took more than 20.)
        settled_now = wait_for(settled, timeout_s=30, every_s=0.2)
    except AssertionError as exc:
        raise AssertionError(f"metrics did not settle: {seen}") from exc
    after = {**settled_now, "gateway": scrape(where["gateway"])}

    gateway = (before["gateway"], after["gateway"])
    call = {"route": "chat.completions", "model": "sim-small", "provider": "sim"}
    assert moved(*gateway, "govledger_gateway_calls_total", status="200", code="", **call) == CALLS
    assert moved(*gateway, "govledger_gateway_call_duration_seconds_count", **call) == CALLS
    assert moved(*gateway, "govledger_gateway_overhead_seconds_count") == CALLS
    assert moved(*gateway, "govledger_lineage_emit_duration_seconds_count") == CALLS
    attempts = "govledger_gateway_upstream_attempts_total"
    assert moved(*gateway, attempts, provider="sim", outcome="ok") == CALLS
    assert {"govledger_lineage_outbox_depth", "govledger_gateway_breaker_state"} <= families(
        after["gateway"]
    )

    query = (before["query"], after["query"])
    assert moved(*query, "govledger_query_requests_total", route="/", status="200") == 1
    assert moved(*query, "govledger_query_duration_seconds_count", route="/") == 1
    assert moved(*query, "govledger_sink_insert_duration_seconds_count", table="lineage") >= 1
    dead = "govledger_dead_letters_total"
    assert moved(*query, dead, service="sink", reason="undecodable") == 1
    assert value(after["query"], "govledger_consumer_lag", service="sink") >= 0
    assert "govledger_consumer_lag" in families(after["query"])

    worker = (before["worker"], after["worker"])
    assert moved(*worker, dead, service="streams", reason="undecodable") == 1
    # Folded seconds after the calls, not minutes.
    assert (
        0 < value(after["worker"], "govledger_processor_fold_lag_seconds", processor="wallets") < 60
    )
    assert ("govledger_escalations_open", frozenset({("priority", "P1")})) in after["worker"]
    # Each call's row is in the store once (the sink's counter above may include others').
    stored = f"SELECT count(), uniqExact(event_id) FROM lineage WHERE tenant_id = '{TENANT}'"
    assert stack.sql(stored) == [[str(CALLS), str(CALLS)]]
