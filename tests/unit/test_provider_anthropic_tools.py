"""The Anthropic provider with tools, tool turns, images and structured output, against
recorded-looking Messages API answers (the shapes of Anthropic's API reference): the
request carries each field in Anthropic's terms, and the answer comes back in OpenAI's
(tool_calls, and in a stream their deltas: id and name first, then argument fragments)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from gateway.providers.base import Provider, UpstreamError, Usage
from gateway.replies import ChunkRelay, upstream_failure
from tests.unit.provider_support import Upstream, anthropic_sse, chat_call, collect
from tests.unit.test_provider_anthropic import ANTHROPIC_MODEL, anthropic

WEATHER_FUNCTION = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
TOOLS = [
    {"type": "function", "function": WEATHER_FUNCTION},
    {"type": "function", "function": {"name": "get_time"}},  # takes no parameters
    {"type": "function", "function": {"name": "ping", "parameters": {}}},  # nor this one
]
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"

TOOL_USE_MESSAGE = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": ANTHROPIC_MODEL,
    "content": [
        {"type": "text", "text": "I'll check the weather and the time."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"city": "Paris"},
        },
        {"type": "tool_use", "id": "toolu_01B7x2", "name": "get_time", "input": {}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 384,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 256,
        "output_tokens": 87,
    },
}


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": "claude", "messages": [{"role": "user", "content": "Hi"}], **fields}


def _call(messages: list[dict[str, Any]] | None = None, **fields: Any) -> Any:
    call = chat_call(messages, model=ANTHROPIC_MODEL)
    return dataclasses.replace(call, body=_body(**fields))


async def test_tools_and_tool_choice_are_sent_in_anthropics_terms(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=TOOL_USE_MESSAGE)
    call = _call(tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    await providers(anthropic(upstream)).complete(call)
    sent = upstream.sent()
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city",
            "input_schema": WEATHER_FUNCTION["parameters"],
            "strict": True,
        },
        {"name": "get_time", "input_schema": {"type": "object"}},
        {"name": "ping", "input_schema": {"type": "object"}},
    ]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "parallel", "sent"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        ("required", True, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
async def test_tool_choice_maps_to_anthropics(
    providers: Callable[[Provider], Provider], choice: Any, parallel: Any, sent: Any
) -> None:
    upstream = Upstream(json_body=TOOL_USE_MESSAGE)
    call = _call(tools=TOOLS, tool_choice=choice, parallel_tool_calls=parallel)
    await providers(anthropic(upstream)).complete(call)
    assert upstream.sent().get("tool_choice") == sent


async def test_a_tool_round_trip_becomes_tool_use_and_tool_result_blocks(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=TOOL_USE_MESSAGE)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "14:05"}]},
        {"role": "user", "content": "Thanks; summarise."},
    ]
    await providers(anthropic(upstream)).complete(_call(messages, tools=TOOLS))
    sent = upstream.sent()
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather and time in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ],
        },
        # The tool messages answer one assistant turn: one user turn, results first.
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C, sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "14:05"},
                {"type": "text", "text": "Thanks; summarise."},
            ],
        },
    ]


async def test_images_become_base64_or_url_sources(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=TOOL_USE_MESSAGE)
    content = [
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_BASE64}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg", "detail": "auto"}},
    ]
    await providers(anthropic(upstream)).complete(_call([{"role": "user", "content": content}]))
    assert upstream.sent()["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these."},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/b.jpg"}},
    ]


async def test_json_schema_output_is_anthropics_structured_output(
    providers: Callable[[Provider], Provider],
) -> None:
    schema = WEATHER_FUNCTION["parameters"]
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "Weather", "schema": schema, "strict": True},
    }
    answer = {
        **TOOL_USE_MESSAGE,
        "content": [{"type": "text", "text": '{"city": "Paris"}'}],
        "stop_reason": "end_turn",
    }
    upstream = Upstream(json_body=answer)
    completion = await providers(anthropic(upstream)).complete(
        _call(response_format=response_format)
    )
    assert upstream.sent()["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert completion.reply is not None
    assert completion.reply["choices"][0]["message"]["content"] == '{"city": "Paris"}'
    assert completion.finish_reason == "stop"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}, "tools[0].type"),
        ({"tools": TOOLS, "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, None),
    ],
)
async def test_what_anthropic_cannot_do_is_a_400_naming_it(
    providers: Callable[[Provider], Provider], fields: dict[str, Any], param: str | None
) -> None:
    upstream = Upstream(json_body=TOOL_USE_MESSAGE)
    with pytest.raises(UpstreamError) as raised:
        await providers(anthropic(upstream)).complete(_call(**fields))
    failure = upstream_failure(raised.value)
    assert failure.kind.status == 400
    assert failure.param == (param or "response_format.json_schema.schema")
    assert upstream.requests == []


async def test_tool_use_blocks_come_back_as_tool_calls(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=TOOL_USE_MESSAGE)
    completion = await providers(anthropic(upstream)).complete(_call(tools=TOOLS))
    assert completion.finish_reason == "tool_calls"
    assert completion.reply is not None
    (choice,) = completion.reply["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "I'll check the weather and the time."
    assert message["tool_calls"] == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
        {
            "id": "toolu_01B7x2",
            "type": "function",
            "function": {"name": "get_time", "arguments": "{}"},
        },
    ]
    # Cache reads stay their own count; the hashed text includes the arguments.
    assert completion.usage == Usage(640, 87, cached_prompt_tokens=256)
    assert '{"city":"Paris"}' in completion.content


async def test_a_tool_use_block_without_an_id_is_a_bad_response(
    providers: Callable[[Provider], Provider],
) -> None:
    answer = {**TOOL_USE_MESSAGE, "content": [{"type": "tool_use", "name": "f", "input": {}}]}
    with pytest.raises(UpstreamError) as raised:
        await providers(anthropic(Upstream(json_body=answer))).complete(_call(tools=TOOLS))
    assert raised.value.error_class == "bad_response"


# A stream as Anthropic sends one: text, then two tool_use blocks whose input arrives as
# input_json_delta fragments.
TOOL_STREAM: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
            "type": "message",
            "role": "assistant",
            "model": ANTHROPIC_MODEL,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 472, "output_tokens": 2},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Okay,"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {
            "type": "tool_use",
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "input": {},
        },
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": ""},
    },
    {"type": "ping"},
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"city": "San'},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": ' Francisco"}'},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": "{}"},
    },
    {"type": "content_block_stop", "index": 2},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 89},
    },
    {"type": "message_stop"},
]


async def test_a_streamed_tool_use_becomes_tool_call_deltas(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(sse=anthropic_sse(*TOOL_STREAM), piece_bytes=7)
    deltas = await collect(providers(anthropic(upstream)).stream(_call(tools=TOOLS)))
    chunks = [d.chunk for d in deltas]
    assert all(c is not None for c in chunks)
    bodies = [c["choices"][0]["delta"] for c in chunks if c is not None]
    assert bodies == [
        {"role": "assistant", "content": "Okay,"},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "San'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ' Francisco"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "toolu_02",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {},
    ]
    last = deltas[-1]
    assert (last.finish_reason, last.usage) == ("tool_calls", Usage(472, 89))
    assert chunks[-1] is not None and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert "".join(d.content for d in deltas) == 'Okay,{"city": "San Francisco"}{}'
    assert all(d.finish_reason is None for d in deltas[:-1])


async def test_the_caller_gets_the_tool_call_chunks_and_the_finish_after_the_record(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(sse=anthropic_sse(*TOOL_STREAM))
    relay = ChunkRelay("chatcmpl-ev1", "claude-alias", include_usage=False)
    events: list[bytes] = []
    async for delta in providers(anthropic(upstream)).stream(_call(tools=TOOLS)):
        events += relay.events(delta)
    sent_before_record = len(events)
    events += relay.tail(Usage(472, 89))
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert events[-1] == b"data: [DONE]\n\n"
    assert {(c["id"], c["model"]) for c in chunks} == {("chatcmpl-ev1", "claude-alias")}
    # The finish chunk is held until the call is recorded.
    assert sent_before_record == len(chunks) - 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all("usage" not in c for c in chunks)


async def test_input_json_outside_a_tool_use_block_is_a_bad_response(
    providers: Callable[[Provider], Provider],
) -> None:
    events = [*TOOL_STREAM[:3], TOOL_STREAM[5], *TOOL_STREAM[-2:]]
    upstream = Upstream(sse=anthropic_sse(*events))
    with pytest.raises(UpstreamError) as raised:
        await collect(providers(anthropic(upstream)).stream(_call(tools=TOOLS)))
    assert raised.value.error_class == "bad_response"
