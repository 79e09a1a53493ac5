"""Anthropic's Messages API behind the gateway's chat-completions shape.

Translation covers text conversations: system and developer messages become the
top-level `system`, user and assistant turns become `messages`. Anything the
translation cannot carry faithfully (tool turns, images) is refused rather than dropped.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx
import orjson

from gateway.providers.base import ChatCall, Completion, Delta, UpstreamError, Usage
from gateway.providers.upstream_http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_SSE_EVENT_CHARS,
    UPSTREAM_POOL,
    classify_transport_error,
    error_kind,
    fetch_body,
    read_error_body,
    sse_events,
    status_error,
)
from schemas.pricing import anthropic_usage

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
"""Anthropic's public API."""

ANTHROPIC_VERSION = "2023-06-01"
"""The `anthropic-version` header: the API contract this adapter was written against."""

DEFAULT_MAX_TOKENS = 1024
"""Sent when the caller gives no max_tokens: the Messages API requires one."""

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

# The HTTP status Anthropic documents for each error type. An error event arrives inside
# a 200 stream; mapping it back gives the attempt the status a non-streamed call would
# have recorded (an overloaded_error mid-stream is a 529, not a success).
ERROR_STATUSES: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_SYSTEM_ROLES = frozenset({"system", "developer"})
_TURN_ROLES = frozenset({"user", "assistant"})


def _unsupported(message: str, param: str | None = None) -> UpstreamError:
    # Nothing was sent (status 0); http_4xx because the same call can never succeed here,
    # and `invalid` so the caller gets a 400 saying so (gateway.replies.upstream_failure),
    # not a 502.
    text = f"cannot translate for Anthropic: {message}"
    return UpstreamError(0, "http_4xx", text, invalid={"message": text, "param": param})


def _text_blocks(message: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
    content = message.get("content")
    if content is None or isinstance(content, str):
        texts = [content or ""]
    elif isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise _unsupported(f"messages[{index}] has a {kind!r} part; only text is carried")
            texts.append(str(part.get("text") or ""))
    else:
        raise _unsupported(f"messages[{index}].content is neither text nor a list of parts")
    # The API rejects empty text blocks; an empty message adds nothing to the turn.
    return [{"type": "text", "text": text} for text in texts if text]


# What the Messages translation carries from a chat body. Everything else is refused by
# name rather than dropped: a proxy never loses a field without an error.
_CARRIED_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "stream_options",  # usage: Anthropic always reports it
        "user",  # sent as metadata.user_id
    }
)
# Fields whose value here asks for nothing beyond the default, so there is nothing to carry.
_NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logprobs": (False,),
}


_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def _refuse_uncarried(body: Mapping[str, Any]) -> None:
    for name, value in body.items():
        if name in _CARRIED_FIELDS or value is None:
            continue
        if name in _NEUTRAL_VALUES and value in _NEUTRAL_VALUES[name]:
            continue
        # The caller's own key names come back only when they look like an API's.
        shown = repr(name) if _FIELD_NAME.fullmatch(name) else "a field"
        raise _unsupported(
            f"{shown} has no Messages API equivalent on this route",
            name if _FIELD_NAME.fullmatch(name) else None,
        )


def _translate_messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role in _SYSTEM_ROLES:
            system.extend(block["text"] for block in _text_blocks(message, index))
            continue
        if role not in _TURN_ROLES:
            raise _unsupported(f"messages[{index}] has role {role!r}; only text turns are carried")
        if message.get("tool_calls"):
            raise _unsupported(f"messages[{index}] carries tool_calls; tools are not translated")
        blocks = _text_blocks(message, index)
        if not blocks:
            continue
        # The API wants user and assistant to alternate: same-role neighbours are one turn.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(system), turns


def _usage(data: Any) -> tuple[int | None, int | None]:
    """(input, output) tokens of a usage object; either is None when absent."""
    if not isinstance(data, Mapping):
        return None, None
    output = data.get("output_tokens")
    completion = None if output is None else int(output)
    if data.get("input_tokens") is None:
        return None, completion
    # OpenAI's prompt_tokens counts every prompt token; Anthropic reports cache reads and
    # writes apart from input_tokens. They are zero unless cache_control is sent.
    prompt = sum(
        int(data.get(field) or 0)
        for field in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return prompt, completion


def _reported(data: Any) -> dict[str, Any]:
    """The counts a usage object reports (the later of two reports of a count wins)."""
    if not isinstance(data, Mapping):
        return {}
    return {name: value for name, value in data.items() if value is not None}


def _detailed(data: Mapping[str, Any]) -> Usage:
    """Usage with cache reads and writes as their own counts (schemas.pricing)."""
    usage = anthropic_usage(data)
    if usage is None:
        raise TypeError("usage without input_tokens")
    return usage


def _stream_error(event: Mapping[str, Any]) -> UpstreamError:
    error = event.get("error")
    if not isinstance(error, Mapping):
        error = {}
    kind = str(error.get("type") or "unknown")
    # An error type we do not know is the upstream's failure until shown otherwise.
    upstream_status = ERROR_STATUSES.get(kind, 500)
    return UpstreamError(
        upstream_status,
        error_kind(upstream_status),
        f"upstream stream error {kind}: {str(error.get('message') or '')[:200]}",
    )


class AnthropicProvider:
    """Anthropic's Messages API (`POST {base_url}/v1/messages`) as a gateway provider."""

    def __init__(
        self,
        *,
        name: str,
        api_key: str,
        timeout_s: float,
        base_url: str = ANTHROPIC_BASE_URL,
        anthropic_version: str = ANTHROPIC_VERSION,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_chars: int = DEFAULT_MAX_SSE_EVENT_CHARS,
    ) -> None:
        assert default_max_tokens >= 1, "the Messages API needs max_tokens >= 1"
        assert max_response_bytes > 0 and max_event_chars > 0, "limits must be positive"
        self.name = name
        self._default_max_tokens = default_max_tokens
        self._max_response_bytes = max_response_bytes
        self._max_event_chars = max_event_chars
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"x-api-key": api_key, "anthropic-version": anthropic_version},
            timeout=timeout_s,
            limits=UPSTREAM_POOL,
            transport=transport,
        )

    def _body(self, call: ChatCall, *, stream: bool) -> bytes:
        _refuse_uncarried(call.body)
        system, messages = _translate_messages(call.messages)
        body: dict[str, Any] = {
            "model": call.upstream_model,
            "max_tokens": call.max_tokens or self._default_max_tokens,
            "messages": messages,
        }
        if system:
            body["system"] = system
        if call.temperature is not None:
            body["temperature"] = call.temperature
        if call.extra.get("top_p") is not None:
            body["top_p"] = call.extra["top_p"]
        stop = call.extra.get("stop")
        if stop:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        user = call.body.get("user")
        if isinstance(user, str) and user:
            body["metadata"] = {"user_id": user}
        if stream:
            body["stream"] = True
        return orjson.dumps(body)

    def _request(self, call: ChatCall, *, stream: bool) -> httpx.Request:
        headers = {"Content-Type": "application/json"}
        if stream:
            headers["Accept"] = "text/event-stream"
        return self._client.build_request(
            "POST", "/v1/messages", content=self._body(call, stream=stream), headers=headers
        )

    async def complete(self, call: ChatCall) -> Completion:
        """One message; non-2xx and transport failures raise UpstreamError."""
        request = self._request(call, stream=False)
        status, content = await fetch_body(self._client, request, limit=self._max_response_bytes)
        try:
            data = orjson.loads(content)
            blocks = data["content"]
            # Only text is asked for; other block kinds (thinking, tool_use) are not ours.
            text = "".join(block["text"] for block in blocks if block.get("type") == "text")
            stop_reason = data.get("stop_reason")
            prompt, completion = _usage(data.get("usage"))
            known = prompt is not None and completion is not None
            usage = _detailed(data["usage"]) if known else None
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise UpstreamError(status, "bad_response", repr(exc)) from exc
        return Completion(text, FINISH_REASONS.get(stop_reason or "", "stop"), usage)

    async def stream(self, call: ChatCall) -> AsyncGenerator[Delta, None]:
        """Message events re-yielded as text deltas, then one delta with finish and usage."""
        request = self._request(call, stream=True)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc) from exc
        prompt: int | None = None
        completion: int | None = None
        reported: dict[str, Any] = {}  # the usage counts reported so far, by name
        stop_reason: str | None = None
        try:
            if response.status_code >= 400:
                raise status_error(response, await read_error_body(response))
            async for event in sse_events(response, max_event_chars=self._max_event_chars):
                data = orjson.loads(event.data)
                if not isinstance(data, dict):
                    raise UpstreamError(response.status_code, "bad_response", "event not an object")
                kind = data.get("type")
                if kind == "content_block_delta":
                    delta = data["delta"]
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        yield Delta(delta["text"])
                elif kind == "content_block_start":
                    block = data["content_block"]
                    if block.get("type") == "text" and block.get("text"):
                        yield Delta(block["text"])
                elif kind == "message_start":
                    reported.update(_reported(data["message"].get("usage")))
                    prompt, completion = _usage(data["message"].get("usage"))
                elif kind == "message_delta":
                    stop_reason = data["delta"].get("stop_reason") or stop_reason
                    # message_delta counts are cumulative: they replace, never add.
                    reported.update(_reported(data.get("usage")))
                    delta_prompt, delta_completion = _usage(data.get("usage"))
                    prompt = delta_prompt if delta_prompt is not None else prompt
                    completion = delta_completion if delta_completion is not None else completion
                elif kind == "message_stop":
                    usage = None
                    if prompt is not None and completion is not None:
                        usage = _detailed(reported)
                    yield Delta("", FINISH_REASONS.get(stop_reason or "", "stop"), usage)
                    return
                elif kind == "error":
                    raise _stream_error(data)
                # ping, content_block_stop and event types added later carry no text.
            # A body that ends before message_stop was cut off: not a finished answer.
            raise UpstreamError(
                response.status_code, "transport", "upstream stream ended before message_stop"
            )
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc) from exc
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise UpstreamError(response.status_code, "bad_response", repr(exc)) from exc
        finally:
            await response.aclose()

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
