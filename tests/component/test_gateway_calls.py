"""Calls through the gateway in-process, driven with the official openai SDK (async) and
raw HTTP: error shapes, typed SDK errors, funding refusals, key scopes, rate limits,
expiry, a cut stream and the fallback trail. Each record is read from the in-memory
lineage publisher where the integration tier read its row from ClickHouse.

Moved from tests/integration/test_pipeline.py (same assertions)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.catalogue import SIM_TARGETS
from schemas.records import KeyIssued
from tests.component.support import (
    CUT_STREAM_MODEL,
    FAILING_MODEL,
    FLAKY_MODEL,
    Component,
    running_component,
)

SIM_SMALL = next(t for t in SIM_TARGETS if t.model == "sim-small")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Component]:
    """Settings as the integration stack had them (tests/integration/conftest.py)."""
    async with running_component(
        tmp_path,
        fallbacks=f"{FLAKY_MODEL}=sim-small",
        retry_backoff_ms=10,
        upstream_timeout_s=2,
        max_body_bytes=65536,
    ) as running:
        yield running


def traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("malformed_json", 400, "invalid_json"),
        ("invalid_request", 400, "invalid_request"),
        ("missing_key", 401, "missing_api_key"),
        ("unknown_key", 401, "invalid_api_key"),
        ("revoked_key", 401, "key_revoked"),
        ("unknown_model", 404, "model_not_found"),
        ("body_too_large", 413, "request_too_large"),
        ("upstream_failure", 502, "upstream_error"),
    ],
)
async def test_each_error_is_openai_shaped_and_recorded(
    stack: Component, case: str, status: int, code: str
) -> None:
    key = await stack.create_key("errors")
    stack.publish_balance("errors", "1")
    secret = key["key"]
    body: bytes = b'{"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}'
    if case == "malformed_json":
        body = b'{"model": "sim-small", "messages": ['
    elif case == "invalid_request":
        body = b'{"model": "sim-small", "messages": "not a list"}'
    elif case == "missing_key":
        secret = ""
    elif case == "unknown_key":
        secret = "gk_" + secrets.token_urlsafe(32)
    elif case == "revoked_key":
        revoked = await stack.admin("POST", f"/v1/admin/keys/{key['key_id']}/revoke", json={})
        assert revoked.status == 200
    elif case == "unknown_model":
        body = b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}'
    elif case == "body_too_large":
        filler = "x" * 70_000
        body = (
            b'{"model": "sim-small", "messages": [{"role": "user", "content": "'
            + filler.encode()
            + b'"}]}'
        )
    elif case == "upstream_failure":
        body = (
            b'{"model": "' + FAILING_MODEL.encode() + b'", "messages": '
            b'[{"role": "user", "content": "hi"}]}'
        )
    trace_id, header = traceparent()
    headers = {"traceparent": header, "Content-Type": "application/json"}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    response = await stack.client.post("/v1/chat/completions", data=body, headers=headers)

    assert response.status == status
    error = (await response.json())["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["type"]
    row = stack.lineage_of(trace_id)
    assert (row.http_status, row.error_code) == (status, code)
    assert row.decision == ("failed" if status == 502 else "rejected")
    assert row.cost_nanousd == 0


async def test_sdk_raises_typed_errors(stack: Component) -> None:
    key = await stack.create_key("sdk-errors")
    with pytest.raises(openai.AuthenticationError):
        await stack.sdk("gk_wrong").chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.NotFoundError):
        await stack.sdk(key["key"]).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "hi"}]
        )
    models = await stack.sdk(key["key"]).models.list()
    assert {"sim-small", "sim-large"} <= {m.id for m in models.data}


async def test_unfunded_wallet_is_refused_with_402(stack: Component) -> None:
    key = await stack.create_key("unfunded")
    with pytest.raises(openai.APIStatusError) as refused:
        await stack.sdk(key["key"]).chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.status_code == 402
    assert refused.value.code == "budget_exhausted"


async def test_key_scopes_and_rate_limits_are_enforced_and_recorded(stack: Component) -> None:
    response = await stack.admin(
        "POST",
        "/v1/admin/keys",
        json={"team": "scoped", "models": ["sim-large"], "requests_per_minute": 2},
    )
    assert response.status == 201, await response.text()
    key = await response.json()
    stack.publish_balance("scoped", "1")
    sdk = stack.sdk(key["key"])
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "scoped"}]

    trace_id, header = traceparent()
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await sdk.chat.completions.create(
            model="sim-small", messages=messages, extra_headers={"traceparent": header}
        )
    assert denied.value.code == "model_not_allowed"
    row = stack.lineage_of(trace_id)
    assert (row.http_status, row.error_code) == (403, "model_not_allowed")
    # the steps evaluated, up to the one that refused
    assert row.policies_applied == ("auth", "key-scopes")

    for _ in range(2):  # the limit: two a minute
        await sdk.chat.completions.create(model="sim-large", messages=messages)
    with pytest.raises(openai.RateLimitError) as limited:
        await sdk.chat.completions.create(model="sim-large", messages=messages)
    assert limited.value.code == "rate_limited"
    assert int(limited.value.response.headers["Retry-After"]) >= 1

    stored = [
        (r.models, r.requests_per_minute)
        for r in stack.control.of_type(KeyIssued)
        if r.key_id == key["key_id"]
    ]
    assert stored == [(("sim-large",), 2)]


async def test_an_expired_key_is_refused_with_its_own_code(stack: Component) -> None:
    stack.publish_balance("expiring", "1")
    response = await stack.admin(
        "POST", "/v1/admin/keys", json={"team": "expiring", "expires_in": "3s"}
    )
    assert response.status == 201, await response.text()
    key = await response.json()
    sdk = stack.sdk(key["key"])
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "before expiry"}]
    await sdk.chat.completions.create(model="sim-small", messages=messages)

    await asyncio.sleep(max(0.0, key["expires_at"] / 1000 - time.time()) + 0.2)
    with pytest.raises(openai.AuthenticationError) as expired:
        await sdk.chat.completions.create(model="sim-small", messages=messages)
    assert expired.value.code == "key_expired"


async def test_a_stream_the_upstream_breaks_off_is_charged_for_what_it_produced(
    stack: Component,
) -> None:
    key = await stack.create_key("cut")
    stack.publish_balance("cut", "1")
    trace_id, header = traceparent()
    received: list[str] = []

    async def read_stream() -> None:
        stream = await stack.sdk(key["key"]).chat.completions.create(
            model=CUT_STREAM_MODEL,
            messages=[{"role": "user", "content": "tell me everything"}],
            stream=True,
            extra_headers={"traceparent": header},
        )
        async for chunk in stream:
            received.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises(openai.APIError):
        await read_stream()
    assert "".join(received).startswith("The first part of an answer")
    row = stack.lineage_of(trace_id)
    assert (row.http_status, row.error_code, row.decision, row.usage_source) == (
        502,
        "upstream_error",
        "failed",
        "estimated",
    )
    assert row.completion_tokens > 0
    assert row.cost_nanousd > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_a_failing_target_is_retried_then_falls_back_and_the_trail_is_recorded(
    stack: Component, stream: bool
) -> None:
    key = await stack.create_key("fallback")
    stack.publish_balance("fallback", "1")
    trace_id, header = traceparent()
    sdk = stack.sdk(key["key"])
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "answer from wherever works"}
    ]
    if stream:
        chunks = await sdk.chat.completions.create(
            model=FLAKY_MODEL, messages=messages, stream=True, extra_headers={"traceparent": header}
        )
        assert "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
    else:
        reply = await sdk.chat.completions.create(
            model=FLAKY_MODEL, messages=messages, extra_headers={"traceparent": header}
        )
        assert reply.choices[0].message.content
    row = stack.lineage_of(trace_id)
    # One retry of the primary (GOVLEDGER_UPSTREAM_RETRIES=1), then the fallback answers.
    assert (row.http_status, row.selection_reason, row.provider, row.model_selected) == (
        200,
        "fallback",
        "sim",
        "sim-small",
    )
    assert [(a.provider, a.status) for a in row.attempts] == [
        ("openai", 500),
        ("openai", 500),
        ("sim", 200),
    ]
    assert row.cost_nanousd > 0
