"""The chat-completion parameters OpenAI validates, validated the same way: a 400 naming
the parameter. Fields the gateway does not know pass through to the upstream unread, so
only their JSON shape is bounded (nesting depth and members per array or object)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.errors import GatewayError
from schemas.settings import GatewaySettings

# OpenAI's ranges, per its API reference for chat completions.
NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
BOOLEANS = ("logprobs", "parallel_tool_calls", "store", "stream")
OBJECTS = ("metadata", "prediction", "audio", "web_search_options", "logit_bias")
STRINGS = ("service_tier", "reasoning_effort", "verbosity", "prompt_cache_key")
MAX_STOP_SEQUENCES = 4
MAX_TOP_LOGPROBS = 20
LOGIT_BIAS_LIMIT = 100.0
TOOL_CHOICES = frozenset({"none", "auto", "required"})
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
# OpenAI's rule for function and schema names.
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """Bounds on a body's JSON shape and on `n` (settings max_json_depth,
    max_json_members and max_choices)."""

    max_depth: int = 32
    max_members: int = 4096
    max_choices: int = 128


def body_limits(settings: GatewaySettings) -> BodyLimits:
    """The limits the settings set."""
    return BodyLimits(settings.max_json_depth, settings.max_json_members, settings.max_choices)


def refuse(param: str, message: str) -> GatewayError:
    """A 400 naming the parameter at fault."""
    return GatewayError(errors.INVALID_REQUEST, f"'{param}' {message}", param=param)


def is_number(value: Any) -> bool:
    """A JSON number (a bool is not one, though Python says so)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    """A JSON integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_shape(data: dict[str, Any], limits: BodyLimits) -> None:
    """Refuse a body nesting deeper than `max_depth` or with an array or object of more
    than `max_members` members, wherever it is (iterative: no recursion on hostile input).
    Paths are only spelled out for the refusal: the walk that passes builds none."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limits.max_depth:
            raise refuse(_path_to(data, item), f"nests deeper than {limits.max_depth} levels")
        if len(children) > limits.max_members:
            where = _path_to(data, item)
            raise refuse(where, f"has {len(children)} members; limit {limits.max_members}")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _path_to(data: dict[str, Any], target: Any) -> str:
    """Where `target` (by identity) sits in the body, as OpenAI names a `param`."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        item, path = stack.pop()
        if item is target:
            return path or "body"
        if isinstance(item, dict):
            stack.extend((v, f"{path}.{k}" if path else k) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
    return "body"


def _check_types(data: dict[str, Any]) -> None:
    for name in BOOLEANS:
        if data.get(name) is not None and not isinstance(data[name], bool):
            raise refuse(name, "must be a boolean")
    for name in OBJECTS:
        if data.get(name) is not None and not isinstance(data[name], dict):
            raise refuse(name, "must be an object")
    for name in STRINGS:
        if data.get(name) is not None and not isinstance(data[name], str):
            raise refuse(name, "must be a string")
    if data.get("seed") is not None and not is_integer(data["seed"]):
        raise refuse("seed", "must be an integer")
    modalities = data.get("modalities")
    if modalities is not None and not (
        isinstance(modalities, list) and all(isinstance(m, str) for m in modalities)
    ):
        raise refuse("modalities", "must be an array of strings")


def _check_ranges(data: dict[str, Any], limits: BodyLimits) -> None:
    for name, (low, high) in NUMBER_RANGES.items():
        value = data.get(name)
        if value is not None and (not is_number(value) or not low <= value <= high):
            raise refuse(name, f"must be a number from {low:g} to {high:g}")
    n = data.get("n")
    if n is not None and (not is_integer(n) or not 1 <= n <= limits.max_choices):
        raise refuse("n", f"must be an integer from 1 to {limits.max_choices}")
    stop = data.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise refuse("stop", "must be a string or an array of strings")
        if len(stop) > MAX_STOP_SEQUENCES:
            raise refuse("stop", f"has {len(stop)} sequences; at most {MAX_STOP_SEQUENCES}")
    top_logprobs = data.get("top_logprobs")
    if top_logprobs is not None:
        if not is_integer(top_logprobs) or not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise refuse("top_logprobs", f"must be an integer from 0 to {MAX_TOP_LOGPROBS}")
        if data.get("logprobs") is not True:
            raise refuse("top_logprobs", "needs 'logprobs' set to true")
    for token, bias in (data.get("logit_bias") or {}).items():
        if not token.isdigit() or not is_number(bias) or abs(bias) > LOGIT_BIAS_LIMIT:
            raise refuse(
                f"logit_bias.{token}",
                f"must map a token id to a number from -{LOGIT_BIAS_LIMIT:g} "
                f"to {LOGIT_BIAS_LIMIT:g}",
            )


def _check_function(function: Any, param: str) -> None:
    if not isinstance(function, dict):
        raise refuse(param, "must be an object")
    name = function.get("name")
    if not isinstance(name, str) or FUNCTION_NAME.fullmatch(name) is None:
        raise refuse(f"{param}.name", "must be 1 to 64 letters, digits, '_' or '-'")
    if function.get("description") is not None and not isinstance(function["description"], str):
        raise refuse(f"{param}.description", "must be a string")
    if function.get("parameters") is not None and not isinstance(function["parameters"], dict):
        raise refuse(f"{param}.parameters", "must be an object (a JSON schema)")
    if function.get("strict") is not None and not isinstance(function["strict"], bool):
        raise refuse(f"{param}.strict", "must be a boolean")


def _check_tools(data: dict[str, Any]) -> None:
    tools = data.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise refuse("tools", "must be an array")
        for index, tool in enumerate(tools):
            where = f"tools[{index}]"
            if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
                raise refuse(f"{where}.type", "is required (a string)")
            if tool["type"] == "function":
                _check_function(tool.get("function"), f"{where}.function")
    choice = data.get("tool_choice")
    if choice is None:
        return
    if not tools:
        raise refuse("tool_choice", "is only allowed when 'tools' are given")
    if isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise refuse("tool_choice", f"must be one of {sorted(TOOL_CHOICES)} or an object")
    elif not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise refuse("tool_choice", f"must be one of {sorted(TOOL_CHOICES)} or an object")
    elif choice["type"] == "function":
        function = choice.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise refuse("tool_choice.function.name", "is required (a string)")


def _check_response_format(data: dict[str, Any]) -> None:
    response_format = data.get("response_format")
    if response_format is None:
        return
    if not isinstance(response_format, dict) or response_format.get("type") not in (
        RESPONSE_FORMATS
    ):
        raise refuse("response_format.type", f"must be one of {sorted(RESPONSE_FORMATS)}")
    if response_format["type"] != "json_schema":
        return
    schema = response_format.get("json_schema")
    if not isinstance(schema, dict):
        raise refuse("response_format.json_schema", "is required (an object)")
    name = schema.get("name")
    if not isinstance(name, str) or FUNCTION_NAME.fullmatch(name) is None:
        raise refuse(
            "response_format.json_schema.name", "must be 1 to 64 letters, digits, '_' or '-'"
        )
    if schema.get("schema") is not None and not isinstance(schema["schema"], dict):
        raise refuse("response_format.json_schema.schema", "must be an object")


def _check_stream_options(data: dict[str, Any]) -> bool:
    """Whether the caller asked for the usage chunk of a stream."""
    options = data.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise refuse("stream_options", "must be an object")
    if data.get("stream") is not True:
        raise refuse("stream_options", "is only allowed when 'stream' is true")
    include_usage = options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise refuse("stream_options.include_usage", "must be a boolean")
    return include_usage is True


def check_parameters(data: dict[str, Any], limits: BodyLimits) -> bool:
    """Validate every parameter OpenAI validates besides model, messages and max tokens;
    returns whether a stream's caller asked for its usage chunk."""
    _check_types(data)
    _check_ranges(data, limits)
    _check_tools(data)
    _check_response_format(data)
    return _check_stream_options(data)


def check_sampling(data: dict[str, Any], limits: BodyLimits) -> None:
    """The ranges and types of the parameters chat shares with the legacy completions
    API (temperature, top_p, penalties, n, stop, logit_bias, seed)."""
    if data.get("logit_bias") is not None and not isinstance(data["logit_bias"], dict):
        raise refuse("logit_bias", "must be an object")
    _check_ranges(data, limits)
    if data.get("seed") is not None and not is_integer(data["seed"]):
        raise refuse("seed", "must be an integer")


def stream_usage_asked(data: dict[str, Any]) -> bool:
    """Validate `stream_options` (only on a stream); whether the usage chunk was asked."""
    return _check_stream_options(data)
