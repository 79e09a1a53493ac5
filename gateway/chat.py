"""Parsing and validating a chat-completion request, and the OpenAI response shapes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import errors
from gateway.errors import GatewayError
from gateway.providers.base import Usage

ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})
PASSTHROUGH_FIELDS = ("top_p", "stop", "presence_penalty", "frequency_penalty", "seed", "n")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat-completion request."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    max_tokens: int | None
    temperature: float | None
    user: str | None
    extra: dict[str, Any]


def parse_chat_request(body: bytes, *, max_messages: int) -> ChatRequest:
    """Validate the body; GatewayError with a stable code on any fault of the caller's."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(errors.INVALID_JSON, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GatewayError(errors.INVALID_REQUEST, "request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(errors.INVALID_REQUEST, "'model' is required and must be a string")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError(errors.INVALID_REQUEST, "'messages' must be a non-empty array")
    if len(messages) > max_messages:
        raise GatewayError(
            errors.INVALID_REQUEST, f"'messages' has {len(messages)} items; limit {max_messages}"
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise GatewayError(errors.INVALID_REQUEST, f"messages[{index}] needs a valid 'role'")
    max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise GatewayError(errors.INVALID_REQUEST, "'max_tokens' must be a positive integer")
    temperature = data.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float) or isinstance(temperature, bool)
    ):
        raise GatewayError(errors.INVALID_REQUEST, "'temperature' must be a number")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise GatewayError(errors.INVALID_REQUEST, "'stream' must be a boolean")
    user = data.get("user")
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        max_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
        user=user if isinstance(user, str) else None,
        extra={k: data[k] for k in PASSTHROUGH_FIELDS if k in data},
    )


def completion_body(
    completion_id: str, model: str, content: str, finish_reason: str, usage: Usage
) -> bytes:
    """A `chat.completion` object."""
    return orjson.dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage_dict(usage),
        }
    )


def usage_dict(usage: Usage) -> dict[str, int]:
    """OpenAI usage object."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def chunk_event(
    completion_id: str,
    model: str,
    *,
    content: str | None = None,
    role: str | None = None,
    finish_reason: str | None = None,
    usage: Usage | None = None,
) -> bytes:
    """One SSE `data:` line carrying a `chat.completion.chunk`."""
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": []
        if usage is not None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        chunk["usage"] = usage_dict(usage)
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"
