"""Calls shed as the gateway's HTTP server parses them (gateway/shed_protocol.py), over
real TCP connections to the in-process gateway: the reply is the one the handler would
have given, the call is recorded, and the connection (keep-alive, pipelining, a body
still arriving, Connection: close) behaves as HTTP says."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.replies import EVENT_ID_HEADER
from tests.component.support import Component, running_component
from tests.raw_http import read_response

CHAT_BODY = orjson.dumps({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Component]:
    async with running_component(tmp_path, admission_target_delay_ms=1000) as running:
        yield running


def refuse_everything(stack: Component) -> None:
    """The admission limit at 0: every call is refused (as a lagging loop would make it)."""
    stack.gateway.admission.limit = 0.0


def handler_must_not_shed(stack: Component, monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_handler_shed(*args: Any) -> None:
        raise AssertionError("a whole call on an idle connection reached the handler")

    monkeypatch.setattr(stack.gateway, "_shed", no_handler_shed)


def post(path: str, body: bytes = CHAT_BODY, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gateway.test", "Content-Type: application/json"]
    lines += [*headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def connect(stack: Component) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    server = stack.client.server
    return await asyncio.open_connection(server.host, server.port)


async def test_a_whole_call_is_shed_as_parsed_recorded_and_the_connection_kept(
    stack: Component, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_everything(stack)
    handler_must_not_shed(stack, monkeypatch)
    trace_id = secrets.token_hex(16)
    reader, writer = await connect(stack)
    try:
        writer.write(
            post(
                "/v1/chat/completions",
                CHAT_BODY,
                f"traceparent: 00-{trace_id}-{secrets.token_hex(8)}-01",
            )
        )
        shed = await read_response(reader)
        assert shed.status == 503
        assert shed.headers["retry-after"] == "1"
        assert shed.headers["content-type"] == "application/json"
        assert "connection" not in shed.headers  # kept open
        assert (shed.json()["error"]["code"], shed.json()["error"]["type"]) == (
            "overloaded",
            "server_error",
        )
        row = stack.lineage_of(trace_id)
        assert (row.http_status, row.error_code, row.decision, row.api) == (
            503,
            "overloaded",
            "rejected",
            "chat.completions",
        )
        assert shed.headers[EVENT_ID_HEADER.lower()] == row.event_id
        assert shed.headers["traceparent"] == f"00-{trace_id}-{row.span_id}-01"
        # The same connection serves the next request once the limit lets calls through.
        stack.gateway.admission.limit = 10.0
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        assert (await read_response(reader)).status == 200
    finally:
        writer.close()
    assert stack.gateway.admission.in_flight == 0


async def test_the_reply_is_the_one_the_handler_gives(stack: Component) -> None:
    """A call whose body is still arriving goes to its handler, which sheds it there: the
    two replies differ only in the call's own values."""
    refuse_everything(stack)
    reader, writer = await connect(stack)
    try:
        request = post("/v1/chat/completions")
        writer.write(request[:-5])  # the body's end comes later: not a whole call
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(request[-5:])
        by_handler = await read_response(reader)
        writer.write(request)
        as_parsed = await read_response(reader)
    finally:
        writer.close()
    per_call = {EVENT_ID_HEADER.lower(), "traceparent", "date"}
    assert by_handler.status == as_parsed.status == 503
    assert by_handler.body == as_parsed.body
    assert set(by_handler.headers) == set(as_parsed.headers)
    assert {k: v for k, v in by_handler.headers.items() if k not in per_call} == {
        k: v for k, v in as_parsed.headers.items() if k not in per_call
    }
    assert len(stack.lineage.lineage()) == 2  # each recorded once


async def test_pipelined_calls_are_answered_in_order(
    stack: Component, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_everything(stack)
    reader, writer = await connect(stack)
    try:
        health = b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
        # Two whole calls, a request the loop serves, and a call behind it (the handler's).
        writer.write(
            post("/v1/chat/completions") + post("/v1/embeddings") + health + post("/v1/completions")
        )
        replies = [await read_response(reader) for _ in range(4)]
    finally:
        writer.close()
    assert [r.status for r in replies] == [503, 503, 200, 503]
    apis = [r.api for r in stack.lineage.lineage()]
    assert apis == ["chat.completions", "embeddings", "completions"]
    event_ids = [r.headers[EVENT_ID_HEADER.lower()] for r in replies if r.status == 503]
    assert event_ids == [r.event_id for r in stack.lineage.lineage()]


async def test_connection_close_is_honoured(
    stack: Component, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_everything(stack)
    handler_must_not_shed(stack, monkeypatch)
    reader, writer = await connect(stack)
    try:
        writer.write(post("/v1/chat/completions", CHAT_BODY, "Connection: close"))
        shed = await read_response(reader)
        assert shed.headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after it
    finally:
        writer.close()


async def test_the_messages_api_is_shed_in_anthropics_shape(
    stack: Component, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_everything(stack)
    handler_must_not_shed(stack, monkeypatch)
    body = orjson.dumps(
        {"model": "sim-small", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    )
    reader, writer = await connect(stack)
    try:
        writer.write(post("/v1/messages", body))
        shed = await read_response(reader)
    finally:
        writer.close()
    assert shed.status == 503
    assert shed.json()["type"] == "error"
    assert shed.json()["error"]["type"] == "overloaded_error"
    assert [r.api for r in stack.lineage.lineage()] == ["messages"]


async def test_paths_the_router_does_not_serve_are_not_shed(stack: Component) -> None:
    """An encoded slash is not the call's path to aiohttp's router: 404, not a refusal."""
    refuse_everything(stack)
    reader, writer = await connect(stack)
    try:
        writer.write(post("/v1/chat%2Fcompletions"))
        assert (await read_response(reader)).status == 404
        writer.write(post("/v1/chat/completions/"))
        assert (await read_response(reader)).status == 404
    finally:
        writer.close()
    assert stack.lineage.lineage() == []


async def test_a_call_admitted_as_parsed_is_released_whatever_happens(stack: Component) -> None:
    """Admitted as it was parsed, the call's handler releases it; a connection gone
    before its handler ran releases it too."""
    admission = stack.gateway.admission
    reader, writer = await connect(stack)
    try:
        writer.write(post("/v1/chat/completions"))  # no key: refused 401 by the handler
        assert (await read_response(reader)).status == 401
    finally:
        writer.close()
    assert admission.in_flight == 0
    # A call admitted as parsed, its connection lost before its handler runs.
    reader, writer = await connect(stack)
    writer.write(post("/v1/chat/completions"))
    writer.close()
    await asyncio.sleep(0.2)
    assert admission.in_flight == 0


async def test_a_record_that_cannot_be_kept_gets_a_500_and_a_closed_connection(
    stack: Component, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_everything(stack)

    async def failing(*args: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(stack.lineage, "publish", failing)
    reader, writer = await connect(stack)
    try:
        writer.write(post("/v1/chat/completions"))
        reply = await read_response(reader)
        assert reply.status == 500
        assert reply.json()["error"]["code"] == "internal_error"
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
    # The gateway still answers.
    monkeypatch.undo()
    reader, writer = await connect(stack)
    try:
        writer.write(post("/v1/chat/completions"))
        assert (await read_response(reader)).status == 503
    finally:
        writer.close()
