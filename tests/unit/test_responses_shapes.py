"""The sim's Responses API answers in the shapes of the openai SDK's own models (validated
strictly, not merely constructed), and the relay of a Responses stream holds its terminal
event until the call is recorded. Pure."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.providers.base import Delta, Usage
from gateway.providers.sim_responses import response_events, response_reply
from gateway.responses_api import ResponsesRelay, output_text

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
TOOL = {
    "type": "function",
    "name": "lookup",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
}
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def _words(seen: str, cap: int | None) -> list[str]:
    del seen
    return ["alpha", "beta", "gamma"][: cap or 3]


BODIES: list[dict[str, Any]] = [
    {"input": "hello"},
    {"input": "hello", "tools": [TOOL]},
    {"input": "hello", "text": {"format": {"type": "json_schema", "name": "N", "schema": SCHEMA}}},
    {"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}], "tools": [TOOL]},
]


@pytest.mark.parametrize("body", BODIES)
def test_the_sim_reply_and_its_events_are_the_sdk_shapes(body: dict[str, Any]) -> None:
    reply = Response.model_validate(response_reply(body, "sim-small", _words))
    events = [EVENTS.validate_python(e) for e in response_events(body, "sim-small", _words, 4)]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"
    streamed = "".join(
        e.delta
        for e in events
        if e.type in ("response.output_text.delta", "response.function_call_arguments.delta")
    )
    assert streamed == output_text(reply.model_dump()["output"])
    assert reply.usage is not None and reply.usage.output_tokens > 0


def test_the_relay_holds_the_terminal_event_and_names_the_caller_model() -> None:
    relay = ResponsesRelay("alias")
    created = {"type": "response.created", "response": {"model": "served"}}
    delta = {"type": "response.output_text.delta", "delta": "hi"}
    done = {"type": "response.completed", "response": {"model": "served", "usage": None}}
    sent = [e for chunk in (created, delta, done) for e in relay.events(Delta("", chunk=chunk))]
    assert len(sent) == 2
    assert sent[0].startswith(b"event: response.created\ndata: ")
    assert orjson.loads(sent[0].split(b"data: ")[1])["response"]["model"] == "alias"
    (tail,) = relay.tail(Usage(1, 1))
    assert orjson.loads(tail.split(b"data: ")[1])["response"]["model"] == "alias"
