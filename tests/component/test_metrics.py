"""The gateway's `/metrics` (docs/metrics.md), scraped as Prometheus scrapes it, before and
after calls: each call moves its counters and histograms by one, refusals count under
their reason, a fallback shows its retries and its move, and no label takes a value the
caller made up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.views import LocalViews
from tests.component.support import (
    FLAKY_MODEL,
    Component,
    running_component,
    running_query_api,
)
from tests.scrape import Samples, moved, parse, value

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CHAT = "chat.completions"
STRICT_PACK = (
    "name: strict\npolicies:\n  chain:\n"
    "    - name: content-filter\n"
    "      policy: {deny: [wire transfer], action: block}\n"
)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Component]:
    async with running_component(
        tmp_path,
        fallbacks=f"{FLAKY_MODEL}=sim-small",
        retry_backoff_ms=10,
        metrics_tenant_labels_max=1,
    ) as running:
        yield running


async def scrape(stack: Component) -> Samples:
    response = await stack.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(await response.text())


async def test_answered_calls_move_counters_and_histograms_by_one(stack: Component) -> None:
    sdk = await stack.sdk_for("metrics-ok")
    before = await scrape(stack)
    await sdk.chat.completions.create(model="sim-small", messages=HI)
    chunks = await sdk.chat.completions.create(model="sim-small", messages=HI, stream=True)
    assert [c async for c in chunks]
    after = await scrape(stack)

    call = {"route": CHAT, "model": "sim-small", "provider": "sim"}
    ok = {**call, "status": "200", "code": ""}
    assert moved(before, after, "govledger_gateway_calls_total", **ok) == 2
    assert moved(before, after, "govledger_gateway_call_duration_seconds_count", **call) == 2
    assert moved(before, after, "govledger_gateway_call_duration_seconds_sum", **call) > 0
    # Only the streamed call has a first token.
    assert moved(before, after, "govledger_gateway_ttft_seconds_count", **call) == 1
    assert moved(before, after, "govledger_gateway_overhead_seconds_count", route=CHAT) == 2
    assert moved(before, after, "govledger_lineage_emit_duration_seconds_count") == 2
    attempts = "govledger_gateway_upstream_attempts_total"
    assert moved(before, after, attempts, provider="sim", outcome="ok") == 2
    assert moved(before, after, "govledger_gateway_refusals_total") == 0
    tenant = "govledger_gateway_tenant_calls_total"
    assert moved(before, after, tenant, tenant="default") == 2
    cost = "govledger_gateway_tenant_cost_nanousd_total"
    recorded = sum(r.cost_nanousd for r in stack.lineage.lineage()[-2:])
    assert moved(before, after, cost, tenant="default") == recorded > 0
    assert value(after, "govledger_gateway_breaker_state", target="sim/sim-small") == 0
    assert value(after, "govledger_gateway_calls_in_flight") == 0


async def test_refusals_count_under_their_reason(stack: Component) -> None:
    assert (
        await stack.admin(
            "POST", "/v1/admin/policies", json={"tenant": "default", "source_yaml": STRICT_PACK}
        )
    ).status == 201
    unfunded = stack.sdk((await stack.create_key("metrics-unfunded"))["key"])
    strict = await stack.sdk_for("metrics-strict", policy_pack="strict")
    before = await scrape(stack)
    with pytest.raises(openai.APIStatusError) as budget:
        await unfunded.chat.completions.create(model="sim-small", messages=HI)
    assert budget.value.code == "budget_exhausted"
    with pytest.raises(openai.BadRequestError) as policy:
        await strict.chat.completions.create(
            model="sim-small",
            messages=[{"role": "user", "content": "start a wire transfer"}],
        )
    assert policy.value.code == "content_blocked"
    after = await scrape(stack)

    refusals = "govledger_gateway_refusals_total"
    assert moved(before, after, refusals, reason="budget") == 1
    assert moved(before, after, refusals, reason="policy") == 1
    assert moved(before, after, refusals) == 2
    calls = "govledger_gateway_calls_total"
    refused = {"status": "402", "code": "budget_exhausted", "model": "sim-small"}
    assert moved(before, after, calls, **refused) == 1
    assert moved(before, after, calls, status="400", code="content_blocked") == 1
    # Refused before any upstream: no attempt.
    assert moved(before, after, "govledger_gateway_upstream_attempts_total") == 0


async def test_a_fallback_counts_its_failed_attempts_its_retry_and_its_move(
    stack: Component,
) -> None:
    sdk = await stack.sdk_for("metrics-fallback")
    before = await scrape(stack)
    reply = await sdk.chat.completions.create(model=FLAKY_MODEL, messages=HI)
    assert reply.choices[0].message.content
    after = await scrape(stack)

    # The primary (openai) fails twice (one retry), then the fallback (sim) answers.
    attempts = "govledger_gateway_upstream_attempts_total"
    assert moved(before, after, attempts, provider="openai", outcome="http_5xx") == 2
    assert moved(before, after, attempts, provider="sim", outcome="ok") == 1
    assert moved(before, after, "govledger_gateway_retries_total", provider="openai") == 1
    fallbacks = "govledger_gateway_fallbacks_total"
    assert moved(before, after, fallbacks, from_provider="openai", to_provider="sim") == 1
    assert moved(before, after, fallbacks) == 1
    # Counted under the model that answered.
    calls = "govledger_gateway_calls_total"
    assert moved(before, after, calls, model="sim-small", provider="sim", status="200") == 1


async def test_labels_are_bounded_whatever_the_caller_sends(stack: Component) -> None:
    made_up = "gpt-" + "x" * 40
    first = await stack.sdk_for("metrics-first", tenant="tenant-a")
    second = await stack.sdk_for("metrics-second", tenant="tenant-b")
    before = await scrape(stack)
    with pytest.raises(openai.NotFoundError):
        await first.chat.completions.create(model=made_up, messages=HI)
    await first.chat.completions.create(model="sim-small", messages=HI)
    await second.chat.completions.create(model="sim-small", messages=HI)
    response = await stack.client.get("/metrics")
    text = await response.text()
    after = parse(text)

    assert made_up not in text
    calls = "govledger_gateway_calls_total"
    assert moved(before, after, calls, model="other", code="model_not_found") == 1
    # GOVLEDGER_METRICS_TENANT_LABELS_MAX=1: the first tenant seen keeps its label.
    tenant = "govledger_gateway_tenant_calls_total"
    assert moved(before, after, tenant, tenant="tenant-a") == 2
    assert moved(before, after, tenant, tenant="other") == 1
    assert "tenant-b" not in text
    for key_or_user in ("key_id", "user_id", "team"):
        assert f'{key_or_user}="' not in text


async def test_metrics_off_serve_no_route_and_calls_still_work(tmp_path: Path) -> None:
    async with running_component(tmp_path, metrics_enabled=False) as stack:
        assert (await stack.client.get("/metrics")).status == 404
        sdk = await stack.sdk_for("metrics-off")
        reply = await sdk.chat.completions.create(model="sim-small", messages=HI)
        assert reply.choices[0].message.content


async def test_the_query_api_counts_requests_by_declared_route_and_status(
    tmp_path: Path,
) -> None:
    async with running_query_api(tmp_path, LocalViews()) as client:
        before = parse(await (await client.get("/metrics")).text())
        assert (await client.get("/ping")).status == 200
        assert (await client.get("/", params={"query": "SELECT 1"})).status == 401
        assert (await client.get("/no/such/route/" + "x" * 50)).status == 404
        after = parse(await (await client.get("/metrics")).text())

    requests = "govledger_query_requests_total"
    assert moved(before, after, requests, route="/ping", status="200") == 1
    assert moved(before, after, requests, route="/", status="401") == 1
    # An unmatched path is `other`: a scanner cannot add series.
    assert moved(before, after, requests, route="other", status="404") == 1
    assert moved(before, after, "govledger_query_duration_seconds_count", route="/ping") == 1
