"""The Anthropic provider adapter against recorded-looking Messages API answers: the
translation both ways, streams, and what it refuses rather than drops."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Provider, UpstreamError, Usage
from gateway.replies import upstream_failure
from tests.unit.provider_support import (
    Upstream,
    anthropic_sse,
    chat_call,
    collect,
    collect_until_error,
    text_of,
)

# --- Anthropic --------------------------------------------------------------------------

ANTHROPIC_KEY = "sk-ant-api03-R2d2C3p0BB8KylO-Ren1Finn2Poe3Rey4"
ANTHROPIC_MODEL = "claude-3-5-haiku-20241022"

ANTHROPIC_MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": ANTHROPIC_MODEL,
    "content": [
        {"type": "text", "text": "A ledger is a record of transactions"},
        {"type": "text", "text": ", kept in order."},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 21,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 12,
        "service_tier": "standard",
    },
}

ANTHROPIC_EVENTS: list[dict[str, Any]] = [
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
            "usage": {
                "input_tokens": 472,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 2,
                "service_tier": "standard",
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Every"}},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": " entry is append-only, "},
    },
    {"type": "ping"},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "so history — “café” included — survives."},
    },
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 17},
    },
    {"type": "message_stop"},
]
ANTHROPIC_STREAM_TEXT = "Every entry is append-only, so history — “café” included — survives."


def anthropic(upstream: Upstream, **overrides: Any) -> AnthropicProvider:
    options: dict[str, Any] = {
        "name": "anthropic",
        "api_key": ANTHROPIC_KEY,
        "timeout_s": 5.0,
        "transport": httpx.MockTransport(upstream),
    }
    options.update(overrides)
    return AnthropicProvider(**options)


CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are the ledger's auditor."},
    {"role": "developer", "content": [{"type": "text", "text": "Answer in one sentence."}]},
    {"role": "user", "content": "What is a ledger?"},
    {"role": "user", "content": [{"type": "text", "text": "And a journal?"}]},
    {"role": "assistant", "content": "A ledger is a book of accounts."},
    {"role": "assistant", "content": ""},
    {"role": "user", "content": "Thanks. Be brief."},
]


async def test_anthropic_request_translates_the_conversation(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=ANTHROPIC_MESSAGE)
    provider = providers(anthropic(upstream))
    await provider.complete(
        chat_call(
            CONVERSATION,
            model=ANTHROPIC_MODEL,
            temperature=0.3,
            top_p=0.8,
            stop="\n\nHuman:",
            seed=1,
            presence_penalty=0.5,
        )
    )

    request = upstream.request
    assert str(request.url) == "https://api.anthropic.com/v1/messages"
    assert request.headers["x-api-key"] == ANTHROPIC_KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    sent = upstream.sent()
    assert sent["model"] == ANTHROPIC_MODEL
    assert sent["system"] == "You are the ledger's auditor.\n\nAnswer in one sentence."
    # Consecutive turns of one role become one turn: the API requires alternation.
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is a ledger?"},
                {"type": "text", "text": "And a journal?"},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "A ledger is a book of accounts."}],
        },
        {"role": "user", "content": [{"type": "text", "text": "Thanks. Be brief."}]},
    ]
    assert sent["max_tokens"] == 1024  # required by the API; the default when none was asked
    assert (sent["temperature"], sent["top_p"]) == (0.3, 0.8)
    assert sent["stop_sequences"] == ["\n\nHuman:"]
    for absent in ("seed", "presence_penalty", "stop", "stream", "n"):
        assert absent not in sent


async def test_anthropic_request_uses_the_callers_max_tokens_and_stop_list(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=ANTHROPIC_MESSAGE)
    await providers(anthropic(upstream, default_max_tokens=4096)).complete(
        chat_call(model=ANTHROPIC_MODEL, max_tokens=200, stop=["END", "STOP"])
    )
    sent = upstream.sent()
    assert sent["max_tokens"] == 200
    assert sent["stop_sequences"] == ["END", "STOP"]
    assert "system" not in sent
    assert "temperature" not in sent


async def test_anthropic_default_max_tokens_is_configurable(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=ANTHROPIC_MESSAGE)
    await providers(anthropic(upstream, default_max_tokens=4096)).complete(chat_call())
    assert upstream.sent()["max_tokens"] == 4096


async def test_anthropic_completion_joins_text_blocks_with_usage(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=ANTHROPIC_MESSAGE)
    completion = await providers(anthropic(upstream)).complete(chat_call(model=ANTHROPIC_MODEL))
    assert completion.content == "A ledger is a record of transactions, kept in order."
    assert completion.finish_reason == "stop"
    assert completion.usage == Usage(21, 12)


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
async def test_anthropic_stop_reasons_become_openai_finish_reasons(
    providers: Callable[[Provider], Provider], stop_reason: str, finish_reason: str | None
) -> None:
    message = {**ANTHROPIC_MESSAGE, "stop_reason": stop_reason}
    completion = await providers(anthropic(Upstream(json_body=message))).complete(chat_call())
    assert completion.finish_reason == finish_reason


async def test_anthropic_prompt_tokens_count_cached_prompt_tokens_too(
    providers: Callable[[Provider], Provider],
) -> None:
    # OpenAI's prompt_tokens includes cached tokens; Anthropic reports them apart.
    message = {
        **ANTHROPIC_MESSAGE,
        "usage": {
            "input_tokens": 5,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 2000,
            "output_tokens": 12,
        },
    }
    completion = await providers(anthropic(Upstream(json_body=message))).complete(chat_call())
    assert completion.usage == Usage(2105, 12, cached_prompt_tokens=2000, cache_write_tokens=100)


async def test_anthropic_stream_yields_text_then_finish_and_usage(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(sse=anthropic_sse(*ANTHROPIC_EVENTS))
    deltas = await collect(providers(anthropic(upstream)).stream(chat_call(max_tokens=300)))

    assert text_of(deltas) == ANTHROPIC_STREAM_TEXT
    # Input tokens from message_start, output tokens from message_delta (cumulative).
    assert deltas[-1].usage == Usage(472, 17)
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].content == ""
    assert all(d.usage is None and d.finish_reason is None for d in deltas[:-1])
    sent = upstream.sent()
    assert sent["stream"] is True
    assert sent["max_tokens"] == 300
    assert upstream.request.headers["x-api-key"] == ANTHROPIC_KEY


async def test_anthropic_stream_counts_cache_reads_and_writes_apart(
    providers: Callable[[Provider], Provider],
) -> None:
    events = copy.deepcopy(ANTHROPIC_EVENTS)
    events[0]["message"]["usage"] |= {
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 2000,
    }
    deltas = await collect(
        providers(anthropic(Upstream(sse=anthropic_sse(*events)))).stream(chat_call())
    )
    assert deltas[-1].usage == Usage(2572, 17, cached_prompt_tokens=2000, cache_write_tokens=100)


async def test_anthropic_stream_survives_any_network_chunking_and_crlf(
    providers: Callable[[Provider], Provider],
) -> None:
    body = anthropic_sse(*ANTHROPIC_EVENTS).replace(b"\n", b"\r\n")
    for size in (1, 3, 7, 64):
        upstream = Upstream(sse=body, piece_bytes=size)
        deltas = await collect(providers(anthropic(upstream)).stream(chat_call()))
        assert text_of(deltas) == ANTHROPIC_STREAM_TEXT, size
        assert deltas[-1].usage == Usage(472, 17), size


async def test_anthropic_stream_capped_by_max_tokens_finishes_with_length(
    providers: Callable[[Provider], Provider],
) -> None:
    events = [*ANTHROPIC_EVENTS]
    events[-2] = {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
        "usage": {"output_tokens": 300},
    }
    deltas = await collect(
        providers(anthropic(Upstream(sse=anthropic_sse(*events)))).stream(chat_call())
    )
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage == Usage(472, 300)


async def test_anthropic_error_event_mid_stream_fails_as_overloaded(
    providers: Callable[[Provider], Provider],
) -> None:
    events = [
        *ANTHROPIC_EVENTS[:4],
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    ]
    provider = providers(anthropic(Upstream(sse=anthropic_sse(*events))))
    seen, error = await collect_until_error(provider.stream(chat_call()))
    assert text_of(seen) == "Every"
    assert error.error_class == "http_5xx"
    assert error.status == 529
    assert "Overloaded" in str(error)


async def test_anthropic_stream_cut_before_message_stop_is_not_a_finished_answer(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(sse=anthropic_sse(*ANTHROPIC_EVENTS[:5]))
    with pytest.raises(UpstreamError) as raised:
        await collect(providers(anthropic(upstream)).stream(chat_call()))
    assert raised.value.error_class == "transport"


@pytest.mark.parametrize(
    "message",
    [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}],
        },
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AA"}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "high"}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}],
        },
        {"role": "function", "name": "f", "content": "42"},
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
            ],
        },
    ],
)
async def test_anthropic_refuses_what_it_cannot_translate_without_calling(
    providers: Callable[[Provider], Provider], message: dict[str, Any]
) -> None:
    upstream = Upstream(json_body=ANTHROPIC_MESSAGE)
    provider = providers(anthropic(upstream))
    messages = [{"role": "user", "content": "Hi"}, message]
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(chat_call(messages))
    assert raised.value.error_class == "http_4xx"
    with pytest.raises(UpstreamError):
        await collect(provider.stream(chat_call(messages)))
    assert upstream.requests == []


async def test_anthropic_malformed_answer_is_a_bad_response(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body={"type": "message", "role": "assistant"})
    with pytest.raises(UpstreamError) as raised:
        await providers(anthropic(upstream)).complete(chat_call())
    assert raised.value.error_class == "bad_response"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tool_choice", "required"),  # without tools
        ("response_format", {"type": "json_object"}),
        ("top_logprobs", 2),
        ("logit_bias", {"50256": -100}),
        ("n", 2),
        ("seed", 7),
        ("logprobs", True),
        ("presence_penalty", 0.5),
        ("a_field_anthropic_never_heard_of", 1),
    ],
)
async def test_anthropic_refuses_a_field_it_would_otherwise_drop(
    providers: Callable[[Provider], Provider], field: str, value: Any
) -> None:
    upstream = Upstream(json_body=ANTHROPIC_MESSAGE)
    provider = providers(anthropic(upstream))
    call = dataclasses.replace(chat_call(), body={"model": "m", "messages": [], field: value})
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(call)
    assert raised.value.error_class == "http_4xx"
    assert repr(field) in str(raised.value)
    # The caller gets a 400 naming the field, not a 502.
    failure = upstream_failure(raised.value)
    assert (failure.kind.status, failure.param) == (400, field)
    with pytest.raises(UpstreamError):
        await collect(provider.stream(call))
    assert upstream.requests == []


async def test_anthropic_carries_user_and_takes_neutral_values(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=ANTHROPIC_MESSAGE)
    provider = providers(anthropic(upstream))
    body = {"model": "m", "messages": [], "user": "u-7", "n": 1, "frequency_penalty": 0}
    await provider.complete(dataclasses.replace(chat_call(), body=body))
    sent = json.loads(upstream.requests[0].content)
    assert sent["metadata"] == {"user_id": "u-7"}
    assert "n" not in sent and "frequency_penalty" not in sent
