"""The caller's side of a reply: the provider's answer as the caller gets it. Pure.

A provider that speaks OpenAI's shape hands its whole reply (or each whole chunk) and the
caller gets it as is, with two fields the gateway owns: `id`, which is
`chatcmpl-<lineage event id>` so a reply names its audit row, and `model`, the model the
caller asked for (the one served is the lineage record's model_selected). An adapter
that translated text hands text, and the gateway writes OpenAI's shapes around it.

A stream always asks its upstream for usage; the caller gets the usage chunk (no
choices) only when it asked (`stream_options.include_usage`), else a `chunk.choices[0]`
loop would fail on it. Chunks that end a choice (a finish_reason) and the usage chunk are
held until the call is recorded, so a caller that saw the end of a stream can find its
row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway import errors
from gateway.chat import DONE_EVENT, chunk_event, completion_body, usage_dict
from gateway.errors import GatewayError
from gateway.providers.base import Completion, Delta, UpstreamError, Usage

EVENT_ID_HEADER = "X-Govledger-Event-Id"
"""The response header naming the lineage event id of the call (its audit row)."""

COMPLETION_ID_PREFIX = "chatcmpl-"


def completion_id(event_id: str) -> str:
    """The `id` of a reply: OpenAI's prefix and the lineage event id of the call."""
    return COMPLETION_ID_PREFIX + event_id


def link_headers(event_id: str, trace_id: str, span_id: str) -> dict[str, str]:
    """Headers that point a reply at its audit row: the event id, and the W3C traceparent
    of the gateway's span in the call's trace."""
    return {EVENT_ID_HEADER: event_id, "traceparent": f"00-{trace_id}-{span_id}-01"}


def reply_body(completion: Completion, reply_id: str, model: str, usage: Usage) -> bytes:
    """The `chat.completion` the caller gets: the provider's whole reply, or one written
    around a translated text; usage as settled when the provider reported none."""
    if completion.reply is None:
        return completion_body(reply_id, model, completion.content, completion.finish_reason, usage)
    reply = {**completion.reply, "id": reply_id, "model": model}
    if not isinstance(reply.get("usage"), Mapping):
        reply["usage"] = usage_dict(usage)
    return orjson.dumps(reply)


def upstream_failure(exc: UpstreamError) -> GatewayError:
    """What the caller gets when the upstream failed: its refusal of an invalid request
    as a 400 naming the parameter (what the upstream validates and the gateway does not),
    anything else as 502 upstream_error."""
    invalid = exc.invalid
    if invalid is None:
        return GatewayError(errors.UPSTREAM_ERROR, f"upstream failed: {exc}")
    param = invalid.get("param")
    return GatewayError(
        errors.INVALID_REQUEST,
        f"the provider refused the request: {str(invalid['message'])[:500]}",
        param=param if isinstance(param, str) else None,
    )


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class ChunkRelay:
    """Turns a provider's deltas into the caller's server-sent events."""

    def __init__(self, reply_id: str, model: str, include_usage: bool) -> None:
        self.reply_id = reply_id
        self.model = model
        self.include_usage = include_usage
        self.started = False
        self.finish = "stop"
        self._relayed = False  # whether the provider handed whole chunks
        self._held: list[bytes] = []
        self._usage_chunk: dict[str, Any] | None = None

    def events(self, delta: Delta) -> list[bytes]:
        """The events to send now for one delta; what must wait is held for `tail`."""
        if delta.finish_reason:
            self.finish = delta.finish_reason
        if delta.chunk is None:
            return self._text_events(delta)
        self._relayed = True
        chunk = {**delta.chunk, "id": self.reply_id, "model": self.model}
        choices = chunk.get("choices")
        if not choices:
            if chunk.get("usage") is not None:
                self._usage_chunk = chunk  # sent, if asked for, after the record
                return []
            if not self.include_usage:
                chunk.pop("usage", None)
            return [_event(chunk)]
        if not self.include_usage and "usage" in chunk and chunk["usage"] is None:
            del chunk["usage"]  # the null the upstream adds only because usage was asked
        self.started = True
        if delta.finish_reason:
            self._held.append(_event(chunk))
            return []
        return [_event(chunk)]

    def _text_events(self, delta: Delta) -> list[bytes]:
        events = []
        if not self.started and (delta.content or delta.finish_reason):
            self.started = True
            events.append(chunk_event(self.reply_id, self.model, role="assistant", content=""))
        if delta.content:
            events.append(chunk_event(self.reply_id, self.model, content=delta.content))
        return events

    def failure(self) -> str | None:
        """The upstream's failure the stream ended in, when its own last event says the
        answer failed (HTTP 200 all along); None when it ended well. A chat stream ends
        in a finish reason, never a failure."""
        return None

    def tail(self, usage: Usage) -> list[bytes]:
        """The events after the call is recorded: the held ends of choices (a translated
        answer's finish chunk), the usage chunk when the caller asked, and [DONE]."""
        events = list(self._held)
        if not self._relayed:
            if not self.started:
                events.append(chunk_event(self.reply_id, self.model, role="assistant", content=""))
            events.append(chunk_event(self.reply_id, self.model, finish_reason=self.finish))
        if self.include_usage:
            if self._usage_chunk is not None:
                events.append(_event(self._usage_chunk))
            else:
                events.append(chunk_event(self.reply_id, self.model, usage=usage))
        events.append(DONE_EVENT)
        return events

    def error_event(self, message: str) -> bytes:
        """The event that ends a stream the upstream broke after it began."""
        return b"data: " + errors.error_body(errors.UPSTREAM_ERROR, message) + b"\n\n"
