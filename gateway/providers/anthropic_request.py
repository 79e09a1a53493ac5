"""A chat-completion request as an Anthropic Messages API body. Pure.

System and developer messages become the top-level `system`; user and assistant turns
become `messages` (same-role neighbours merged: the API wants them to alternate);
assistant `tool_calls` become `tool_use` blocks and `tool` messages `tool_result` blocks
in a user turn; `image_url` parts become `image` blocks; `tools`, `tool_choice`,
`parallel_tool_calls` and a `json_schema` `response_format` become their Messages API
equivalents. Anything the translation cannot carry faithfully is refused by name (a 400
through gateway.replies.upstream_failure), never dropped. The opposite direction (a
Messages request served as chat) is gateway/anthropic_shape.py; the image media types and
a tool call's arguments as an input object are read by its rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.anthropic_shape import IMAGE_MEDIA_TYPES, tool_input
from gateway.providers.base import ChatCall, UpstreamError

_SYSTEM_ROLES = frozenset({"system", "developer"})
# A data: URL of a base64 image, as OpenAI's SDKs and gateway/anthropic_shape.py write it.
_DATA_URL = re.compile(r"data:([a-z]{1,16}/[a-z0-9.+-]{1,64});base64,(.*)", re.DOTALL)
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")

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
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    }
)
# Fields whose value here asks for nothing beyond the default, so there is nothing to carry.
_NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logprobs": (False,),
}


def unsupported(message: str, param: str | None = None) -> UpstreamError:
    """The refusal of what Anthropic cannot be asked: nothing was sent (status 0);
    http_4xx because the same call can never succeed here, and `invalid` so the caller
    gets a 400 naming `param` (gateway.replies.upstream_failure), not a 502."""
    text = f"cannot translate for Anthropic: {message}"
    return UpstreamError(0, "http_4xx", text, invalid={"message": text, "param": param})


def _refuse_uncarried(body: Mapping[str, Any]) -> None:
    for name, value in body.items():
        if name in _CARRIED_FIELDS or value is None:
            continue
        if name in _NEUTRAL_VALUES and value in _NEUTRAL_VALUES[name]:
            continue
        # The caller's own key names come back only when they look like an API's.
        shown = repr(name) if _FIELD_NAME.fullmatch(name) else "a field"
        raise unsupported(
            f"{shown} has no Messages API equivalent on this route",
            name if _FIELD_NAME.fullmatch(name) else None,
        )


def _image_block(part: Mapping[str, Any], param: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else None
    if not isinstance(image, Mapping) or not isinstance(url, str):
        raise unsupported(f"{param}.image_url.url must be a string", f"{param}.image_url.url")
    detail = image.get("detail")
    if detail not in (None, "auto"):
        # Anthropic picks the resolution itself: a wish for another would be lost.
        shown = repr(detail) if detail in ("low", "high") else "this value"
        raise unsupported(
            f"{param}.image_url.detail {shown} has no equivalent", f"{param}.image_url.detail"
        )
    if (found := _DATA_URL.fullmatch(url)) is not None:
        media_type, data = found.groups()
        if media_type not in IMAGE_MEDIA_TYPES:
            raise unsupported(
                f"{param} is a {media_type!r} image; Anthropic takes {sorted(IMAGE_MEDIA_TYPES)}",
                f"{param}.image_url.url",
            )
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith("https://"):
        source = {"type": "url", "url": url}
    else:
        raise unsupported(f"{param} needs an https URL or a base64 data: URL", param)
    return {"type": "image", "source": source}


def _text_block(text: Any) -> list[dict[str, Any]]:
    # The API rejects empty text blocks; an empty text adds nothing to the turn.
    return [{"type": "text", "text": text}] if isinstance(text, str) and text else []


def _content_blocks(
    message: Mapping[str, Any], param: str, *, images: bool
) -> list[dict[str, Any]]:
    content = message.get("content")
    if content is None or isinstance(content, str):
        return _text_block(content)
    if not isinstance(content, list):
        raise unsupported(f"{param}.content is neither text nor a list of parts", param)
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
        if kind == "text":
            blocks += _text_block(part.get("text"))
        elif kind == "image_url" and images:
            blocks.append(_image_block(part, f"{param}.content[{index}]"))
        else:
            raise unsupported(
                f"{param} has a {kind!r} part, which cannot be carried here",
                f"{param}.content[{index}]",
            )
    return blocks


def _tool_use_blocks(message: Mapping[str, Any], param: str) -> list[dict[str, Any]]:
    if message.get("function_call") is not None:
        raise unsupported(f"{param}.function_call (legacy) is not carried", param)
    calls = message.get("tool_calls")
    blocks = []
    for index, call in enumerate(calls if isinstance(calls, list) else ()):
        where = f"{param}.tool_calls[{index}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise unsupported(f"{where} is not a function call", where)
        try:
            arguments = tool_input(function.get("arguments"))
        except UpstreamError as exc:  # the caller's, not the provider's, bad JSON here
            raise unsupported(f"{where}.function.arguments: {exc}", where) from exc
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise unsupported(f"{where}.id is required (tool_result blocks name it)", where)
        blocks.append(
            {"type": "tool_use", "id": call_id, "name": function["name"], "input": arguments}
        )
    return blocks


def _tool_result(message: Mapping[str, Any], param: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise unsupported(f"{param}.tool_call_id is required", param)
    texts = _content_blocks(message, param, images=False)
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if texts:
        block["content"] = "".join(text["text"] for text in texts)
    return block


def translate_messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(system, messages) of a chat conversation in the Messages API's shape."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        role = message.get("role")
        if role in _SYSTEM_ROLES:
            system.extend(b["text"] for b in _content_blocks(message, param, images=False))
            continue
        if role == "user":
            blocks = _content_blocks(message, param, images=True)
        elif role == "assistant":
            blocks = _content_blocks(message, param, images=False)
            blocks += _tool_use_blocks(message, param)
        elif role == "tool":
            # A tool's answer is a user turn's tool_result block; consecutive ones share
            # the turn (they answer one assistant turn's calls), before any user text.
            role, blocks = "user", [_tool_result(message, param)]
        else:
            raise unsupported(f"{param} has role {role!r}, which cannot be carried", param)
        if not blocks:
            continue
        # The API wants user and assistant to alternate: same-role neighbours are one turn.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(system), turns


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for index, tool in enumerate(tools if isinstance(tools, list) else ()):
        where = f"tools[{index}]"
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if kind != "function" or not isinstance(function, Mapping):
            shown = repr(kind) if isinstance(kind, str) and _FIELD_NAME.fullmatch(kind) else "a"
            raise unsupported(f"{shown} tool cannot be carried; only functions", f"{where}.type")
        parameters = function.get("parameters")
        # A function without parameters (or `{}`) takes none; Anthropic wants an object.
        schema = (
            parameters if isinstance(parameters, Mapping) and parameters else {"type": "object"}
        )
        translated: dict[str, Any] = {"name": function.get("name"), "input_schema": schema}
        if isinstance(function.get("description"), str):
            translated["description"] = function["description"]
        if function.get("strict") is True:  # Anthropic's strict tool use: the same promise
            translated["strict"] = True
        out.append(translated)
    return out


def _tool_choice(body: Mapping[str, Any]) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    translated: dict[str, Any]
    if choice is None or choice == "auto":
        translated = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}  # nothing is called, so nothing runs in parallel
    elif choice == "required":
        translated = {"type": "any"}
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        translated = {"type": "tool", "name": name}
    else:
        raise unsupported("this tool_choice has no Messages API equivalent", "tool_choice")
    if body.get("parallel_tool_calls") is False:
        translated["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # Anthropic's default is auto, in parallel: nothing to say
    return translated


def _output_format(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """A json_schema response_format as Anthropic's structured output
    (`output_config.format`: constrained to the schema, as OpenAI's strict is)."""
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if response_format is None or kind == "text":
        return None
    if kind != "json_schema":
        raise unsupported(
            f"'response_format' {kind!r} has no equivalent: Anthropic's JSON output needs a "
            "schema (use json_schema)",
            "response_format",
        )
    json_schema = response_format.get("json_schema")
    schema = json_schema.get("schema") if isinstance(json_schema, Mapping) else None
    if not isinstance(schema, Mapping):
        raise unsupported(
            "response_format.json_schema.schema is required here",
            "response_format.json_schema.schema",
        )
    return {"format": {"type": "json_schema", "schema": schema}}


def messages_body(call: ChatCall, *, default_max_tokens: int, stream: bool) -> dict[str, Any]:
    """The Messages API body of a chat call; UpstreamError (a 400 naming the field) for
    what cannot be carried, before anything is sent."""
    _refuse_uncarried(call.body)
    system, messages = translate_messages(call.messages)
    body: dict[str, Any] = {
        "model": call.upstream_model,
        "max_tokens": call.max_tokens or default_max_tokens,
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
    if call.body.get("tools"):
        body["tools"] = _tools(call.body["tools"])
        if (choice := _tool_choice(call.body)) is not None:
            body["tool_choice"] = choice
    elif call.body.get("tool_choice") not in (None, "none"):
        raise unsupported("'tool_choice' needs tools", "tool_choice")
    if (output := _output_format(call.body)) is not None:
        body["output_config"] = output
    if stream:
        body["stream"] = True
    return body
