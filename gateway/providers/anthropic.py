"""Anthropic's Messages API behind the gateway's chat-completions shape.

The request is translated by gateway/providers/anthropic_request.py (text, images,
tools, tool turns, tool_choice, json_schema output, system prompts), the answer by
gateway/providers/anthropic_reply.py into OpenAI's `chat.completion` and its chunks (tool
calls and their streamed deltas included), which the caller gets as from an
OpenAI-compatible upstream. What cannot be carried is refused with a 400 naming it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx
import orjson

from gateway.providers.anthropic_reply import ChunkWriter, chat_completion, finish_reason
from gateway.providers.anthropic_request import messages_body
from gateway.providers.base import (
    ChatCall,
    Completion,
    Delta,
    UpstreamError,
    Usage,
    choice_texts,
)
from gateway.providers.upstream_client import upstream_client
from gateway.providers.upstream_http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_SSE_EVENT_CHARS,
    error_kind,
    fetch_body,
    read_error_body,
    sse_events,
    status_error,
)
from schemas.pricing import anthropic_usage

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
"""Anthropic's public API."""

MESSAGES_PATH = "/v1/messages"

ANTHROPIC_VERSION = "2023-06-01"
"""The `anthropic-version` header: the API contract this adapter was written against."""

DEFAULT_MAX_TOKENS = 1024
"""Sent when the caller gives no max_tokens: the Messages API requires one."""

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
        self._client = upstream_client(
            base_url=base_url,
            headers={"x-api-key": api_key, "anthropic-version": anthropic_version},
            params={},
            timeout_s=timeout_s,
            transport=transport,
        )

    def _body(self, call: ChatCall, *, stream: bool) -> bytes:
        body = messages_body(call, default_max_tokens=self._default_max_tokens, stream=stream)
        return orjson.dumps(body)

    async def complete(self, call: ChatCall) -> Completion:
        """One message; non-2xx and transport failures raise UpstreamError."""
        body = self._body(call, stream=False)
        status, content = await fetch_body(
            self._client, MESSAGES_PATH, body, limit=self._max_response_bytes
        )
        try:
            data = orjson.loads(content)
            reply = chat_completion(data)
            prompt, completion = _usage(data.get("usage"))
            known = prompt is not None and completion is not None
            usage = _detailed(data["usage"]) if known else None
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise UpstreamError(status, "bad_response", repr(exc)) from exc
        text = choice_texts(reply["choices"], "message")
        return Completion(text, reply["choices"][0]["finish_reason"], usage, reply)

    async def stream(self, call: ChatCall) -> AsyncGenerator[Delta, None]:
        """Message events as chat chunks (text, tool calls and their argument fragments),
        then one chunk with the finish reason, its delta with the usage."""
        body = self._body(call, stream=True)
        response = await self._client.post(MESSAGES_PATH, body, stream=True)
        prompt: int | None = None
        completion: int | None = None
        reported: dict[str, Any] = {}  # the usage counts reported so far, by name
        stop_reason: str | None = None
        writer = ChunkWriter()
        try:
            if response.status_code >= 400:
                raise status_error(response, await read_error_body(response))
            async for event in sse_events(response, max_event_chars=self._max_event_chars):
                data = orjson.loads(event.data)
                if not isinstance(data, dict):
                    raise UpstreamError(response.status_code, "bad_response", "event not an object")
                kind = data.get("type")
                chunk: dict[str, Any] | None = None
                if kind == "content_block_delta":
                    chunk = writer.block_delta(data)
                elif kind == "content_block_start":
                    chunk = writer.block_started(data)
                elif kind == "message_start":
                    writer.started(data["message"])
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
                    finish = finish_reason(stop_reason)
                    yield Delta("", finish, usage, writer.chunk({}, finish))
                    return
                elif kind == "error":
                    raise _stream_error(data)
                # ping, content_block_stop and event types added later carry no answer.
                if chunk is not None:
                    yield Delta(choice_texts(chunk["choices"], "delta"), chunk=chunk)
            # A body that ends before message_stop was cut off: not a finished answer.
            raise UpstreamError(
                response.status_code, "transport", "upstream stream ended before message_stop"
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise UpstreamError(response.status_code, "bad_response", repr(exc)) from exc
        finally:
            await response.aclose()

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
