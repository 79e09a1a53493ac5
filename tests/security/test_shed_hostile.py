"""Hostile requests against the calls the gateway's HTTP server sheds as it parses them
(gateway/shed_protocol.py): planted header values never come back or into the record,
framing tricks are the parser's to refuse (not shed past it), and a flood of pipelined
calls on one connection is answered in order, each recorded once, nothing left held."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.component.support import Component, running_component
from tests.raw_http import read_response
from tests.security.gateway_fixtures import MARK, assert_json_error, chat_body, request, send

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Component]:
    async with running_component(tmp_path, admission_target_delay_ms=1000) as running:
        running.gateway.admission.limit = 0.0  # every call refused, as a lagging loop makes it
        yield running


def address(stack: Component) -> tuple[str, int]:
    server = stack.client.server
    assert server.port is not None
    return server.host, server.port


@pytest.mark.parametrize(
    "headers",
    [
        [f"traceparent: 00-{MARK}-{MARK}-01".encode()],
        [
            b"traceparent: 00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01",
            f"traceparent: {MARK}".encode(),
        ],
        [b"traceparent: 00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01"],  # all-zero ids: invalid
        [f"X-Govledger-Event-Id: {MARK}".encode(), f"tracestate: k={MARK}".encode()],
    ],
)
async def test_planted_header_values_reach_neither_the_reply_nor_the_record(
    stack: Component, headers: list[bytes]
) -> None:
    reply = await send(
        *address(stack), request("POST", "/v1/chat/completions", headers, chat_body())
    )
    assert_json_error(reply, 503, "overloaded")
    assert MARK not in str(reply.headers)
    assert TRACEPARENT.match(reply.headers["traceparent"])
    (record,) = stack.lineage.lineage()
    assert MARK not in repr(record)
    assert record.event_id == reply.headers["x-govledger-event-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", record.trace_id)


@pytest.mark.parametrize(
    "framing",
    [
        [b"Content-Length: 5", b"Transfer-Encoding: chunked"],
        [b"Content-Length: 5", b"Content-Length: 7"],
        [b"Transfer-Encoding: chunked, identity"],
    ],
)
async def test_framing_tricks_are_refused_by_the_parser_not_shed(
    stack: Component, framing: list[bytes]
) -> None:
    """A request whose length is ambiguous is a smuggling attempt: aiohttp's parser
    refuses it (400) before anything is decided; nothing is recorded as a refusal."""
    head = [b"POST /v1/chat/completions HTTP/1.1", b"Host: 127.0.0.1", *framing]
    raw = b"\r\n".join([*head, b"Connection: close"]) + b"\r\n\r\n0\r\n\r\n"
    reply = await send(*address(stack), raw)
    assert reply.status == 400
    assert stack.lineage.lineage() == []


# aiohttp stops parsing at 32 queued requests and pauses reading: past it, and a few past.
@pytest.mark.parametrize("calls", [37, 200])
async def test_a_flood_of_pipelined_calls_is_answered_in_order_and_recorded_once(
    stack: Component, calls: int
) -> None:
    one = request("POST", "/v1/chat/completions", None, chat_body()).replace(
        b"Connection: close\r\n", b""
    )
    reader, writer = await asyncio.open_connection(*address(stack))
    try:
        writer.write(one * calls)
        event_ids = []
        for _ in range(calls):
            reply = await read_response(reader, 10)
            assert reply.status == 503
            event_ids.append(reply.headers["x-govledger-event-id"])
    finally:
        writer.close()
    assert event_ids == [record.event_id for record in stack.lineage.lineage()]
    assert len(set(event_ids)) == calls
    assert stack.gateway.admission.in_flight == 0
