"""OpenAI's `POST /v1/responses` (the Responses API) as the pipeline serves it
(gateway.endpoint.Endpoint), streamed or not: validated as OpenAI validates it, the body
forwarded as sent (the model mapped, `input` and `instructions` as the policy chain left
them) and the reply relayed whole. Usage is the reply's `input_tokens`/`output_tokens`.

The reply's `id` stays the upstream's (`resp_…`): the Responses API is stateful
(`previous_response_id`, retrieval by id), so the gateway cannot rename it; the reply
names its audit row by the X-Govledger-Event-Id header. `model` is the model asked for,
as in chat. A stream's terminal event (response.completed, .incomplete, .failed) is held
until the call is recorded; a stream that ends in response.failed is recorded as a failed
call (502 upstream_error), as a chat stream the upstream breaks off is."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web

from gateway import api_common
from gateway.chat import MAX_TOKENS_LIMIT
from gateway.chat_params import FUNCTION_NAME, BodyLimits, is_integer, is_number, refuse
from gateway.providers.azure import AzureOpenAIProvider
from gateway.providers.base import Completion, Delta, Provider, UpstreamError, Usage
from gateway.providers.compat_variants import MistralProvider
from gateway.replies import ChunkRelay
from gateway.tokens import estimate_text_tokens
from schemas.pricing import openai_usage
from schemas.settings import GatewaySettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Parse = Callable[[bytes, GatewaySettings, BodyLimits], Any]


class Serving(Protocol):
    """The pipeline's entry point (gateway.pipeline.Gateway.serve)."""

    async def serve(self, request: web.Request, api: str, parse: Parse) -> web.StreamResponse:
        """One call to `api`, its request adapter made by `parse`."""
        ...


RESPONSES_API = "responses"
RESPONSES_PATH = "/v1/responses"
TOOL_CHOICES = ("none", "auto", "required")
TEXT_FORMATS = ("text", "json_object", "json_schema")
MIN_OUTPUT_TOKENS = 16
"""OpenAI's least `max_output_tokens`."""
MAX_TOP_LOGPROBS = 20
BOOLEANS = ("stream", "store", "background", "parallel_tool_calls")
NUMBER_RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)}
# Events that end a stream: held until the call is recorded.
RESPONSE_FAILED = "response.failed"
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", RESPONSE_FAILED})
# The attempt's error when a stream ends in response.failed (the call: 502 upstream_error).
RESPONSE_FAILED_ERROR = "response_failed"
# Events whose `delta` is text the model produced (hashed; estimated from when no usage).
TEXT_DELTA_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
    }
)
# Events that carry the whole response object, whose `model` is the caller's.
RESPONSE_EVENTS = TERMINAL_EVENTS | {"response.created", "response.in_progress", "response.queued"}
# Fields the policy chain does not read: numbers, flags and enums no text can hide in.
NOT_SCANNED = frozenset(
    {
        "model",
        *BOOLEANS,
        *NUMBER_RANGES,
        "stream_options",
        "max_output_tokens",
        "max_tool_calls",
        "top_logprobs",
        "truncation",
        "service_tier",
        "include",
    }
)


def output_text(output: Any) -> str:
    """The text of a response's output items: message text and refusals, function-call
    arguments, joined. TypeError when `output` is not an array of objects."""
    if not isinstance(output, list):
        raise TypeError("the reply has no 'output' array")
    texts: list[str] = []
    for item in output:
        if not isinstance(item, dict):
            raise TypeError("'output' is not an array of objects")
        if isinstance(item.get("arguments"), str):
            texts.append(item["arguments"])
        content = item.get("content")
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict):
                texts.extend(part[k] for k in ("text", "refusal") if isinstance(part.get(k), str))
    return "".join(texts)


def response_usage(data: Any, status: int = 200) -> Usage | None:
    """The Responses API's usage (input and output tokens, with their cached and
    reasoning parts, each priced at its own rate) as counts; None when absent;
    bad_response when malformed."""
    try:
        return openai_usage(data)
    except TypeError as exc:
        raise UpstreamError(status, "bad_response", str(exc)) from exc


def usage_object(usage: Usage) -> dict[str, Any]:
    """The Responses API's usage object of counts (estimated ones, when none reported)."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _sse(event: Mapping[str, Any]) -> bytes:
    name = event.get("type")
    head = b"event: " + name.encode() + b"\n" if isinstance(name, str) and "\n" not in name else b""
    return head + b"data: " + orjson.dumps(event) + b"\n\n"


class ResponsesRelay(ChunkRelay):
    """Relays a Responses stream's events as the provider sent them (the response
    object's `model` the caller's), holding the terminal event for `tail`."""

    def __init__(self, model: str) -> None:
        super().__init__("", model, include_usage=False)
        self._terminal: list[bytes] = []

    def events(self, delta: Delta) -> list[bytes]:
        event = dict(delta.chunk or {})
        response = event.get("response")
        if event.get("type") in RESPONSE_EVENTS and isinstance(response, dict):
            event["response"] = {**response, "model": self.model}
        if event.get("type") in TERMINAL_EVENTS:
            self.finish = str(event["type"])
            self._terminal.append(_sse(event))
            return []
        return [_sse(event)]

    def failure(self) -> str | None:
        return RESPONSE_FAILED_ERROR if self.finish == RESPONSE_FAILED else None

    def tail(self, usage: Usage) -> list[bytes]:
        del usage  # the terminal event carries the provider's
        return list(self._terminal)


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A validated Responses API request: the body as sent and what the gateway reads."""

    model: str
    user: str | None
    body: dict[str, Any]
    stream: bool
    input_tokens: int
    max_output_tokens: int | None
    api = RESPONSES_API
    token_ids_in = None  # Responses input is text and content parts: the chain reads it

    def rate_tokens(self) -> int:
        return self.input_tokens + (self.max_output_tokens or 0)

    def reservation_tokens(self, default_completion_tokens: int) -> tuple[int, int]:
        return self.input_tokens, self.max_output_tokens or default_completion_tokens

    def policy_messages(self) -> list[dict[str, Any]]:
        return api_common.scanned_fields(self.body, NOT_SCANNED)

    def after_policy(
        self, scanned: list[dict[str, Any]], verdict: Sequence[dict[str, Any]]
    ) -> ResponsesRequest:
        body = api_common.body_after_policy(self.body, scanned, verdict)
        return self if body is None else dataclasses.replace(self, body=body)

    def served_by(self, provider: Provider) -> bool:
        # Azure's Responses API is not under the deployment path its adapter builds, and
        # Mistral has none: a clear 400 rather than the upstream's 404 as a 502.
        unserved = isinstance(provider, (AzureOpenAIProvider, MistralProvider))
        return api_common.served_by(provider) and not unserved

    async def complete(self, provider: Provider, upstream_model: str) -> Completion:
        reply = await api_common.call(provider, RESPONSES_API, upstream_model, self.body)
        try:
            text = output_text(reply.get("output"))
        except TypeError as exc:
            raise UpstreamError(200, "bad_response", str(exc)) from exc
        status = reply.get("status")
        finish = status if isinstance(status, str) else "completed"
        return Completion(text, finish, response_usage(reply.get("usage")), reply)

    async def open_stream(
        self, provider: Provider, upstream_model: str
    ) -> AsyncGenerator[Delta, None]:
        events = api_common.chunks(provider, RESPONSES_API, upstream_model, self.body)
        async for event in events:
            kind = event.get("type")
            delta = event.get("delta")
            text = delta if kind in TEXT_DELTA_EVENTS and isinstance(delta, str) else ""
            usage = None
            if kind in TERMINAL_EVENTS:
                response = event.get("response")
                if isinstance(response, dict):
                    usage = response_usage(response.get("usage"))
            yield Delta(text, str(kind) if kind in TERMINAL_EVENTS else None, usage, event)

    def estimate_usage(self, text: str) -> Usage:
        return Usage(self.input_tokens, estimate_text_tokens(text))

    def reply_body(self, completion: Completion, event_id: str, usage: Usage) -> bytes:
        del event_id  # the id is the upstream's (stateful); the response header names the row
        reply = {**(completion.reply or {}), "model": self.model}
        if not isinstance(reply.get("usage"), dict):
            reply["usage"] = usage_object(usage)
        return orjson.dumps(reply)

    def relay(self, event_id: str) -> ChunkRelay:
        del event_id
        return ResponsesRelay(self.model)


def _check_tools(data: dict[str, Any]) -> None:
    tools = data.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise refuse("tools", "must be an array")
        for index, tool in enumerate(tools):
            where = f"tools[{index}]"
            if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
                raise refuse(f"{where}.type", "is required (a string)")
            if tool["type"] != "function":
                continue  # built-in tools (web_search, file_search, …): the upstream's to check
            name = tool.get("name")
            if not isinstance(name, str) or FUNCTION_NAME.fullmatch(name) is None:
                raise refuse(f"{where}.name", "must be 1 to 64 letters, digits, '_' or '-'")
            if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
                raise refuse(f"{where}.parameters", "must be an object (a JSON schema)")
            for flag in ("strict",):
                if tool.get(flag) is not None and not isinstance(tool[flag], bool):
                    raise refuse(f"{where}.{flag}", "must be a boolean")
    choice = data.get("tool_choice")
    if choice is None or (isinstance(choice, str) and choice in TOOL_CHOICES):
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise refuse("tool_choice", f"must be one of {list(TOOL_CHOICES)} or an object")
    if choice["type"] == "function" and not isinstance(choice.get("name"), str):
        raise refuse("tool_choice.name", "is required (a string)")


def _check_text(data: dict[str, Any]) -> None:
    text = data.get("text")
    if text is None:
        return
    if not isinstance(text, dict):
        raise refuse("text", "must be an object")
    text_format = text.get("format")
    if text_format is None:
        return
    if not isinstance(text_format, dict) or text_format.get("type") not in TEXT_FORMATS:
        raise refuse("text.format.type", f"must be one of {list(TEXT_FORMATS)}")
    if text_format["type"] != "json_schema":
        return
    name = text_format.get("name")
    if not isinstance(name, str) or FUNCTION_NAME.fullmatch(name) is None:
        raise refuse("text.format.name", "must be 1 to 64 letters, digits, '_' or '-'")
    if not isinstance(text_format.get("schema"), dict):
        raise refuse("text.format.schema", "is required (an object, a JSON schema)")


def _check_input(data: dict[str, Any]) -> None:
    instructions = data.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise refuse("instructions", "must be a string")
    value = data.get("input")
    if value is None:
        if all(data.get(k) is None for k in ("previous_response_id", "prompt", "conversation")):
            raise refuse("input", "is required (a string or an array of input items)")
        return
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise refuse("input", "must be a string or an array of input items")
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise refuse(f"input[{index}]", "must be an object (an input item)")


def _check_numbers(data: dict[str, Any]) -> None:
    for name in BOOLEANS:
        if data.get(name) is not None and not isinstance(data[name], bool):
            raise refuse(name, "must be a boolean")
    for name, (low, high) in NUMBER_RANGES.items():
        value = data.get(name)
        if value is not None and (not is_number(value) or not low <= value <= high):
            raise refuse(name, f"must be a number from {low:g} to {high:g}")
    limited = {
        "max_output_tokens": (MIN_OUTPUT_TOKENS, MAX_TOKENS_LIMIT),
        "top_logprobs": (0, MAX_TOP_LOGPROBS),
        "max_tool_calls": (1, MAX_TOKENS_LIMIT),
    }
    for name, (low, high) in limited.items():
        value = data.get(name)
        if value is not None and (not is_integer(value) or not low <= value <= high):
            raise refuse(name, f"must be an integer from {low} to {high}")
    if data.get("metadata") is not None and not isinstance(data["metadata"], dict):
        raise refuse("metadata", "must be an object")
    if data.get("stream_options") is not None:
        if not isinstance(data["stream_options"], dict):
            raise refuse("stream_options", "must be an object")
        if data.get("stream") is not True:
            raise refuse("stream_options", "is only allowed when 'stream' is true")


def _prompt_tokens(data: dict[str, Any]) -> int:
    """Tokens of what the model reads, estimated generously: the JSON text of the input,
    the instructions, the tools and the output format."""
    read = {k: data.get(k) for k in ("input", "instructions", "tools", "text")}
    return estimate_text_tokens(orjson.dumps(read).decode())


def parse_responses(body: bytes, settings: GatewaySettings, limits: BodyLimits) -> ResponsesRequest:
    """The Responses API request of a body; GatewayError naming the parameter at fault."""
    data = api_common.read_object(body, limits)
    model = api_common.identifier(data, "model", settings.max_identifier_chars, required=True)
    assert model is not None, "required"
    _check_input(data)
    _check_numbers(data)
    _check_tools(data)
    _check_text(data)
    max_output_tokens = data.get("max_output_tokens")
    return ResponsesRequest(
        model=model,
        user=api_common.identifier(data, "user", settings.max_identifier_chars, required=False),
        body=data,
        stream=data.get("stream") is True,
        input_tokens=_prompt_tokens(data),
        max_output_tokens=None if max_output_tokens is None else int(max_output_tokens),
    )


def responses_handler(gateway: Serving) -> Handler:
    """The aiohttp handler of `POST /v1/responses` on the gateway's pipeline."""

    async def responses(request: web.Request) -> web.StreamResponse:
        return await gateway.serve(request, RESPONSES_API, parse_responses)

    return responses
