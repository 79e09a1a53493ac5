"""Anthropic's Messages API through the gateway as the official `anthropic` SDK calls it:
streamed and not, with a tool round trip, served by the sim and by an OpenAI-compatible
upstream that records what it received (the translation checked field by field), the
key in x-api-key or as a bearer token, errors in Anthropic's shape, count_tokens, and
one lineage record of api "messages" priced like chat."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import pytest

from gateway.replies import EVENT_ID_HEADER
from tests.component.openai_upstream import (
    COMPLETION_TOKENS_PER_CHOICE,
    FAITHFUL_MODEL,
    PROMPT_TOKENS,
    TOOL_ARGUMENTS,
    OpenAIUpstream,
)
from tests.component.support import CUT_STREAM_MODEL, Component, running_component

WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city", "unit"],
    },
}
OPENAI_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": WEATHER_TOOL["input_schema"],
    },
}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
SYSTEM = "You are terse."


@dataclass
class Caller:
    sdk: anthropic.AsyncAnthropic
    secret: str
    stack: Component
    upstream: OpenAIUpstream


@pytest.fixture
async def caller(tmp_path: Path) -> AsyncIterator[Caller]:
    upstream = OpenAIUpstream()
    async with running_component(
        tmp_path, upstream=upstream, upstream_models=f"{FAITHFUL_MODEL},{CUT_STREAM_MODEL}"
    ) as stack:
        stack.publish_balance("agents", "5")
        secret = (await stack.create_key("agents"))["key"]
        sdk = anthropic.AsyncAnthropic(base_url=stack.url, api_key=secret, max_retries=0)
        yield Caller(sdk, secret, stack, upstream)
        await sdk.close()


def _round_trip_messages(tool_use: Any) -> Any:
    result = {"type": "tool_result", "tool_use_id": tool_use.id, "content": "21.5 C"}
    return [
        *ASK,
        {"role": "assistant", "content": [tool_use]},
        {"role": "user", "content": [result]},
    ]


async def test_a_tool_round_trip_is_translated_faithfully_to_an_openai_upstream(
    caller: Caller,
) -> None:
    first = await caller.sdk.messages.create(
        model=FAITHFUL_MODEL,
        max_tokens=200,
        system=SYSTEM,
        messages=ASK,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "auto"},
        stop_sequences=["END"],
        extra_body={"temperature": 0.2},  # older SDKs' parameter, still translated
    )
    assert first.stop_reason == "tool_use"
    tool_use = first.content[0]
    assert tool_use.type == "tool_use"
    assert (tool_use.id, tool_use.name, tool_use.input) == (
        "call_up_1",
        "get_weather",
        json.loads(TOOL_ARGUMENTS),
    )
    assert (first.usage.input_tokens, first.usage.output_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS_PER_CHOICE,
    )
    second = await caller.sdk.messages.create(
        model=FAITHFUL_MODEL,
        max_tokens=200,
        system=SYSTEM,
        messages=_round_trip_messages(tool_use),
        tools=[WEATHER_TOOL],
    )
    assert second.stop_reason == "end_turn"
    assert [b.type for b in second.content] == ["text"]
    assert second.content[0].text == "It is 21.5 C in Paris (choice 0)."  # type: ignore[union-attr]
    system = {"role": "system", "content": SYSTEM}
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_up_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS},
            }
        ],
    }
    assert caller.upstream.received == [
        {
            "model": FAITHFUL_MODEL,
            "messages": [system, *ASK],
            "max_tokens": 200,
            "temperature": 0.2,
            "stop": ["END"],
            "tools": [OPENAI_TOOL],
            "tool_choice": "auto",
        },
        {
            "model": FAITHFUL_MODEL,
            "messages": [
                system,
                *ASK,
                assistant,
                {"role": "tool", "tool_call_id": "call_up_1", "content": "21.5 C"},
            ],
            "max_tokens": 200,
            "tools": [OPENAI_TOOL],
        },
    ]


async def test_a_streamed_tool_call_from_an_openai_upstream_arrives_as_input_json_deltas(
    caller: Caller,
) -> None:
    async with caller.sdk.messages.stream(
        model=FAITHFUL_MODEL,
        max_tokens=100,
        messages=ASK,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "any"},
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("tool_use", json.loads(TOOL_ARGUMENTS))
    ]
    assert kinds.count("input_json") == 2  # the upstream's two argument pieces
    assert final.usage.output_tokens == COMPLETION_TOKENS_PER_CHOICE
    sent = caller.upstream.received[-1]
    assert (sent["stream"], sent["stream_options"], sent["tool_choice"]) == (
        True,
        {"include_usage": True},
        "required",
    )
    record = caller.stack.lineage.lineage()[-1]
    assert (record.api, record.stream, record.prompt_tokens, record.completion_tokens) == (
        "messages",
        True,
        PROMPT_TOKENS,
        COMPLETION_TOKENS_PER_CHOICE,
    )
    assert final.id == "msg_" + record.event_id


async def test_the_sim_serves_a_tool_round_trip_streamed_and_not(caller: Caller) -> None:
    first = await caller.sdk.messages.create(
        model="sim-small", max_tokens=50, messages=ASK, tools=[WEATHER_TOOL]
    )
    assert first.stop_reason == "tool_use"
    tool_use = first.content[0]
    assert tool_use.type == "tool_use" and tool_use.name == "get_weather"
    assert set(tool_use.input) == {"city", "unit"}
    async with caller.sdk.messages.stream(
        model="sim-small",
        max_tokens=50,
        messages=_round_trip_messages(tool_use),
        tools=[WEATHER_TOOL],
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert text and final.content[0].text == text  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0


async def test_each_call_has_one_lineage_record_of_api_messages_priced_like_chat(
    caller: Caller,
) -> None:
    raw = await caller.sdk.messages.with_raw_response.create(
        model=FAITHFUL_MODEL, max_tokens=20, messages=ASK
    )
    message = await raw.parse()
    record = caller.stack.lineage.lineage()[-1]
    assert len(caller.stack.lineage.lineage()) == 1
    assert raw.headers[EVENT_ID_HEADER] == record.event_id
    assert message.id == "msg_" + record.event_id
    target = caller.stack.gateway.catalogue[FAITHFUL_MODEL]
    assert (record.api, record.decision, record.usage_source) == ("messages", "allowed", "reported")
    assert (record.prompt_tokens, record.completion_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS_PER_CHOICE,
    )
    assert record.cost_nanousd == target.cost_nanousd(PROMPT_TOKENS, COMPLETION_TOKENS_PER_CHOICE)
    assert record.cost_nanousd > 0


async def test_the_key_is_accepted_as_a_bearer_token_too(caller: Caller) -> None:
    sdk = anthropic.AsyncAnthropic(
        base_url=caller.stack.url, auth_token=caller.secret, max_retries=0
    )
    async with sdk:
        message = await sdk.messages.create(model="sim-small", max_tokens=5, messages=ASK)
    assert message.content[0].type == "text"


async def test_a_bad_key_is_an_anthropic_shaped_401(caller: Caller) -> None:
    sdk = anthropic.AsyncAnthropic(base_url=caller.stack.url, api_key="gk_wrong", max_retries=0)
    async with sdk:
        with pytest.raises(anthropic.AuthenticationError) as raised:
            await sdk.messages.create(model="sim-small", max_tokens=5, messages=ASK)
    assert raised.value.status_code == 401
    assert raised.value.body == {
        "type": "error",
        "error": {
            "type": "authentication_error",
            "message": "unknown gateway key",
            "code": "invalid_api_key",
        },
    }


async def test_an_untranslatable_field_is_an_anthropic_400_and_a_rejected_record(
    caller: Caller,
) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        await caller.sdk.messages.create(
            model="sim-small", max_tokens=5, messages=ASK, extra_body={"top_k": 5}
        )
    error = raised.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"] == "'top_k' has no equivalent in chat completions"
    record = caller.stack.lineage.lineage()[-1]
    assert (record.api, record.decision, record.http_status) == ("messages", "rejected", 400)


async def test_a_team_without_budget_is_refused_with_a_billing_error(caller: Caller) -> None:
    secret = (await caller.stack.create_key("broke"))["key"]
    async with anthropic.AsyncAnthropic(
        base_url=caller.stack.url, api_key=secret, max_retries=0
    ) as sdk:
        with pytest.raises(anthropic.APIStatusError) as raised:
            await sdk.messages.create(model="sim-small", max_tokens=5, messages=ASK)
    assert raised.value.status_code == 402
    assert raised.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
    record = caller.stack.lineage.lineage()[-1]
    assert (record.api, record.decision, record.cost_nanousd) == ("messages", "rejected", 0)


async def test_count_tokens_estimates_the_input_for_a_model_the_key_may_call(
    caller: Caller,
) -> None:
    counted = await caller.sdk.messages.count_tokens(model="sim-small", system=SYSTEM, messages=ASK)
    with_tools = await caller.sdk.messages.count_tokens(
        model="sim-small", system=SYSTEM, messages=ASK, tools=[WEATHER_TOOL]
    )
    assert 0 < counted.input_tokens < with_tools.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        await caller.sdk.messages.count_tokens(model="no-such-model", messages=ASK)
    assert caller.stack.lineage.lineage() == []  # nothing called, nothing charged


async def test_structured_output_is_asked_as_a_json_schema_and_answered_as_text(
    caller: Caller,
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    message = await caller.sdk.messages.create(
        model=FAITHFUL_MODEL,
        max_tokens=50,
        messages=ASK,
        output_config={"format": {"type": "json_schema", "schema": dict(schema)}},
    )
    assert json.loads(message.content[0].text)["city"] == "Paris"  # type: ignore[union-attr]
    assert caller.upstream.received[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


async def test_a_stream_the_upstream_breaks_midway_ends_in_an_error_event_the_sdk_raises(
    caller: Caller,
) -> None:
    async def read_to_the_end() -> None:
        async with caller.sdk.messages.stream(
            model=CUT_STREAM_MODEL, max_tokens=20, messages=ASK
        ) as stream:
            async for _ in stream:
                pass

    with pytest.raises(anthropic.APIStatusError) as raised:
        await read_to_the_end()
    assert raised.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    record = caller.stack.lineage.lineage()[-1]
    assert (record.api, record.decision, record.http_status) == ("messages", "failed", 502)
