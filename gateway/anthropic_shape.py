"""Anthropic's Messages API translated to OpenAI's chat completions and back. Pure.

The gateway serves `POST /v1/messages` over any provider by translating the request into
a chat-completion body (what every provider adapter takes) and the provider's reply
back into a Message. Each field is translated or refused with a 400 naming it: nothing
is dropped without an error. Two hints that change no answer pass without effect and
are documented (docs/anthropic.md): `cache_control` on a block, and `anthropic-beta`
headers. The streamed side is gateway/anthropic_stream.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.chat_params import is_integer, refuse
from gateway.providers.base import UpstreamError, Usage

MESSAGES_API = "messages"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MESSAGE_ID_PREFIX = "msg_"
# OpenAI accepts at most four stop sequences; more cannot be translated.
MAX_STOP_SEQUENCES = 4
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# Fields of a Messages request the translation carries; any other is refused by name.
KNOWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "metadata",
        "output_config",
        "cache_control",
    }
)
# Why a known Anthropic field cannot be served through a chat-completion provider.
UNTRANSLATABLE = {
    "top_k": "has no equivalent in chat completions",
    "thinking": "(extended thinking) has no equivalent in chat completions",
    "container": "(code execution containers) is not supported by the gateway",
    "mcp_servers": "is not supported by the gateway",
    "service_tier": "is not supported by the gateway",
    "speed": "is not supported by the gateway",
    "inference_geo": "is not supported by the gateway (routing chooses the region)",
    "diagnostics": "is not supported by the gateway",
    "user_profile_id": "is not supported by the gateway",
    "workspace_id": "is not supported by the gateway",
}
# The name of the schema a structured-output request gives the upstream (OpenAI's
# json_schema needs one; Anthropic's has none).
OUTPUT_SCHEMA_NAME = "output"

# OpenAI's finish_reason → Anthropic's stop_reason.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# A name of the caller's is quoted back only when it looks like an API name: hostile
# bytes in a field or block type are never echoed.
QUOTABLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")


def named(value: Any) -> str:
    """A caller's field or type name as an error may quote it."""
    text = str(value)
    return text if QUOTABLE_NAME.fullmatch(text) else "(a name that is not an API name)"


def message_id(event_id: str) -> str:
    """The `id` of a Message: Anthropic's prefix and the lineage event id of the call."""
    return MESSAGE_ID_PREFIX + event_id


def stop_reason(finish_reason: str | None) -> str:
    """Anthropic's stop_reason for an OpenAI finish_reason (end_turn when unknown)."""
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


# --- request: Messages → chat completions -------------------------------------------


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise refuse(param, "must be a string")
    return value


def _check_block_keys(block: Mapping[str, Any], allowed: frozenset[str], param: str) -> None:
    for key in block:
        if key not in allowed and key != "cache_control":  # a caching hint: no effect here
            raise refuse(f"{param}.{named(key)}", "cannot be translated to chat completions")


def _system_text(system: Any, where: str = "system") -> str:
    """A system prompt: a string or an array of text blocks, joined."""
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise refuse(where, "must be a string or an array of text blocks")
    texts = []
    for index, block in enumerate(system):
        param = f"{where}[{index}]"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise refuse(param, "must be a text block")
        _check_block_keys(block, frozenset({"type", "text", "citations"}), param)
        if block.get("citations"):
            raise refuse(f"{param}.citations", "cannot be translated to chat completions")
        texts.append(_text(block.get("text"), f"{param}.text"))
    return "\n\n".join(texts)


def _image_part(block: Mapping[str, Any], param: str) -> dict[str, Any]:
    _check_block_keys(block, frozenset({"type", "source"}), param)
    source = block.get("source")
    if not isinstance(source, dict):
        raise refuse(f"{param}.source", "must be an object")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        if media_type not in IMAGE_MEDIA_TYPES:
            raise refuse(
                f"{param}.source.media_type", f"must be one of {sorted(IMAGE_MEDIA_TYPES)}"
            )
        data = _text(source.get("data"), f"{param}.source.data")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        url = _text(source.get("url"), f"{param}.source.url")
    else:
        raise refuse(f"{param}.source.type", "must be 'base64' or 'url'")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result_text(block: Mapping[str, Any], param: str) -> str:
    content = block.get("content", "")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise refuse(
                    f"{param}.content[{index}]",
                    "only text blocks in a tool_result can be translated to chat completions",
                )
            _check_block_keys(part, frozenset({"type", "text"}), f"{param}.content[{index}]")
            texts.append(_text(part.get("text"), f"{param}.content[{index}].text"))
        text = "".join(texts)
    else:
        raise refuse(f"{param}.content", "must be a string or an array of text blocks")
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool):
        raise refuse(f"{param}.is_error", "must be a boolean")
    # Chat completions has no error flag on a tool message: it is said in the text.
    return "[tool error] " + text if is_error else text


def _user_message(content: list[Any], param: str) -> list[dict[str, Any]]:
    """A user turn: its tool results as tool messages (they answer the assistant's
    calls, so they come first), then its other blocks as one user message."""
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        where = f"{param}[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            _check_block_keys(block, frozenset({"type", "text", "citations"}), where)
            if block.get("citations"):
                raise refuse(f"{where}.citations", "cannot be translated to chat completions")
            parts.append({"type": "text", "text": _text(block.get("text"), f"{where}.text")})
        elif kind == "image":
            parts.append(_image_part(block, where))
        elif kind == "tool_result":
            _check_block_keys(
                block, frozenset({"type", "tool_use_id", "content", "is_error"}), where
            )
            call_id = _text(block.get("tool_use_id"), f"{where}.tool_use_id")
            text = _tool_result_text(block, where)
            tool_messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
        else:
            raise refuse(f"{where}.type", f"block type {named(kind)!r} cannot be translated")
    if parts and tool_messages and index_of_first_text(content) < index_of_last_result(content):
        raise refuse(param, "tool_result blocks must come before other blocks in a user turn")
    return [*tool_messages, *([{"role": "user", "content": parts}] if parts else [])]


def index_of_first_text(content: list[Any]) -> int:
    """Where the first block that is not a tool result is (len when none)."""
    return next((i for i, b in enumerate(content) if b.get("type") != "tool_result"), len(content))


def index_of_last_result(content: list[Any]) -> int:
    """Where the last tool result is (-1 when none)."""
    found = [i for i, b in enumerate(content) if b.get("type") == "tool_result"]
    return found[-1] if found else -1


def _assistant_message(content: list[Any], param: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        where = f"{param}[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            _check_block_keys(block, frozenset({"type", "text", "citations"}), where)
            if block.get("citations"):
                raise refuse(f"{where}.citations", "cannot be translated to chat completions")
            texts.append(_text(block.get("text"), f"{where}.text"))
        elif kind == "tool_use":
            _check_block_keys(block, frozenset({"type", "id", "name", "input"}), where)
            tool_input = block.get("input")
            if not isinstance(tool_input, dict):
                raise refuse(f"{where}.input", "must be an object")
            function = {
                "name": _text(block.get("name"), f"{where}.name"),
                "arguments": orjson.dumps(tool_input).decode(),
            }
            call_id = _text(block.get("id"), f"{where}.id")
            calls.append({"id": call_id, "type": "function", "function": function})
        else:
            raise refuse(f"{where}.type", f"block type {named(kind)!r} cannot be translated")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise refuse("messages", "must be a non-empty array")
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise refuse(param, "must be an object")
        for key in message:
            if key not in ("role", "content"):
                raise refuse(f"{param}.{named(key)}", "is not a field of a message")
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            raise refuse(f"{param}.role", "must be 'user', 'assistant' or 'system'")
        content = message.get("content")
        if role == "system":  # a system turn amid the conversation (string or text blocks)
            text = _system_text(content, f"{param}.content")
            out.append({"role": "system", "content": text})
            continue
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list) or not content:
            raise refuse(f"{param}.content", "must be a string or a non-empty array of blocks")
        if role == "user":
            out.extend(_user_message(content, f"{param}.content"))
        else:
            out.append(_assistant_message(content, f"{param}.content"))
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise refuse("tools", "must be an array")
    out = []
    for index, tool in enumerate(tools):
        param = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise refuse(param, "must be an object")
        kind = tool.get("type", "custom")
        if kind != "custom":
            # Anthropic's server and client tools (web search, bash, computer use…) run
            # at Anthropic: no chat-completion provider has them.
            raise refuse(f"{param}.type", f"tool type {named(kind)!r} cannot be translated")
        _check_block_keys(tool, frozenset({"type", "name", "description", "input_schema"}), param)
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise refuse(f"{param}.input_schema", "must be an object")
        function: dict[str, Any] = {"name": _text(tool.get("name"), f"{param}.name")}
        if "description" in tool:
            function["description"] = _text(tool["description"], f"{param}.description")
        function["parameters"] = schema
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        raise refuse("tool_choice", "must be an object")
    kind = choice.get("type")
    allowed = {"type", "disable_parallel_tool_use"} | ({"name"} if kind == "tool" else set())
    for key in choice:
        if key not in allowed:
            raise refuse(f"tool_choice.{named(key)}", "is not a field of this tool_choice")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool":
        name = _text(choice.get("name"), "tool_choice.name")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise refuse("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'")
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None:
        if not isinstance(disable, bool):
            raise refuse("tool_choice.disable_parallel_tool_use", "must be a boolean")
        chat["parallel_tool_calls"] = not disable


def _number(data: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise refuse(name, f"must be a number from {low} to {high}")
    return float(value)


def _output_config(config: Any, chat: dict[str, Any]) -> None:
    """Structured output (`format`: a JSON schema) as OpenAI's json_schema
    response_format; `effort` has no chat-completion equivalent."""
    if not isinstance(config, dict):
        raise refuse("output_config", "must be an object")
    for key, value in config.items():
        if key == "effort" and value is not None:
            raise refuse("output_config.effort", "has no equivalent in chat completions")
        if key not in ("effort", "format"):
            raise refuse(f"output_config.{named(key)}", "cannot be translated")
    output = config.get("format")
    if output is None:
        return
    if (
        not isinstance(output, dict)
        or output.get("type") != "json_schema"
        or set(output)
        != {
            "type",
            "schema",
        }
    ):
        raise refuse("output_config.format", "must be {type: json_schema, schema}")
    if not isinstance(output["schema"], dict):
        raise refuse("output_config.format.schema", "must be an object")
    json_schema = {"name": OUTPUT_SCHEMA_NAME, "schema": output["schema"], "strict": True}
    chat["response_format"] = {"type": "json_schema", "json_schema": json_schema}


def to_chat_body(data: Mapping[str, Any]) -> dict[str, Any]:
    """The chat-completion body of a Messages request; GatewayError (400 naming the
    field) for anything that cannot be translated."""
    for key in data:
        if key in UNTRANSLATABLE:
            raise refuse(key, UNTRANSLATABLE[key])
        if key not in KNOWN_FIELDS:
            raise refuse(named(key), "is not a Messages API field the gateway can translate")
    hint = data.get("cache_control")
    if hint is not None and not isinstance(hint, dict):
        raise refuse("cache_control", "must be an object")
    max_tokens: Any = data.get("max_tokens")
    if not is_integer(max_tokens) or not 1 <= max_tokens <= 2**31 - 1:
        raise refuse("max_tokens", "must be a positive integer")
    messages = _messages(data.get("messages"))
    if "system" in data:
        messages.insert(0, {"role": "system", "content": _system_text(data["system"])})
    chat: dict[str, Any] = {"model": data.get("model"), "messages": messages}
    chat["max_tokens"] = max_tokens
    if (temperature := _number(data, "temperature", 0, 1)) is not None:
        chat["temperature"] = temperature
    if (top_p := _number(data, "top_p", 0, 1)) is not None:
        chat["top_p"] = top_p
    if "stop_sequences" in data:
        stops = data["stop_sequences"]
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise refuse("stop_sequences", "must be an array of non-empty strings")
        if len(stops) > MAX_STOP_SEQUENCES:
            raise refuse(
                "stop_sequences", f"at most {MAX_STOP_SEQUENCES} can be translated to 'stop'"
            )
        if stops:
            chat["stop"] = stops
    if "tools" in data:
        chat["tools"] = _tools(data["tools"])
    if "tool_choice" in data:
        _tool_choice(data["tool_choice"], chat)
    if "output_config" in data:
        _output_config(data["output_config"], chat)
    metadata = data.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or set(metadata) - {"user_id"}:
            raise refuse("metadata", "must be an object with at most 'user_id'")
        if metadata.get("user_id") is not None:
            chat["user"] = _text(metadata["user_id"], "metadata.user_id")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise refuse("stream", "must be a boolean")
    if stream:
        chat["stream"] = True
    return chat


# --- reply: chat completion → Message -------------------------------------------------


def tool_input(arguments: Any, status: int = 200) -> dict[str, Any]:
    """A tool call's arguments (JSON text) as a tool_use block's input object; a provider
    that sent anything else gave a bad response."""
    try:
        value = orjson.loads(arguments if isinstance(arguments, str) and arguments else "{}")
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(status, "bad_response", f"tool arguments are not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UpstreamError(status, "bad_response", "tool arguments are not a JSON object")
    return value


def content_blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The content blocks of an OpenAI assistant message: its text (or refusal), then a
    tool_use block per tool call."""
    blocks: list[dict[str, Any]] = []
    for field in ("content", "refusal"):
        text = message.get(field)
        if isinstance(text, str) and text:
            blocks.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise UpstreamError(200, "bad_response", "a tool call without a function name")
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or ""),
                "name": function["name"],
                "input": tool_input(function.get("arguments")),
            }
        )
    return blocks


def usage_object(usage: Usage) -> dict[str, int]:
    """Anthropic's usage object of the call's settled usage."""
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}


def message_body(
    *,
    reply: Mapping[str, Any] | None,
    text: str,
    finish_reason: str,
    reply_id: str,
    model: str,
    usage: Usage,
) -> dict[str, Any]:
    """The Message the caller gets: the first choice of the provider's chat.completion
    (the gateway never asks for more), or a translated adapter's text."""
    blocks: list[dict[str, Any]]
    if reply is None:
        blocks = [{"type": "text", "text": text}] if text else []
        finish: str | None = finish_reason
    else:
        choices = reply.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(first, dict) or not isinstance(first.get("message"), dict):
            raise UpstreamError(200, "bad_response", "the reply has no message")
        blocks = content_blocks(first["message"])
        finish = first.get("finish_reason")
        if first["message"].get("refusal"):
            finish = "content_filter"
    return {
        "id": reply_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason(finish),
        "stop_sequence": None,
        "usage": usage_object(usage),
    }
