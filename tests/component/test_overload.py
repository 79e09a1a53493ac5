"""Graceful overload (gateway/admission.py, gateway/loop_lag.py): a gateway whose event
loop runs late refuses calls past its lowered limit at once, 503 `overloaded` with
Retry-After, each refusal recorded in lineage like any other; once the loop is on time
again it admits as many calls as before, by itself.

The lag target is 30 ms (the default is 5 ms) and the injected slow loop blocks 100 ms at
a time, so that a machine busy with other work (a loaded CI runner, whose own lag is a
few ms) neither triggers the shedding nor keeps the limit from recovering."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import ClientResponse

from gateway.providers.base import ChatCall, Completion
from gateway.providers.sim import SimProvider
from tests.component.support import Component, running_component
from tests.scrape import parse, value

# Each blocking step of the slow loop: the lag timer fires this late, 3x the target.
HOG_BLOCK_S = 0.1


class GatedSim(SimProvider):
    """The sim provider, answering only once its gate opens: calls stay in flight for as
    long as a test needs them to."""

    def __init__(self) -> None:
        super().__init__(latency_ms=0, error_rate=0, chunk_tokens=4, completion_tokens=8)
        self.gate = asyncio.Event()

    async def complete(self, call: ChatCall) -> Completion:
        await self.gate.wait()
        return await super().complete(call)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Component]:
    async with running_component(
        tmp_path,
        admission_target_delay_ms=30,
        admission_interval_ms=100,
        admission_min_calls=1,
        admission_retry_after_s=2,
    ) as running:
        running.gateway.providers["sim"] = GatedSim()
        yield running


def gate(stack: Component) -> asyncio.Event:
    provider = stack.gateway.providers["sim"]
    assert isinstance(provider, GatedSim)
    return provider.gate


async def slow_loop(stop: asyncio.Event) -> None:
    """CPU-bound work in the gateway's own loop: it computes, yields once, computes
    again."""
    while not stop.is_set():
        until_s = time.perf_counter() + HOG_BLOCK_S
        while time.perf_counter() < until_s:
            pass
        await asyncio.sleep(0)


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def chat_call(stack: Component, secret: str, trace_id: str = "") -> ClientResponse:
    headers = {"Authorization": f"Bearer {secret}"}
    if trace_id:
        headers["traceparent"] = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    body = {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}
    response: ClientResponse = await stack.client.post(
        "/v1/chat/completions", json=body, headers=headers
    )
    return response


async def test_a_lagging_gateway_sheds_at_once_records_it_and_recovers(stack: Component) -> None:
    stack.publish_balance("overload", "5")
    secret = (await stack.create_key("overload"))["key"]
    admission = stack.gateway.admission
    assert admission.limit >= 3

    held = [asyncio.create_task(chat_call(stack, secret)) for _ in range(2)]
    await until(lambda: admission.in_flight == 2)  # both wait on the gated upstream
    stop = asyncio.Event()
    hog = asyncio.create_task(slow_loop(stop))
    try:
        # The sampler saw the lag last an interval with more than the floor in flight.
        await until(lambda: admission.limit <= 1)
        trace_id = secrets.token_hex(16)
        refused = await chat_call(stack, secret, trace_id)
        # At once: answered while the upstream still holds the calls in flight.
        assert not any(call.done() for call in held)
    finally:
        stop.set()
        await hog
        gate(stack).set()
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "2"
    error = (await refused.json())["error"]
    assert (error["code"], error["type"]) == ("overloaded", "server_error")
    row = stack.lineage_of(trace_id)
    assert (row.http_status, row.error_code, row.decision) == (503, "overloaded", "rejected")
    assert row.attempts == ()
    assert refused.headers["X-Govledger-Event-Id"] == row.event_id  # the reply names it
    assert [(await call).status for call in held] == [200, 200]

    # The loop is on time again: callers that keep the limit reached raise it back.
    async def three_at_once() -> list[int]:
        gate(stack).clear()
        calls = [asyncio.create_task(chat_call(stack, secret)) for _ in range(3)]
        await until(lambda: admission.in_flight + sum(c.done() for c in calls) == 3)
        gate(stack).set()
        return [(await call).status for call in calls]

    deadline = time.monotonic() + 20
    while (statuses := await three_at_once()) != [200, 200, 200]:
        assert set(statuses) <= {200, 503}
        assert time.monotonic() < deadline, f"still shedding: {statuses}"
        await asyncio.sleep(0.1)  # an interval with the limit reached, under the target

    scraped = parse(await (await stack.client.get("/metrics")).text())
    assert value(scraped, "govledger_gateway_admission_refusals_total") >= 1
    assert value(scraped, "govledger_gateway_refusals_total", reason="overload") >= 1
