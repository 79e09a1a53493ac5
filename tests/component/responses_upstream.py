"""An OpenAI-compatible upstream that also answers `/v1/responses` as OpenAI's API
reference shapes it (a function_call item when given tools, until the last input item is
the function's output; JSON for a json_schema `text.format`; text otherwise), whole or as
its stream of events (`event:` lines, no [DONE]), and records each body as received. Its
replies carry a field the gateway does not know (`future_field`), so a test sees whether
it survives. Other paths fall through to ApiUpstream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from tests.component.api_upstream import ApiUpstream

RESPONSES_MODEL = "gpt-4.1-mini"
RESPONSE_ID = "resp_upstream_own_id"
TOOL_ARGUMENTS = '{"city":"Paris"}'
WEATHER_JSON = '{"city":"Paris","temperature_c":21.5}'
TOOL_ANSWER = "It is 21.5 C in Paris."
FAILING_INPUT = "An input the upstream fails on"
"""Streamed, its answer begins and the stream ends in `response.failed` (HTTP 200)."""
FAILURE = {"code": "server_error", "message": "The model failed to finish."}
INPUT_TOKENS = 31
OUTPUT_TOKENS = 9
USAGE = {
    "input_tokens": INPUT_TOKENS,
    "input_tokens_details": {"cached_tokens": 4},
    "output_tokens": OUTPUT_TOKENS,
    "output_tokens_details": {"reasoning_tokens": 2},
    "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
}


def _item(body: dict[str, Any]) -> dict[str, Any]:
    given = body["input"]
    last = given[-1] if isinstance(given, list) else {}
    tools = body.get("tools") or []
    if tools and body.get("tool_choice") != "none" and last.get("type") != "function_call_output":
        return {
            "type": "function_call",
            "id": "fc_up_1",
            "call_id": "call_up_1",
            "name": tools[0]["name"],
            "arguments": TOOL_ARGUMENTS,
            "status": "completed",
        }
    text_format = (body.get("text") or {}).get("format") or {}
    text = WEATHER_JSON if text_format.get("type") == "json_schema" else TOOL_ANSWER
    return {
        "type": "message",
        "id": "msg_up_1",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _response(body: dict[str, Any], output: list[Any], status: str) -> dict[str, Any]:
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "usage": USAGE if status == "completed" else None,
        "future_field": {"kept": True},
    }


def response(body: dict[str, Any]) -> dict[str, Any]:
    """The whole response."""
    return _response(body, [_item(body)], "completed")


def response_events(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The same response as OpenAI streams it, its text or arguments in two deltas."""
    item = _item(body)
    where = {"item_id": item["id"], "output_index": 0}
    opened = {**item, "status": "in_progress"}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response(body, [], "in_progress")},
        {"type": "response.in_progress", "response": _response(body, [], "in_progress")},
    ]
    if item["type"] == "function_call":
        text = item["arguments"]
        events.append({"type": "response.output_item.added", "output_index": 0, "item": opened})
        events += [
            {"type": "response.function_call_arguments.delta", **where, "delta": piece}
            for piece in (text[:5], text[5:])
        ]
        events.append({"type": "response.function_call_arguments.done", **where, "arguments": text})
    else:
        text = item["content"][0]["text"]
        at = {**where, "content_index": 0}
        part = item["content"][0]
        events.append(
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**opened, "content": []},
            }
        )
        events.append({"type": "response.content_part.added", **at, "part": {**part, "text": ""}})
        events += [
            {"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []}
            for piece in (text[:5], text[5:])
        ]
        events.append({"type": "response.output_text.done", **at, "text": text, "logprobs": []})
        events.append({"type": "response.content_part.done", **at, "part": part})
    if body["input"] == FAILING_INPUT:
        failed = {**_response(body, [], "failed"), "error": FAILURE}
        events = [*events[:5], {"type": "response.failed", "response": failed}]
    else:
        events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
        events.append({"type": "response.completed", "response": response(body)})
    return [{**event, "sequence_number": index} for index, event in enumerate(events)]


@dataclass
class ResponsesUpstream(ApiUpstream):
    """ApiUpstream, plus /responses."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/responses"):
            return super().handle(request)
        self.paths.append(request.url.path)
        self.raw_bodies.append(request.content)
        body = orjson.loads(request.content)
        self.received.append(body)
        if body.get("stream") is not True:
            return httpx.Response(200, json=response(body))
        stream = b"".join(
            b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
            for e in response_events(body)
        )
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=stream)
