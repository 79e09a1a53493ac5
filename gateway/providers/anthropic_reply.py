"""Anthropic's answers in OpenAI's chat shapes. Pure.

A Message becomes a `chat.completion`: its text blocks the content, its `tool_use`
blocks `tool_calls` (the input as JSON `arguments`). A stream's events become
`chat.completion.chunk`s: text deltas as content, a `tool_use` block's start as a tool
call with its id and name, its `input_json_delta`s as argument fragments, each call
numbered by its place among the tool calls (OpenAI's `index`), not among the blocks.
The gateway sets `id`, `model` and `usage` (gateway.replies). Block kinds not asked for
(thinking, say) carry nothing a chat reply has.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.providers.base import UpstreamError

# OpenAI's finish_reason for each Anthropic stop_reason; anything else ends as "stop".
FINISH_REASONS: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: Any) -> str:
    """OpenAI's finish_reason for an Anthropic stop_reason."""
    return FINISH_REASONS.get(stop_reason if isinstance(stop_reason, str) else "", "stop")


def _tool_call(block: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
        raise UpstreamError(200, "bad_response", "a tool_use block without an id or a name")
    tool_input = block.get("input", {})
    if not isinstance(tool_input, dict):
        raise UpstreamError(200, "bad_response", "a tool_use block's input is not an object")
    function = {"name": block["name"], "arguments": orjson.dumps(tool_input).decode()}
    return {"id": block["id"], "type": "function", "function": function}


def chat_completion(message: Mapping[str, Any]) -> dict[str, Any]:
    """The `chat.completion` of a Message (KeyError, TypeError when it is not one)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message["content"]:
        if block.get("type") == "text":
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(_tool_call(block))
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts), "refusal": None}
    if calls:
        reply["tool_calls"] = calls
        reply["content"] = reply["content"] or None  # OpenAI's null beside tool calls
    choice = {
        "index": 0,
        "message": reply,
        "finish_reason": finish_reason(message.get("stop_reason")),
        "logprobs": None,
    }
    return {
        "id": str(message.get("id") or ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(message.get("model") or ""),
        "choices": [choice],
    }


class ChunkWriter:
    """One stream's events as chat chunks; keeps which block is which tool call."""

    def __init__(self) -> None:
        self.message_id = ""
        self.model = ""
        self._created = int(time.time())
        self._role_sent = False
        self._tool_index: dict[int, int] = {}  # a tool_use block's index → its call's index

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        """A `chat.completion.chunk` of one delta (the first names the role)."""
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", **delta}
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {
            "id": self.message_id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "choices": [choice],
        }

    def started(self, message: Mapping[str, Any]) -> None:
        """message_start: the upstream's id and model, for the chunks."""
        self.message_id = str(message.get("id") or "")
        self.model = str(message.get("model") or "")

    def block_started(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """content_block_start: a text's first words, or a tool call's id and name."""
        block = event["content_block"]
        if block.get("type") == "text":
            return self.chunk({"content": block["text"]}) if block.get("text") else None
        if block.get("type") != "tool_use":
            return None
        call = _tool_call({**block, "input": {}})  # the input arrives as deltas
        call["function"]["arguments"] = ""
        index = len(self._tool_index)
        self._tool_index[int(event["index"])] = index
        return self.chunk({"tool_calls": [{"index": index, **call}]})

    def block_delta(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """content_block_delta: text as content, input JSON as argument fragments."""
        delta = event["delta"]
        if delta.get("type") == "text_delta":
            return self.chunk({"content": delta["text"]}) if delta.get("text") else None
        if delta.get("type") != "input_json_delta":
            return None
        index = self._tool_index.get(int(event["index"]))
        if index is None:
            raise UpstreamError(200, "bad_response", "input_json_delta outside a tool_use block")
        fragment = delta["partial_json"]
        if not isinstance(fragment, str):
            raise TypeError("partial_json is not a string")
        if not fragment:
            return None
        call = {"index": index, "function": {"arguments": fragment}}
        return self.chunk({"tool_calls": [call]})
