"""An OpenAI-compatible upstream that answers the way OpenAI does (every choice of `n`,
tool calls when given tools, JSON for a json_schema response_format, logprobs when
asked, usage in a stream only when asked for) and records what it received: each body
as sent on the wire and its headers. Its replies carry fields the gateway does not know
(`service_tier`, a choice-level `future_field`), so a test sees whether they survive.

Models it answers: FAITHFUL_MODEL (upstream name FAITHFUL_UPSTREAM_MODEL once mapped).
Other models fall through to the component Upstream's behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from tests.component.support import Upstream

FAITHFUL_MODEL = "faithful"
UPSTREAM_FINGERPRINT = "fp_upstream_7"
TOOL_ARGUMENTS = '{"city":"Paris","unit":"celsius"}'
PROMPT_TOKENS = 31
COMPLETION_TOKENS_PER_CHOICE = 9


def _tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    if not tools or body.get("tool_choice") == "none":
        return None
    if body["messages"][-1].get("role") == "tool":
        return None
    return {
        "id": "call_up_1",
        "type": "function",
        "function": {"name": tools[0]["function"]["name"], "arguments": TOOL_ARGUMENTS},
    }


def _content(body: dict[str, Any], index: int) -> str:
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return '{"city":"Paris","temperature_c":21.5,"conditions":["sunny"]}'
    if body["messages"][-1].get("role") == "tool":
        return f"It is 21.5 C in Paris (choice {index})."
    return f"Answer {index}."


def _logprobs(body: dict[str, Any], text: str, *, one_token: bool = False) -> Any:
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs") or 0
    entries = [
        {
            "token": word,
            "logprob": -0.5,
            "bytes": list(word.encode()),
            "top_logprobs": [{"token": word, "logprob": -0.5, "bytes": None}] * top,
        }
        for word in ([text] if one_token else text.split(" "))
    ]
    return {"content": entries, "refusal": None}


def _usage(body: dict[str, Any]) -> dict[str, Any]:
    completion = COMPLETION_TOKENS_PER_CHOICE * int(body.get("n") or 1)
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def _envelope(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-upstream-own-id",
        "object": kind,
        "created": 1_700_000_000,
        "model": body["model"],
        "system_fingerprint": UPSTREAM_FINGERPRINT,
        "service_tier": "default",
    }


def reply(body: dict[str, Any]) -> dict[str, Any]:
    """The non-streamed answer to a body."""
    choices = []
    for index in range(int(body.get("n") or 1)):
        call = _tool_call(body)
        content = None if call else _content(body, index)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content,
            "refusal": None,
            "annotations": [],
        }
        if call:
            message["tool_calls"] = [call]
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": _logprobs(body, content or ""),
                "finish_reason": "tool_calls" if call else "stop",
                "future_field": {"kept": True},
            }
        )
    return {**_envelope(body, "chat.completion"), "choices": choices, "usage": _usage(body)}


def chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The streamed answer to a body, chunk by chunk, as OpenAI streams it."""
    with_usage = (body.get("stream_options") or {}).get("include_usage") is True
    out: list[dict[str, Any]] = []

    def add(index: int, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        choice.update(extra)
        chunk = {**_envelope(body, "chat.completion.chunk"), "choices": [choice]}
        if with_usage:
            chunk["usage"] = None
        out.append(chunk)

    for index in range(int(body.get("n") or 1)):
        add(index, {"role": "assistant", "content": "", "refusal": None})
        call = _tool_call(body)
        if call:
            opening = {"index": 0, **call, "function": {**call["function"], "arguments": ""}}
            add(index, {"tool_calls": [opening]})
            for piece in (TOOL_ARGUMENTS[:10], TOOL_ARGUMENTS[10:]):
                add(index, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            add(index, {}, "tool_calls")
            continue
        for word in _content(body, index).split(" "):
            text = word if not out[-1]["choices"][0]["delta"].get("content") else " " + word
            add(index, {"content": text}, logprobs=_logprobs(body, text, one_token=True))
        add(index, {}, "stop")
    if with_usage:
        out.append(
            {**_envelope(body, "chat.completion.chunk"), "choices": [], "usage": _usage(body)}
        )
    return out


@dataclass
class OpenAIUpstream(Upstream):
    """The component Upstream, plus FAITHFUL_MODEL answered as OpenAI answers, and every
    request's raw body and headers kept."""

    raw_bodies: list[bytes] = field(default_factory=list)
    headers: list[httpx.Headers] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.raw_bodies.append(request.content)
        self.headers.append(request.headers)
        body = orjson.loads(request.content)
        if body.get("model") != FAITHFUL_MODEL:
            return super().handle(request)
        self.received.append(body)
        if body.get("reasoning_effort") == "ultra":  # OpenAI validates it; the gateway not
            error = {
                "message": "Invalid value: 'ultra'. Supported values are: 'low', 'medium'.",
                "type": "invalid_request_error",
                "param": "reasoning_effort",
                "code": "invalid_value",
            }
            return httpx.Response(400, json={"error": error})
        if body.get("stream") is True:
            events = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks(body))
            return httpx.Response(
                200,
                headers={"Content-Type": "text/event-stream"},
                content=events + b"data: [DONE]\n\n",
            )
        return httpx.Response(200, json=reply(body))
