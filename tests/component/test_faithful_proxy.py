"""Chat completions through the gateway as the official openai SDK makes them, against an
OpenAI-compatible upstream that records what it received (openai_upstream.py): the body
reaches the upstream as the SDK sent it (changed only where the gateway acts: the model
name, usage asked for on a stream) and the reply comes back whole, streamed or not. Each
reply names its lineage record (id, X-Govledger-Event-Id, traceparent)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest
from pydantic import BaseModel

from gateway.replies import EVENT_ID_HEADER
from tests.component.openai_upstream import (
    COMPLETION_TOKENS_PER_CHOICE,
    FAITHFUL_MODEL,
    PROMPT_TOKENS,
    TOOL_ARGUMENTS,
    UPSTREAM_FINGERPRINT,
    OpenAIUpstream,
)
from tests.component.support import Component, running_component

ALIAS = "faithful-alias"
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


class Weather(BaseModel):
    city: str
    temperature_c: float
    conditions: list[str]


@dataclass
class Caller:
    """The SDK on a funded key, every request body it sent, and the gateway under it."""

    sdk: openai.AsyncOpenAI
    sent: list[dict[str, Any]]
    stack: Component
    upstream: OpenAIUpstream

    def forwarded(self, *, model: str = FAITHFUL_MODEL) -> list[dict[str, Any]]:
        """What the upstream must have received: each sent body, the model mapped, usage
        asked for on a stream (the caller's other stream options kept)."""
        expected = []
        for body in self.sent:
            forwarded = {**body, "model": model}
            if body.get("stream"):
                options = {**body.get("stream_options", {}), "include_usage": True}
                forwarded["stream_options"] = options
            expected.append(forwarded)
        return expected


@pytest.fixture
async def caller(tmp_path: Path) -> AsyncIterator[Caller]:
    upstream = OpenAIUpstream()
    async with running_component(
        tmp_path,
        upstream=upstream,
        upstream_models=FAITHFUL_MODEL,
        model_groups=f"{ALIAS}={FAITHFUL_MODEL}:1",
    ) as stack:
        stack.publish_balance("agents", "5")
        secret = (await stack.create_key("agents"))["key"]
        sent: list[dict[str, Any]] = []

        async def keep(request: httpx2.Request) -> None:
            sent.append(orjson.loads(request.content))

        async with httpx2.AsyncClient(event_hooks={"request": [keep]}) as http:
            sdk = openai.AsyncOpenAI(
                base_url=stack.base_url, api_key=secret, max_retries=0, http_client=http
            )
            yield Caller(sdk, sent, stack, upstream)


async def test_a_tool_call_round_trip_is_forwarded_unchanged_and_returned_whole(
    caller: Caller,
) -> None:
    first = await caller.sdk.chat.completions.create(
        model=FAITHFUL_MODEL,
        messages=ASK,
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        parallel_tool_calls=False,
        temperature=0.2,
        seed=3,
        max_completion_tokens=200,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_up_1",
        "get_weather",
        TOOL_ARGUMENTS,
    )
    assert first.system_fingerprint == UPSTREAM_FINGERPRINT
    assert first.service_tier == "default"
    assert choice.model_extra == {"future_field": {"kept": True}}
    assert first.usage is not None
    assert first.usage.prompt_tokens_details is not None
    second = await caller.sdk.chat.completions.create(
        model=FAITHFUL_MODEL,
        messages=[
            *ASK,
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21.5}'},
        ],
        tools=[WEATHER_TOOL],
    )
    assert second.choices[0].message.content == "It is 21.5 C in Paris (choice 0)."
    assert caller.upstream.received == caller.forwarded()


async def test_a_streamed_tool_call_arrives_in_deltas_and_no_usage_chunk_unasked(
    caller: Caller,
) -> None:
    stream = await caller.sdk.chat.completions.create(
        model=FAITHFUL_MODEL,
        messages=ASK,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        stream=True,
    )
    arguments, names, finish = "", [], None
    async for chunk in stream:
        choice = chunk.choices[0]  # the common loop: an empty `choices` would raise here
        for delta in choice.delta.tool_calls or []:
            names.append(delta.function.name if delta.function else None)
            arguments += (delta.function.arguments if delta.function else None) or ""
        finish = choice.finish_reason or finish
        assert chunk.usage is None
        assert chunk.system_fingerprint == UPSTREAM_FINGERPRINT
    assert (names[0], arguments, finish) == ("get_weather", TOOL_ARGUMENTS, "tool_calls")
    assert caller.upstream.received == caller.forwarded()
    record = caller.stack.lineage.lineage()[-1]
    assert (record.prompt_tokens, record.completion_tokens, record.usage_source) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS_PER_CHOICE,
        "reported",
    )


async def test_a_stream_that_asks_for_usage_ends_with_the_upstream_usage_chunk(
    caller: Caller,
) -> None:
    stream = await caller.sdk.chat.completions.create(
        model=FAITHFUL_MODEL,
        messages=ASK,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert [c.choices for c in chunks[-1:]] == [[]]
    assert all(c.choices for c in chunks[:-1])
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS_PER_CHOICE,
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "Answer 0."
    assert caller.upstream.received == caller.forwarded()


async def test_parse_with_a_pydantic_model_gets_the_structured_answer(caller: Caller) -> None:
    completion = await caller.sdk.chat.completions.parse(
        model=FAITHFUL_MODEL, messages=ASK, response_format=Weather
    )
    assert completion.choices[0].message.parsed == Weather(
        city="Paris", temperature_c=21.5, conditions=["sunny"]
    )
    received = caller.upstream.received
    assert received == caller.forwarded()
    assert received[0]["response_format"]["type"] == "json_schema"
    assert received[0]["response_format"]["json_schema"]["name"] == "Weather"


@pytest.mark.parametrize("stream", [False, True])
async def test_n_choices_with_logprobs_come_back_every_one(caller: Caller, stream: bool) -> None:
    asked: dict[str, Any] = {"n": 2, "logprobs": True, "top_logprobs": 2}
    if stream:
        texts = {0: "", 1: ""}
        tokens: dict[int, list[str]] = {0: [], 1: []}
        finishes = {}
        chunks = await caller.sdk.chat.completions.create(
            model=FAITHFUL_MODEL, messages=ASK, stream=True, **asked
        )
        async for chunk in chunks:
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
                if choice.logprobs is not None and choice.logprobs.content:
                    tokens[choice.index] += [t.token for t in choice.logprobs.content]
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        assert finishes == {0: "stop", 1: "stop"}
    else:
        completion = await caller.sdk.chat.completions.create(
            model=FAITHFUL_MODEL, messages=ASK, **asked
        )
        texts = {c.index: c.message.content or "" for c in completion.choices}
        tokens = {}
        for c in completion.choices:
            assert c.logprobs is not None
            assert c.logprobs.content is not None
            assert [len(t.top_logprobs) for t in c.logprobs.content] == [2, 2]
            tokens[c.index] = [t.token for t in c.logprobs.content]
    assert texts == {0: "Answer 0.", 1: "Answer 1."}
    assert [t.strip() for t in tokens[1]] == ["Answer", "1."]
    assert caller.upstream.received == caller.forwarded()
    # n>1: the upstream's usage is the total of its choices.
    assert caller.stack.lineage.lineage()[-1].completion_tokens == 2 * COMPLETION_TOKENS_PER_CHOICE


async def test_unknown_fields_pass_both_ways_and_the_model_is_mapped(caller: Caller) -> None:
    response = await caller.sdk.chat.completions.with_raw_response.create(
        model=ALIAS,
        messages=ASK,
        extra_body={"future_param": {"depth": [1, 2, {"x": None}]}, "store": False},
    )
    reply = orjson.loads(response.content)
    assert reply["model"] == ALIAS  # the name the caller asked for; lineage has the served one
    assert reply["service_tier"] == "default"
    assert reply["choices"][0]["future_field"] == {"kept": True}
    assert caller.upstream.received == caller.forwarded(model=FAITHFUL_MODEL)
    assert caller.upstream.received[0]["future_param"] == {"depth": [1, 2, {"x": None}]}


@pytest.mark.parametrize("stream", [False, True])
async def test_each_reply_names_its_lineage_record(caller: Caller, stream: bool) -> None:
    trace_id = secrets.token_hex(16)
    headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    raw = await caller.sdk.chat.completions.with_raw_response.create(
        model=FAITHFUL_MODEL, messages=ASK, stream=stream, extra_headers=headers
    )
    parsed: Any = raw.parse()
    ids = {chunk.id async for chunk in parsed} if stream else {parsed.id}
    record = caller.stack.lineage_of(trace_id)
    assert ids == {f"chatcmpl-{record.event_id}"}
    assert raw.headers[EVENT_ID_HEADER] == record.event_id
    assert raw.headers["traceparent"] == f"00-{trace_id}-{record.span_id}-01"


async def test_a_refused_call_names_its_record_too(caller: Caller) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await caller.sdk.chat.completions.create(model=FAITHFUL_MODEL, messages=ASK, temperature=5)
    record = caller.stack.lineage.lineage()[-1]
    assert raised.value.response.headers[EVENT_ID_HEADER] == record.event_id
    assert (record.http_status, record.error_code) == (400, "invalid_request")
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["param"] == "temperature"
    assert caller.upstream.received == []


@pytest.mark.parametrize("stream", [False, True])
async def test_what_only_the_upstream_validates_is_its_400_naming_the_parameter(
    caller: Caller, stream: bool
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await caller.sdk.chat.completions.create(
            model=FAITHFUL_MODEL,
            messages=ASK,
            stream=stream,
            extra_body={"reasoning_effort": "ultra"},
        )
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["param"] == "reasoning_effort"
    assert "'ultra'" in raised.value.body["message"]
    record = caller.stack.lineage.lineage()[-1]
    assert (record.http_status, record.error_code, record.decision) == (
        400,
        "invalid_request",
        "failed",
    )
    assert [a.status for a in record.attempts] == [400]  # not retried, no fallback


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"top_p": 1.5}, "top_p"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name"),
    ],
)
async def test_what_openai_refuses_is_a_400_naming_the_parameter(
    caller: Caller, fields: dict[str, Any], param: str
) -> None:
    """Through the SDK; every case is in tests/unit/test_chat_params.py."""
    with pytest.raises(openai.BadRequestError) as raised:
        await caller.sdk.chat.completions.create(
            model=FAITHFUL_MODEL, messages=ASK, extra_body=fields
        )
    assert isinstance(raised.value.body, dict)
    assert (raised.value.body["param"], raised.value.body["code"]) == (param, "invalid_request")
    assert caller.upstream.received == []


# --- The sim provider answers the same shapes, so tests through it exercise the paths ---

SIM = "sim-small"


async def test_the_sim_calls_the_tool_it_is_given_then_answers_its_result(
    caller: Caller,
) -> None:
    first = await caller.sdk.chat.completions.create(
        model=SIM, messages=ASK, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    assert first.choices[0].finish_reason == "tool_calls"
    assert first.choices[0].message.tool_calls is not None
    call = first.choices[0].message.tool_calls[0]
    assert call.type == "function"
    arguments = orjson.loads(call.function.arguments)
    assert call.function.name == "get_weather"
    assert set(arguments) == {"city", "unit"}
    assert arguments["unit"] == "celsius"
    again = await caller.sdk.chat.completions.create(
        model=SIM, messages=ASK, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    assert again.choices[0].message.tool_calls == [call]  # deterministic
    answer = await caller.sdk.chat.completions.create(
        model=SIM,
        messages=[
            *ASK,
            first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "21.5"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content


async def test_the_sim_streams_a_named_tool_call_in_deltas(caller: Caller) -> None:
    stream = await caller.sdk.chat.completions.create(
        model=SIM,
        messages=ASK,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    arguments, finish = "", None
    async for chunk in stream:
        choice = chunk.choices[0]
        for delta in choice.delta.tool_calls or []:
            arguments += (delta.function.arguments if delta.function else None) or ""
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert set(orjson.loads(arguments)) == {"city", "unit"}


async def test_the_sim_answers_parse_with_the_model_s_shape(caller: Caller) -> None:
    completion = await caller.sdk.chat.completions.parse(
        model=SIM, messages=ASK, response_format=Weather
    )
    assert isinstance(completion.choices[0].message.parsed, Weather)


async def test_the_sim_honours_n_and_logprobs(caller: Caller) -> None:
    completion = await caller.sdk.chat.completions.create(
        model=SIM, messages=ASK, n=2, logprobs=True, top_logprobs=1, max_tokens=5
    )
    assert [c.index for c in completion.choices] == [0, 1]
    texts = [c.message.content or "" for c in completion.choices]
    assert texts[0] != texts[1]
    for choice in completion.choices:
        assert choice.logprobs is not None
        assert choice.logprobs.content is not None
        assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    assert caller.stack.lineage.lineage()[-1].completion_tokens == 2 * 5
    stream = await caller.sdk.chat.completions.create(
        model=SIM, messages=ASK, n=2, max_tokens=5, stream=True
    )
    streamed = {0: "", 1: ""}
    async for chunk in stream:
        piece = chunk.choices[0]
        streamed[piece.index] += piece.delta.content or ""
    assert list(streamed.values()) == texts


async def test_the_budget_holds_n_choices_of_max_tokens(caller: Caller) -> None:
    sdk = await caller.stack.sdk_for("lean", usd="0.0007")  # 700,000 nano-USD
    asked: Any = {"model": SIM, "messages": ASK, "max_tokens": 1_000}  # 600 nano-USD a token
    assert len((await sdk.chat.completions.create(**asked, n=1)).choices) == 1
    with pytest.raises(openai.APIStatusError) as raised:
        await sdk.chat.completions.create(**asked, n=2)
    assert raised.value.status_code == 402
    await sdk.close()
