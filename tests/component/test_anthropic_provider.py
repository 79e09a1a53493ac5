"""Chat completions through the gateway, as the official openai SDK makes them, served by
the Anthropic provider against an upstream double that answers in the shapes of
Anthropic's Messages API reference: a tool-call round trip, streamed and not, comes back
as OpenAI tool calls (and their deltas), the upstream receives tools, tool_use and
tool_result blocks, and each call has one lineage record with the reported tokens.
Anthropic's SDK over the same provider: tool_use blocks both ways."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel

from gateway.providers.anthropic import AnthropicProvider
from tests.component.support import Component, running_component
from tests.unit.provider_support import anthropic_sse

MODEL = "claude-sonnet-4-0"
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOL_ID = "toolu_01A09q90qw90lq917835lq9"
ANSWER = "18°C and sunny in Paris."
INPUT_TOKENS, CACHE_READ_TOKENS, OUTPUT_TOKENS = 300, 100, 40


class Weather(BaseModel):
    city: str
    temperature_c: float


def _usage() -> dict[str, int]:
    return {
        "input_tokens": INPUT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": CACHE_READ_TOKENS,
        "output_tokens": OUTPUT_TOKENS,
    }


def _message(content: list[dict[str, Any]], stop_reason: str) -> dict[str, Any]:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(),
    }


def _events(content: list[dict[str, Any]], stop_reason: str) -> list[dict[str, Any]]:
    start = _message([], stop_reason)
    start["stop_reason"] = None
    start["usage"] = {**_usage(), "output_tokens": 1}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(content):
        opened: dict[str, Any]
        if block["type"] == "text":
            opened = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            opened = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events.append({"type": "content_block_start", "index": index, "content_block": opened})
        events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    stop = {"stop_reason": stop_reason, "stop_sequence": None}
    events.append({"type": "message_delta", "delta": stop, "usage": {"output_tokens": 40}})
    events.append({"type": "message_stop"})
    return events


@dataclass
class AnthropicDouble:
    """Anthropic's Messages API: a tool call first, the answer once a tool_result came
    back, JSON when structured output is asked; keeps each body it received."""

    received: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.received.append(body)
        content: list[dict[str, Any]]
        last = body["messages"][-1]["content"]
        if "output_config" in body:
            content = [{"type": "text", "text": '{"city": "Paris", "temperature_c": 18}'}]
            stop_reason = "end_turn"
        elif any(block["type"] == "tool_result" for block in last):
            content, stop_reason = [{"type": "text", "text": ANSWER}], "end_turn"
        else:
            call = {"type": "tool_use", "id": TOOL_ID, "name": "get_weather"}
            content = [{"type": "text", "text": "Checking."}, {**call, "input": {"city": "Paris"}}]
            stop_reason = "tool_use"
        if body.get("stream"):
            sse = anthropic_sse(*_events(content, stop_reason))
            return httpx.Response(200, content=sse, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=_message(content, stop_reason))


@dataclass
class Caller:
    sdk: openai.AsyncOpenAI
    secret: str
    stack: Component
    upstream: AnthropicDouble


@pytest.fixture
async def caller(tmp_path: Path) -> AsyncIterator[Caller]:
    async with running_component(
        tmp_path, anthropic_api_key="sk-ant-test", anthropic_models=MODEL
    ) as stack:
        upstream = AnthropicDouble()
        provider = AnthropicProvider(
            name="anthropic",
            api_key="sk-ant-test",
            timeout_s=5,
            transport=httpx.MockTransport(upstream),
        )
        stack.gateway.providers["anthropic"] = provider
        stack.publish_balance("agents", "5")
        secret = (await stack.create_key("agents"))["key"]
        sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key=secret, max_retries=0)
        try:
            yield Caller(sdk, secret, stack, upstream)
        finally:
            await sdk.close()
            await provider.close()


def _tool_turns(call_id: str, arguments: str) -> list[Any]:
    call = {"id": call_id, "type": "function"}
    function = {"name": "get_weather", "arguments": arguments}
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{**call, "function": function}],
    }
    return [*ASK, assistant, {"role": "tool", "tool_call_id": call_id, "content": "18°C, sunny"}]


def _assert_round_trip_received(upstream: AnthropicDouble) -> None:
    first, second = upstream.received
    assert first["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert second["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": TOOL_ID,
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": TOOL_ID, "content": "18°C, sunny"}],
        },
    ]


def _assert_recorded(caller: Caller, *, stream: bool) -> None:
    records = caller.stack.lineage.lineage()
    assert len(records) == 2
    for record in records:
        assert (record.api, record.decision, record.stream) == (
            "chat.completions",
            "allowed",
            stream,
        )
        assert (record.model_selected, record.usage_source) == (MODEL, "reported")
        # Anthropic's input_tokens exclude cache reads; OpenAI's prompt_tokens include them.
        prompt = INPUT_TOKENS + CACHE_READ_TOKENS
        assert (record.prompt_tokens, record.completion_tokens) == (prompt, OUTPUT_TOKENS)
        assert record.cached_prompt_tokens == CACHE_READ_TOKENS
        # claude-sonnet-4-0: 3,000 nano-USD an input token, 15,000 an output token, cache
        # reads at a tenth of the input rate.
        assert (
            record.cost_nanousd
            == INPUT_TOKENS * 3_000 + OUTPUT_TOKENS * 15_000 + CACHE_READ_TOKENS * 300
        )


async def test_a_tool_call_round_trip_through_the_anthropic_provider(caller: Caller) -> None:
    first = await caller.sdk.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    (choice,) = first.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert (call.id, call.function.name) == (TOOL_ID, "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert first.usage is not None and first.usage.prompt_tokens == 400

    second = await caller.sdk.chat.completions.create(
        model=MODEL, messages=_tool_turns(call.id, call.function.arguments), tools=[WEATHER_TOOL]
    )
    assert second.choices[0].message.content == ANSWER
    assert second.choices[0].finish_reason == "stop"
    _assert_round_trip_received(caller.upstream)
    _assert_recorded(caller, stream=False)


async def test_a_streamed_tool_call_round_trip_through_the_anthropic_provider(
    caller: Caller,
) -> None:
    stream = await caller.sdk.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER_TOOL], stream=True
    )
    text, call_id, name, arguments, finish = "", "", "", "", None
    async for chunk in stream:
        (choice,) = chunk.choices  # no usage chunk: the caller did not ask for one
        text += choice.delta.content or ""
        for delta in choice.delta.tool_calls or []:
            assert delta.index == 0
            call_id += delta.id or ""
            name += delta.function.name or "" if delta.function else ""
            arguments += (delta.function.arguments or "") if delta.function else ""
        finish = choice.finish_reason or finish
    assert (text, call_id, name, finish) == ("Checking.", TOOL_ID, "get_weather", "tool_calls")
    assert json.loads(arguments) == {"city": "Paris"}

    second = await caller.sdk.chat.completions.create(
        model=MODEL,
        messages=_tool_turns(call_id, arguments),
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in second]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (400, 40)
    _assert_round_trip_received(caller.upstream)
    _assert_recorded(caller, stream=True)


async def test_structured_output_through_the_anthropic_provider(caller: Caller) -> None:
    parsed = await caller.sdk.chat.completions.parse(
        model=MODEL, messages=ASK, response_format=Weather
    )
    assert parsed.choices[0].message.parsed == Weather(city="Paris", temperature_c=18)
    (received,) = caller.upstream.received
    assert received["output_config"]["format"]["type"] == "json_schema"
    assert received["output_config"]["format"]["schema"]["required"] == ["city", "temperature_c"]


async def test_anthropic_sdk_tools_reach_the_anthropic_provider(caller: Caller) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=caller.stack.url, api_key=caller.secret, max_retries=0
    ) as sdk:
        tool: Any = {
            "name": "get_weather",
            "description": "Current weather in a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
        message = await sdk.messages.create(
            model=MODEL, max_tokens=256, messages=ASK, tools=[tool], tool_choice={"type": "any"}
        )
    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[1].type == "tool_use" and message.content[1].input == {"city": "Paris"}
    (received,) = caller.upstream.received
    assert received["tools"] == [tool]
    assert received["tool_choice"] == {"type": "any"}
    (record,) = caller.stack.lineage.lineage()
    assert (record.api, record.completion_tokens) == ("messages", OUTPUT_TOKENS)


async def test_anthropic_sdk_streamed_tool_use_through_the_anthropic_provider(
    caller: Caller,
) -> None:
    tool: Any = {"name": "get_weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}
    async with (
        anthropic.AsyncAnthropic(
            base_url=caller.stack.url, api_key=caller.secret, max_retries=0
        ) as sdk,
        sdk.messages.stream(model=MODEL, max_tokens=256, messages=ASK, tools=[tool]) as stream,
    ):
        message = await stream.get_final_message()
    assert message.stop_reason == "tool_use"
    (text, call) = message.content
    assert text.type == "text" and text.text == "Checking."
    assert call.type == "tool_use" and (call.id, call.input) == (TOOL_ID, {"city": "Paris"})
    assert caller.upstream.received[0]["stream"] is True
    (record,) = caller.stack.lineage.lineage()
    assert (record.api, record.stream, record.completion_tokens) == ("messages", True, 40)
