"""Parsing and validating a chat-completion request, and the OpenAI response shapes."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway import errors
from gateway.chat_params import BodyLimits, check_parameters, check_shape, is_integer
from gateway.chat_params import refuse as _refuse
from gateway.errors import GatewayError
from gateway.providers.base import ChatCall, Usage

ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})
PASSTHROUGH_FIELDS = ("top_p", "stop", "presence_penalty", "frequency_penalty", "seed", "n")
# Body fields the policy chain does not read: the gateway's own (model, messages are read
# apart) and numbers, flags and enums no text can hide in.
NOT_SCANNED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "parallel_tool_calls",
    }
)
# Roles whose message may have no content (an assistant turn of tool calls, say).
CONTENT_OPTIONAL_ROLES = frozenset({"assistant", "function"})
# Content part types and the field each carries (OpenAI's chat content parts).
PART_FIELDS = {
    "text": "text",
    "refusal": "refusal",
    "image_url": "image_url",
    "input_audio": "input_audio",
    "file": "file",
}
# No model answers with more tokens in one call; a larger number is malformed, not a wish
# (and would overflow the reservation's nano-USD). OpenAI's own schema is int32.
MAX_TOKENS_LIMIT = 2**31 - 1
# OpenAI's messages nest four levels (message, tool_calls, call, function); the policy
# chain walks every level of a message, so an absurd nesting is refused, not recursed into.
MAX_MESSAGE_DEPTH = 16
W3C_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


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
    # The body as the caller sent it (its `messages` are superseded by `messages`, which
    # the policy chain may have redacted): forwarded whole to OpenAI-compatible upstreams.
    body: dict[str, Any] = field(default_factory=dict)
    # Whether the caller asked for a stream's usage chunk (stream_options.include_usage).
    include_usage: bool = False
    choices: int = 1

    def policy_messages(self) -> list[dict[str, Any]]:
        """What the policy chain reads and may redact: the messages and, as one more, the
        body's other fields an upstream reads (tools, response_format, prediction, user…),
        since they are forwarded too."""
        return [*self.messages, {k: v for k, v in self.body.items() if k not in NOT_SCANNED}]

    def after_policy(
        self, scanned: list[dict[str, Any]], verdict: Sequence[dict[str, Any]]
    ) -> ChatRequest:
        """The request as the chain left `scanned` (policy_messages): redacted or not."""
        if all(new is old for new, old in zip(verdict, scanned, strict=True)):
            return self
        *messages, fields = verdict
        # The body's own messages become the redacted ones too: nothing downstream can
        # read the originals from it.
        body = {**self.body, **fields, "messages": messages}
        return dataclasses.replace(self, messages=messages, body=body)

    def upstream_call(self, upstream_model: str) -> ChatCall:
        """The call as a provider is handed it, for the upstream's name of the model."""
        return ChatCall(
            upstream_model,
            self.messages,
            self.max_tokens,
            self.temperature,
            self.extra,
            self.body,
        )


def _string_field(container: dict[str, Any], name: str, param: str, *, required: bool) -> None:
    value = container.get(name)
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise _refuse(f"{param}.{name}", "must be a string")


def _check_part(part: Any, param: str) -> None:
    if not isinstance(part, dict):
        raise _refuse(param, "must be an object (a content part)")
    kind = part.get("type")
    field = PART_FIELDS.get(kind) if isinstance(kind, str) else None
    if field is None:
        raise _refuse(f"{param}.type", f"must be one of {sorted(PART_FIELDS)}")
    value = part.get(field)
    if field in {"text", "refusal"}:
        if not isinstance(value, str):
            raise _refuse(f"{param}.{field}", "must be a string")
    elif not isinstance(value, dict):
        raise _refuse(f"{param}.{field}", "must be an object")


def _check_content(message: dict[str, Any], role: str, param: str) -> None:
    content = message.get("content")
    if content is None:
        if role not in CONTENT_OPTIONAL_ROLES:
            raise _refuse(f"{param}.content", f"is required on a {role} message")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _refuse(f"{param}.content", "must be a string or an array of content parts")
    for index, part in enumerate(content):
        _check_part(part, f"{param}.content[{index}]")


def _check_tool_calls(message: dict[str, Any], param: str) -> None:
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise _refuse(f"{param}.tool_calls", "must be an array")
        for index, call in enumerate(calls):
            where = f"{param}.tool_calls[{index}]"
            if not isinstance(call, dict):
                raise _refuse(where, "must be an object")
            _string_field(call, "id", where, required=False)
            _string_field(call, "type", where, required=False)
            function = call.get("function")
            if not isinstance(function, dict):
                raise _refuse(f"{where}.function", "must be an object")
            _string_field(function, "name", f"{where}.function", required=True)
            _string_field(function, "arguments", f"{where}.function", required=True)
    legacy = message.get("function_call")
    if legacy is not None:
        if not isinstance(legacy, dict):
            raise _refuse(f"{param}.function_call", "must be an object")
        _string_field(legacy, "name", f"{param}.function_call", required=False)
        _string_field(legacy, "arguments", f"{param}.function_call", required=False)


def _depth(value: Any) -> int:
    """How deeply JSON arrays and objects nest in the value (iterative: no recursion)."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth + 1)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _check_message(message: Any, index: int) -> None:
    """The fields of a message the gateway reads, redacts or hands a provider."""
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _refuse(param, "must be an object")
    if _depth(message) > MAX_MESSAGE_DEPTH:
        raise _refuse(param, f"nests deeper than {MAX_MESSAGE_DEPTH} levels")
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise _refuse(f"{param}.role", f"is required, one of {sorted(ROLES)}")
    _check_content(message, role, param)
    _string_field(message, "name", param, required=role == "function")
    _string_field(message, "tool_call_id", param, required=role == "tool")
    _string_field(message, "refusal", param, required=False)
    _check_tool_calls(message, param)


def _identifier(data: dict[str, Any], name: str, limit: int, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _refuse(name, "must be a non-empty string")
    if len(value) > limit:
        raise _refuse(name, f"is {len(value)} characters; at most {limit}")
    return value


def _max_tokens(data: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = data.get(name)
        if value is not None and (not is_integer(value) or not 0 < value <= MAX_TOKENS_LIMIT):
            raise _refuse(name, f"must be an integer from 1 to {MAX_TOKENS_LIMIT}")
    chosen = data.get("max_completion_tokens", data.get("max_tokens"))
    return None if chosen is None else int(chosen)


def parse_chat_request(
    body: bytes,
    *,
    max_messages: int,
    max_identifier_chars: int = 256,
    limits: BodyLimits | None = None,
) -> ChatRequest:
    """Validate the body; GatewayError with a stable code, and the field at fault as
    `param`, on any fault of the caller's. Parameters OpenAI validates are validated as
    it does (chat_params); fields nobody here knows are bounded in shape only."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(errors.INVALID_JSON, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GatewayError(errors.INVALID_REQUEST, "request body must be a JSON object")
    limits = limits or BodyLimits()
    check_shape(data, limits)
    model = _identifier(data, "model", max_identifier_chars, required=True)
    assert model is not None, "required"
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _refuse("messages", "must be a non-empty array")
    if len(messages) > max_messages:
        raise _refuse("messages", f"has {len(messages)} items; limit {max_messages}")
    for index, message in enumerate(messages):
        _check_message(message, index)
    max_tokens = _max_tokens(data)
    include_usage = check_parameters(data, limits)
    temperature = data.get("temperature")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise _refuse("stream", "must be a boolean")
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        max_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
        user=_identifier(data, "user", max_identifier_chars, required=False),
        extra={k: data[k] for k in PASSTHROUGH_FIELDS if k in data},
        body=data,
        include_usage=include_usage,
        choices=int(data.get("n") or 1),
    )


def parse_traceparent(header: str | None) -> tuple[str, str] | None:
    """(trace_id, parent_span_id) of a W3C traceparent header; None without one or when
    it is not W3C's form (lowercase hex; version ff and all-zero ids are invalid), which
    the gateway refuses (`traceparent_error`) once it knows the caller."""
    match = W3C_TRACEPARENT.fullmatch(header.strip(" \t")) if header is not None else None
    if (
        match is None
        or match.group(1) == "ff"
        or set(match.group(2)) == {"0"}
        or set(match.group(3)) == {"0"}
    ):
        return None
    return match.group(2), match.group(3)


def traceparent_error() -> GatewayError:
    """The refusal of a traceparent header that `parse_traceparent` could not read."""
    return _refuse(
        "traceparent", "header must be W3C's version-traceid-parentid-flags in lowercase hex"
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
