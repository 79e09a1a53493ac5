"""Hostile input to the pass-through: the gateway forwards the caller's body to an
OpenAI-compatible upstream, so what it forwards is the attack surface. The body limit
holds, a body that is not a JSON object is refused, nesting and member counts are
bounded (anywhere, in fields the gateway does not know too), the caller's headers never
reach the upstream (auth, cookies, hop-by-hop, forwarding), the body reaches the upstream
as the gateway validated it (no duplicate key read two ways), the caller cannot switch
off the usage the call is billed by, and the PII policy redacts every forwarded text.

Servers as in test_gateway_input.py (gateway_fixtures.py), the upstream the component
tier's recording OpenAI-compatible one (tests/component/openai_upstream.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.component.openai_upstream import FAITHFUL_MODEL, OpenAIUpstream
from tests.component.support import CAPTURE_MODEL
from tests.security.gateway_fixtures import (
    JSON,
    MARK,
    SECRET,
    Served,
    assert_json_error,
    bearer,
    chat_body,
    request,
    running_gateway,
    send,
)

CHAT = "/v1/chat/completions"
MODELS = f"{CAPTURE_MODEL},{FAITHFUL_MODEL}"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Served]:
    upstream = OpenAIUpstream()
    async with running_gateway(
        tmp_path, with_pii_pack=True, upstream=upstream, upstream_models=MODELS
    ) as served:
        yield served


def upstream_of(served: Served) -> OpenAIUpstream:
    assert isinstance(served.upstream, OpenAIUpstream)
    return served.upstream


def nested(depth: int) -> Any:
    value: Any = MARK
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


async def test_the_callers_headers_never_reach_the_upstream(gateway: Served) -> None:
    hostile = [
        b"Proxy-Authorization: Basic " + MARK.encode(),
        b"Cookie: session=" + MARK.encode(),
        b"X-Api-Key: " + MARK.encode(),
        b"Api-Key: " + MARK.encode(),
        b"OpenAI-Organization: org-" + MARK.encode(),
        b"OpenAI-Project: proj-" + MARK.encode(),
        b"X-Forwarded-For: 10.0.0." + MARK.encode(),
        b"Forwarded: for=" + MARK.encode(),
        b"Keep-Alive: timeout=" + MARK.encode(),
        b"TE: trailers",
        b"Upgrade: h2c",
        b"X-" + MARK.encode() + b": 1",
    ]
    body = chat_body(model=FAITHFUL_MODEL)
    response = await send(
        gateway.host, gateway.port, request("POST", CHAT, [bearer(), JSON, *hostile], body)
    )
    assert response.status == 200, response.body
    upstream = upstream_of(gateway)
    (headers,) = upstream.headers
    seen = repr(list(headers.multi_items())) + upstream.raw_bodies[0].decode()
    assert MARK not in seen
    assert SECRET not in seen
    assert headers["authorization"] == "Bearer upstream-key"
    for name in ("te", "upgrade", "keep-alive", "cookie", "x-api-key", "forwarded"):
        assert name not in headers, name


async def test_fields_named_like_headers_or_keys_stay_in_the_body(gateway: Served) -> None:
    smuggled = {"extra_headers": {"X-Evil": MARK}, "headers": {"Authorization": MARK}}
    body = chat_body(model=FAITHFUL_MODEL, **smuggled)
    response = await send(gateway.host, gateway.port, request("POST", CHAT, [bearer(), JSON], body))
    assert response.status == 200, response.body
    upstream = upstream_of(gateway)
    assert "x-evil" not in upstream.headers[0]
    assert upstream.headers[0]["authorization"] == "Bearer upstream-key"
    assert upstream.received[0]["extra_headers"] == {"X-Evil": MARK}  # JSON to the upstream


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"future": nested(40)}, "future[0].k[0].k[0]"),
        ({"future": list(range(5_000))}, "future"),
        ({"metadata": {str(i): "v" for i in range(5_000)}}, "metadata"),
        ({"messages": [{"role": "user", "content": "hi", "x": nested(40)}]}, "messages[0].x"),
    ],
    ids=["deep unknown field", "wide array", "wide object", "deep message field"],
)
async def test_nesting_and_members_are_bounded_anywhere_in_the_body(
    gateway: Served, fields: dict[str, Any], param: str
) -> None:
    """`param` names where: the start of the path to the fault."""
    body = chat_body(model=FAITHFUL_MODEL, **fields)
    response = await send(gateway.host, gateway.port, request("POST", CHAT, [bearer(), JSON], body))
    error = assert_json_error(response, 400, "invalid_request")
    assert error["param"].startswith(param)
    assert upstream_of(gateway).raw_bodies == []
    (record,) = gateway.lineage.lineage()
    assert (record.http_status, record.error_code) == (400, "invalid_request")


async def test_nesting_past_the_json_parser_limit_is_invalid_json(gateway: Served) -> None:
    body = b'{"model": "faithful", "messages": [], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await send(gateway.host, gateway.port, request("POST", CHAT, [bearer(), JSON], body))
    assert_json_error(response, 400, "invalid_json")
    assert upstream_of(gateway).raw_bodies == []


async def test_the_body_limit_holds_for_fields_the_gateway_does_not_know(tmp_path: Path) -> None:
    upstream = OpenAIUpstream()
    async with running_gateway(
        tmp_path, upstream=upstream, upstream_models=MODELS, max_body_bytes=4_096
    ) as served:
        body = chat_body(model=FAITHFUL_MODEL, future="x" * 5_000)
        response = await send(
            served.host, served.port, request("POST", CHAT, [bearer(), JSON], body)
        )
        assert_json_error(response, 413, "request_too_large")
        assert upstream.raw_bodies == []


@pytest.mark.parametrize("body", [b"[]", b'"chat"', b"1", b"null", b"true", b"[{}]"])
async def test_json_that_is_not_an_object_is_refused(gateway: Served, body: bytes) -> None:
    response = await send(gateway.host, gateway.port, request("POST", CHAT, [bearer(), JSON], body))
    assert_json_error(response, 400, "invalid_request")
    assert upstream_of(gateway).raw_bodies == []


async def test_a_duplicate_key_reaches_the_upstream_as_the_gateway_validated_it(
    gateway: Served,
) -> None:
    # A parser that kept the first value would forward 5 after validating 0.5.
    body = (
        b'{"model": "sim-small", "model": "faithful", "temperature": 5, "temperature": 0.5,'
        b' "messages": [{"role": "user", "content": "hi"}]}'
    )
    response = await send(gateway.host, gateway.port, request("POST", CHAT, [bearer(), JSON], body))
    assert response.status == 200, response.body
    (raw,) = upstream_of(gateway).raw_bodies
    assert raw.count(b'"temperature"') == 1
    assert raw.count(b'"model"') == 1
    assert orjson.loads(raw)["temperature"] == 0.5


async def test_the_caller_cannot_switch_off_the_usage_it_is_billed_by(gateway: Served) -> None:
    body = chat_body(model=FAITHFUL_MODEL, stream=True, stream_options={"include_usage": False})
    response = await send(gateway.host, gateway.port, request("POST", CHAT, [bearer(), JSON], body))
    assert response.status == 200
    assert upstream_of(gateway).received[0]["stream_options"] == {"include_usage": True}
    events = [
        json.loads(line[6:])
        for line in response.body.decode().splitlines()
        if line.startswith("data: {")
    ]
    assert all(event["choices"] for event in events)  # no usage chunk: it was not asked for
    (record,) = gateway.lineage.lineage()
    assert record.usage_source == "reported"


async def test_pii_is_redacted_in_every_forwarded_text(gateway: Served) -> None:
    email = "jane.doe@example.com"
    call = {"id": "call_1", "type": "function", "function": {"name": "mail", "arguments": email}}
    body = chat_body(
        model=FAITHFUL_MODEL,
        messages=[
            {"role": "user", "content": f"write to {email}", "x_note": email},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": f"sent to {email}"},
        ],
        tools=[{"type": "function", "function": {"name": "mail", "description": f"mails {email}"}}],
        prediction={"type": "content", "content": f"Dear {email}"},
        user=email,
        future={"note": email},
    )
    response = await send(gateway.host, gateway.port, request("POST", CHAT, [bearer(), JSON], body))
    assert response.status == 200, response.body
    (raw,) = upstream_of(gateway).raw_bodies
    assert email.encode() not in raw
    (record,) = gateway.lineage.lineage()
    assert [g.name for g in record.guardrails_triggered] == ["pii-detector"]


async def test_a_malformed_upstream_reply_is_a_502_not_relayed(tmp_path: Path) -> None:
    class Broken(OpenAIUpstream):
        def handle(self, request: Any) -> Any:
            response = super().handle(request)
            response._content = b'{"choices": "all of them", "x": "' + MARK.encode() + b'"}'
            return response

    upstream = Broken()
    async with running_gateway(tmp_path, upstream=upstream, upstream_models=MODELS) as served:
        body = chat_body(model=FAITHFUL_MODEL)
        response = await send(
            served.host, served.port, request("POST", CHAT, [bearer(), JSON], body)
        )
        assert_json_error(response, 502, "upstream_error")
