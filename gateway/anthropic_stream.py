"""A streamed chat completion as Anthropic's Messages stream events. Pure.

A provider's deltas (OpenAI chunks, or a translated adapter's text) become
message_start, then per content block content_block_start, content_block_delta
(text_delta or input_json_delta) and content_block_stop, then message_delta (the
stop_reason and usage) and message_stop. The block still open, message_delta and
message_stop wait until the call is recorded (`tail`), so a caller that saw the end of
a stream can find its row, as with chat completions.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.anthropic_errors import error_event
from gateway.anthropic_shape import stop_reason, usage_object
from gateway.providers.base import Delta, UpstreamError, Usage
from gateway.replies import ChunkRelay


def sse(kind: str, data: dict[str, Any]) -> bytes:
    """One server-sent event as Anthropic names them: the event type and its data."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# A ChunkRelay by type only (the pipeline's Endpoint.relay returns one): every method the
# pipeline calls is overridden.
class MessagesRelay(ChunkRelay):
    """Turns a provider's deltas into a Messages stream's events."""

    def __init__(self, reply_id: str, model: str, input_tokens: int) -> None:
        super().__init__(reply_id, model, include_usage=False)
        self.input_tokens = input_tokens
        self.stop: str | None = None
        self._index = -1  # the content block open now, -1 before the first
        self._open: str | None = None  # its type: "text", "tool_use" or None when closed
        self._tool_index: int | None = None  # the OpenAI index of the tool call open now

    def _start_message(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        message: dict[str, Any] = {
            "id": self.reply_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Reported usage arrives at the end; the start carries the estimate.
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return [sse("message_start", {"type": "message_start", "message": message})]

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open, self._tool_index = None, None
        return [sse("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _open_block(self, block: dict[str, Any]) -> list[bytes]:
        events = self._close_block()
        self._index += 1
        self._open = block["type"]
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return [*events, sse("content_block_start", start)]

    def _text(self, text: str) -> list[bytes]:
        events = [] if self._open == "text" else self._open_block({"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        body = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return [*events, sse("content_block_delta", body)]

    def _tool_call(self, call: Any) -> list[bytes]:
        if not isinstance(call, dict):
            raise UpstreamError(200, "bad_response", "a tool-call delta is not an object")
        given = call.get("function")
        function: dict[str, Any] = given if isinstance(given, dict) else {}
        index = call.get("index", 0)
        events: list[bytes] = []
        if self._open != "tool_use" or index != self._tool_index:
            name = function.get("name")
            if not isinstance(name, str):
                raise UpstreamError(200, "bad_response", "a new tool call without a name")
            block = {"type": "tool_use", "id": str(call.get("id") or ""), "name": name}
            events = self._open_block({**block, "input": {}})
            self._tool_index = index
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            body = {"type": "content_block_delta", "index": self._index, "delta": delta}
            events.append(sse("content_block_delta", body))
        return events

    def events(self, delta: Delta) -> list[bytes]:
        """The events to send now for one delta."""
        if delta.finish_reason:
            self.stop = delta.finish_reason
        if delta.chunk is None:
            if not delta.content:
                return []
            return [*self._start_message(), *self._text(delta.content)]
        events: list[bytes] = []
        choices = delta.chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # the gateway asks for one choice; any other is not the caller's
            if choice.get("finish_reason"):
                self.stop = choice["finish_reason"]
            body = choice.get("delta")
            if not isinstance(body, dict):
                continue
            for field in ("content", "refusal"):
                text = body.get(field)
                if isinstance(text, str) and text:
                    events += self._start_message() + self._text(text)
                    if field == "refusal":
                        self.stop = "content_filter"
            calls = body.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                events += self._start_message() + self._tool_call(call)
        return events

    def tail(self, usage: Usage) -> list[bytes]:
        """The events after the call is recorded: the open block's stop, message_delta
        with the stop_reason and the settled usage, and message_stop."""
        events = [*self._start_message(), *self._close_block()]
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.stop), "stop_sequence": None},
            "usage": usage_object(usage),
        }
        events.append(sse("message_delta", message_delta))
        events.append(sse("message_stop", {"type": "message_stop"}))
        return events

    def error_event(self, message: str) -> bytes:
        """Anthropic's `error` event (the SDK raises it) for a stream broken midway."""
        return error_event(502, f"upstream failed: {message}", "upstream_error")
