"""The Responses API (`POST /v1/responses`) through the gateway as the official openai SDK
calls it, streamed and not, with a function-tool round trip and structured output
(`responses.parse` with a Pydantic model), against an OpenAI-compatible upstream that
records what it received (responses_upstream.py) and against the sim: the body reaches
the upstream as the SDK sent it (only the model mapped), the reply comes back whole, and
each call has one lineage record (api "responses") with its tokens and cost."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import orjson
import pytest
from openai.types.responses import FunctionToolParam, ResponseInputParam
from pydantic import BaseModel

from gateway.catalogue import UPSTREAM_PRICES
from gateway.providers.anthropic import AnthropicProvider
from gateway.replies import EVENT_ID_HEADER
from schemas.records import LineageRecord
from tests.component.responses_upstream import (
    FAILING_INPUT,
    FAILURE,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    RESPONSE_ID,
    RESPONSES_MODEL,
    TOOL_ANSWER,
    TOOL_ARGUMENTS,
    ResponsesUpstream,
)
from tests.component.support import Component, running_component

ALIAS = "responses-alias"
ANTHROPIC_MODEL = "claude-sonnet-4-0"
WEATHER_TOOL: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


class Weather(BaseModel):
    city: str
    temperature_c: float


@dataclass
class Caller:
    """The SDK on a funded key, every request body it sent, and the gateway under it."""

    sdk: openai.AsyncOpenAI
    sent: list[dict[str, Any]]
    stack: Component
    upstream: ResponsesUpstream

    def records(self) -> list[LineageRecord]:
        return self.stack.lineage.lineage()

    def forwarded_as_sent(self) -> bool:
        """Whether the upstream got each body the SDK sent, only the model mapped."""
        mapped = [{**body, "model": RESPONSES_MODEL} for body in self.sent]
        return self.upstream.received == mapped


@pytest.fixture
async def caller(tmp_path: Path) -> AsyncIterator[Caller]:
    upstream = ResponsesUpstream()
    async with running_component(
        tmp_path,
        upstream=upstream,
        upstream_models=RESPONSES_MODEL,
        model_groups=f"{ALIAS}={RESPONSES_MODEL}:1",
        anthropic_api_key="sk-ant-test",
        anthropic_models=ANTHROPIC_MODEL,
    ) as stack:
        stack.publish_balance("agents", "5")
        secret = (await stack.create_key("agents"))["key"]
        sent: list[dict[str, Any]] = []

        async def keep(request: httpx2.Request) -> None:
            if request.content:
                sent.append(orjson.loads(request.content))

        async with httpx2.AsyncClient(event_hooks={"request": [keep]}) as http:
            sdk = openai.AsyncOpenAI(
                base_url=stack.base_url, api_key=secret, max_retries=0, http_client=http
            )
            yield Caller(sdk, sent, stack, upstream)


def _price(model: str, input_tokens: int, output_tokens: int) -> int:
    input_price, output_price = UPSTREAM_PRICES[model]
    return input_tokens * input_price + output_tokens * output_price


def _assert_priced(record: LineageRecord, *, stream: bool) -> None:
    assert (record.api, record.decision, record.stream) == ("responses", "allowed", stream)
    assert (record.model_requested, record.model_selected) == (ALIAS, RESPONSES_MODEL)
    assert (record.prompt_tokens, record.completion_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)
    assert record.usage_source == "reported"
    # 4 of the input tokens were cache reads, priced at gpt-4.1-mini's cached rate (100
    # nano-USD a token); the 2 reasoning tokens are output, at the output rate.
    assert (record.cached_prompt_tokens, record.reasoning_tokens) == (4, 2)
    cached = 4
    expected = _price(RESPONSES_MODEL, INPUT_TOKENS - cached, OUTPUT_TOKENS) + cached * 100
    assert record.cost_nanousd == expected > 0


# --- an OpenAI-compatible upstream ----------------------------------------------------


async def test_a_response_is_forwarded_unchanged_and_returned_whole(caller: Caller) -> None:
    raw = await caller.sdk.responses.with_raw_response.create(
        model=ALIAS,
        input="What is the weather in Paris?",
        instructions="Answer briefly.",
        temperature=0.3,
        max_output_tokens=200,
        metadata={"ticket": "T-1"},
        store=False,
        user="u-7",
        extra_body={"future_param": {"x": 1}},
    )
    reply = raw.parse()
    assert caller.upstream.paths == ["/v1/responses"]
    assert caller.forwarded_as_sent()
    assert caller.sent[0]["future_param"] == {"x": 1}
    assert reply.output_text == TOOL_ANSWER
    assert reply.id == RESPONSE_ID  # the upstream's: previous_response_id must still work
    assert reply.model == ALIAS  # the name asked for; the record has the served one
    assert reply.model_extra == {"future_field": {"kept": True}}
    assert reply.usage is not None and reply.usage.output_tokens_details.reasoning_tokens == 2
    (record,) = caller.records()
    assert raw.headers[EVENT_ID_HEADER] == record.event_id
    assert record.user_id == "u-7"
    _assert_priced(record, stream=False)


async def test_a_function_tool_round_trip_reaches_the_upstream_unchanged(caller: Caller) -> None:
    question: ResponseInputParam = [{"role": "user", "content": "Weather in Paris?"}]
    first = await caller.sdk.responses.create(
        model=ALIAS, input=question, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    (call,) = first.output
    assert call.type == "function_call"
    assert (call.name, call.arguments, call.call_id) == ("get_weather", TOOL_ARGUMENTS, "call_up_1")
    answered: ResponseInputParam = [
        *question,
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"c": 21.5}'},
    ]
    second = await caller.sdk.responses.create(model=ALIAS, input=answered, tools=[WEATHER_TOOL])
    assert second.output_text == TOOL_ANSWER
    assert caller.forwarded_as_sent()
    assert caller.upstream.received[0]["tools"] == [WEATHER_TOOL]
    assert [r.api for r in caller.records()] == ["responses", "responses"]


async def test_a_streamed_tool_call_arrives_whole_and_ends_after_its_record(
    caller: Caller,
) -> None:
    stream = await caller.sdk.responses.create(
        model=ALIAS, input="Weather in Paris?", tools=[WEATHER_TOOL], stream=True
    )
    kinds: list[str] = []
    arguments = ""
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.function_call_arguments.delta":
            arguments += event.delta
        if event.type == "response.completed":
            # The terminal event is held until the call is recorded: its row exists.
            assert [r.api for r in caller.records()] == ["responses"]
            assert event.response.model == ALIAS and event.response.id == RESPONSE_ID
    assert arguments == TOOL_ARGUMENTS
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.function_call_arguments.done" in kinds
    assert caller.forwarded_as_sent()  # no stream_options: usage is in response.completed
    _assert_priced(caller.records()[0], stream=True)


async def test_streamed_text_arrives_as_the_upstream_sent_it(caller: Caller) -> None:
    async with caller.sdk.responses.stream(model=ALIAS, input="Weather in Paris?") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == TOOL_ANSWER
    assert caller.forwarded_as_sent()
    _assert_priced(caller.records()[0], stream=True)


async def test_a_stream_that_ends_in_response_failed_is_recorded_as_failed(
    caller: Caller,
) -> None:
    stream = await caller.sdk.responses.create(model=ALIAS, input=FAILING_INPUT, stream=True)
    events = [event async for event in stream]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == TOOL_ANSWER[:5]  # the part of an answer the upstream sent before failing
    last = events[-1]
    assert last.type == "response.failed"  # relayed as the upstream sent it
    assert last.response.error is not None and last.response.error.code == FAILURE["code"]
    (record,) = caller.records()
    assert (record.api, record.decision, record.http_status, record.error_code) == (
        "responses",
        "failed",
        502,
        "upstream_error",
    )
    assert [(a.status, a.error_class) for a in record.attempts] == [(200, "response_failed")]
    # The upstream produced (and bills) part of an answer and reported no usage: estimated.
    assert (record.usage_source, record.completion_tokens > 0) == ("estimated", True)
    assert record.cost_nanousd > 0


async def test_parse_with_a_pydantic_model_gets_the_upstream_json(caller: Caller) -> None:
    parsed = await caller.sdk.responses.parse(
        model=ALIAS, input="Weather in Paris as JSON", text_format=Weather
    )
    assert parsed.output_parsed == Weather(city="Paris", temperature_c=21.5)
    text_format = caller.upstream.received[0]["text"]["format"]
    assert (text_format["type"], text_format["name"]) == ("json_schema", "Weather")
    assert caller.forwarded_as_sent()


async def test_personal_data_in_input_and_instructions_is_redacted(caller: Caller) -> None:
    await caller.sdk.responses.create(
        model=ALIAS,
        instructions="Reply to jane.doe@example.com",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "I am bob@corp.io"}]}],
    )
    received = caller.upstream.received[0]
    forwarded = json.dumps(received)
    assert "jane.doe@example.com" not in forwarded and "bob@corp.io" not in forwarded
    assert "[REDACTED:EMAIL]" in received["instructions"]
    assert "[REDACTED:EMAIL]" in received["input"][0]["content"][0]["text"]
    (record,) = caller.records()
    assert ("pii-detector", "redact") in [(g.name, g.action) for g in record.guardrails_triggered]


async def test_a_budget_too_small_refuses_the_call(caller: Caller) -> None:
    sdk = await caller.stack.sdk_for("lean", usd="0.0000001")
    with pytest.raises(openai.APIStatusError) as raised:
        await sdk.responses.create(model=ALIAS, input="word " * 200)
    assert raised.value.status_code == 402
    assert caller.upstream.received == []
    (record,) = caller.records()
    assert (record.api, record.decision, record.http_status) == ("responses", "rejected", 402)
    assert record.cost_nanousd == 0
    await sdk.close()


def _never_called(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"the provider was called: {request.url}")


async def test_a_provider_without_the_api_is_a_400_that_says_so(caller: Caller) -> None:
    anthropic = AnthropicProvider(
        name="anthropic",
        api_key="sk-ant-test",
        timeout_s=5,
        transport=httpx.MockTransport(_never_called),
    )
    caller.stack.gateway.providers["anthropic"] = anthropic
    with pytest.raises(openai.BadRequestError) as raised:
        await caller.sdk.responses.create(model=ANTHROPIC_MODEL, input="hi")
    await anthropic.close()
    body: Any = raised.value.body
    assert body["param"] == "model" and "no responses API" in body["message"]
    assert caller.records()[0].api == "responses"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"top_p": 2}, "top_p"),
        ({"max_output_tokens": 3}, "max_output_tokens"),
        ({"input": 7}, "input"),
        ({"input": ["text"]}, "input[0]"),
        ({"instructions": ["x"]}, "instructions"),
        ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"text": {"format": {"type": "json_schema", "name": "W"}}}, "text.format.schema"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": {}}, "stream_options"),
    ],
)
async def test_what_openai_refuses_is_a_400_naming_the_parameter(
    caller: Caller, fields: dict[str, Any], param: str
) -> None:
    body = {"model": ALIAS, "input": "hi", **fields}
    with pytest.raises(openai.BadRequestError) as raised:
        await caller.sdk.post("/responses", body=body, cast_to=object)
    error: Any = raised.value.body
    assert error["param"] == param
    assert caller.upstream.received == []


# --- the sim ----------------------------------------------------------------------------


async def test_the_sim_answers_tools_and_structured_output(caller: Caller) -> None:
    first = await caller.sdk.responses.create(
        model="sim-small", input="Weather in Paris?", tools=[WEATHER_TOOL]
    )
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert set(json.loads(call.arguments)) == {"city"}
    answered: ResponseInputParam = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call_output", "call_id": call.call_id, "output": "21.5"},
    ]
    second = await caller.sdk.responses.create(
        model="sim-small", input=answered, tools=[WEATHER_TOOL]
    )
    assert second.output[0].type == "message" and second.output_text
    parsed = await caller.sdk.responses.parse(
        model="sim-small", input="Weather as JSON", text_format=Weather
    )
    assert isinstance(parsed.output_parsed, Weather)
    record = caller.records()[-1]
    assert (record.api, record.provider, record.usage_source) == ("responses", "sim", "reported")
    assert record.cost_nanousd > 0


async def test_the_sim_streams_the_same_answer_it_gives_whole(caller: Caller) -> None:
    whole = await caller.sdk.responses.create(model="sim-small", input="Tell me a story")
    stream = await caller.sdk.responses.create(
        model="sim-small", input="Tell me a story", stream=True
    )
    kinds: list[str] = []
    text = ""
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
    assert text == whole.output_text and len(text) > 0
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    whole_record, streamed_record = caller.records()
    assert streamed_record.stream and streamed_record.cost_nanousd == whole_record.cost_nanousd
