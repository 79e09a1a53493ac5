"""How every provider adapter classifies failures (rate limits, 5xx, 4xx, timeouts,
unreachable), its size limits, Retry-After parsing and server-sent event framing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.providers.base import Provider, UpstreamError
from gateway.providers.openai_compat import OpenAICompatProvider
from gateway.providers.upstream_http import SseEvent, parse_retry_after, sse_events
from tests.unit.provider_support import (
    Upstream,
    anthropic_sse,
    chat_call,
    collect,
    collect_until_error,
    pieces,
    sse,
    text_of,
)
from tests.unit.test_provider_anthropic import ANTHROPIC_EVENTS, ANTHROPIC_MESSAGE, anthropic
from tests.unit.test_provider_openai_shaped import (
    AZURE_COMPLETION,
    _azure_chunk,
    azure,
    mistral,
    ollama,
)

# --- failures, for every adapter ----------------------------------------------------------


@dataclass(frozen=True)
class Adapter:
    name: str
    make: Callable[[Upstream], Provider]
    rate_limit_body: dict[str, Any]
    server_error_body: dict[str, Any]


ADAPTERS = [
    Adapter(
        "azure",
        azure,
        {"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation "
                   "have exceeded token rate limit. Please retry after 20 seconds."}},
        {"error": {"code": "InternalServerError", "message": "The service is temporarily "
                   "unable to process your request. Please try again later."}},
    ),
    Adapter(
        "mistral",
        mistral,
        {"object": "error", "message": "Requests rate limit exceeded", "type": "rate_limited",
         "param": None, "code": "1300"},
        {"object": "error", "message": "Internal server error", "type": "internal_server_error",
         "param": None, "code": "1000"},
    ),
    Adapter(
        "ollama",
        ollama,
        {"error": {"message": "too many requests", "type": "api_error", "param": None,
                   "code": None}},
        {"error": {"message": "llama runner process has terminated: exit status 2",
                   "type": "api_error", "param": None, "code": None}},
    ),
    Adapter(
        "anthropic",
        anthropic,
        {"type": "error", "error": {"type": "rate_limit_error", "message": "This request would "
         "exceed the rate limit for your organization of 50,000 input tokens per minute."}},
        {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
    ),
]  # fmt: skip
ADAPTER_IDS = [adapter.name for adapter in ADAPTERS]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=ADAPTER_IDS)
async def test_429_is_rate_limited_with_the_retry_after_the_upstream_asked_for(
    providers: Callable[[Provider], Provider], adapter: Adapter
) -> None:
    upstream = Upstream(429, json_body=adapter.rate_limit_body, headers={"retry-after": "20"})
    provider = providers(adapter.make(upstream))
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(chat_call())
    assert (raised.value.status, raised.value.error_class) == (429, "rate_limited")
    assert raised.value.retry_after_s == 20.0
    with pytest.raises(UpstreamError) as raised:
        await collect(provider.stream(chat_call()))
    assert (raised.value.status, raised.value.error_class) == (429, "rate_limited")
    assert raised.value.retry_after_s == 20.0


@pytest.mark.parametrize("adapter", ADAPTERS, ids=ADAPTER_IDS)
async def test_429_with_an_http_date_retry_after(
    providers: Callable[[Provider], Provider], adapter: Adapter
) -> None:
    upstream = Upstream(
        429,
        json_body=adapter.rate_limit_body,
        headers={
            "date": "Mon, 03 Mar 2025 14:02:00 GMT",
            "retry-after": "Mon, 03 Mar 2025 14:02:45 GMT",
        },
    )
    with pytest.raises(UpstreamError) as raised:
        await providers(adapter.make(upstream)).complete(chat_call())
    assert raised.value.error_class == "rate_limited"
    assert raised.value.retry_after_s == 45.0


@pytest.mark.parametrize("adapter", ADAPTERS, ids=ADAPTER_IDS)
@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_http_5xx(
    providers: Callable[[Provider], Provider], adapter: Adapter, status: int
) -> None:
    upstream = Upstream(status, json_body=adapter.server_error_body)
    provider = providers(adapter.make(upstream))
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(chat_call())
    assert (raised.value.status, raised.value.error_class) == (status, "http_5xx")
    assert raised.value.retry_after_s is None
    with pytest.raises(UpstreamError) as raised:
        await collect(provider.stream(chat_call()))
    assert (raised.value.status, raised.value.error_class) == (status, "http_5xx")


async def test_503_carries_retry_after_but_500_does_not(
    providers: Callable[[Provider], Provider],
) -> None:
    body = ADAPTERS[0].server_error_body
    with pytest.raises(UpstreamError) as raised:
        await providers(
            azure(Upstream(503, json_body=body, headers={"retry-after": "3"}))
        ).complete(chat_call())
    assert raised.value.retry_after_s == 3.0
    with pytest.raises(UpstreamError) as raised:
        await providers(
            azure(Upstream(500, json_body=body, headers={"retry-after": "3"}))
        ).complete(chat_call())
    assert raised.value.retry_after_s is None


async def test_anthropic_529_overloaded_is_http_5xx(
    providers: Callable[[Provider], Provider],
) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream = Upstream(529, json_body=overloaded, headers={"retry-after": "8"})
    provider = providers(anthropic(upstream))
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(chat_call())
    assert (raised.value.status, raised.value.error_class) == (529, "http_5xx")
    assert raised.value.retry_after_s == 8.0
    with pytest.raises(UpstreamError) as raised:
        await collect(provider.stream(chat_call()))
    assert (raised.value.status, raised.value.error_class) == (529, "http_5xx")


@pytest.mark.parametrize("adapter", ADAPTERS, ids=ADAPTER_IDS)
async def test_a_rejected_request_is_http_4xx(
    providers: Callable[[Provider], Provider], adapter: Adapter
) -> None:
    upstream = Upstream(401, json_body={"error": {"message": "invalid api key"}})
    with pytest.raises(UpstreamError) as raised:
        await providers(adapter.make(upstream)).complete(chat_call())
    assert (raised.value.status, raised.value.error_class) == (401, "http_4xx")
    assert raised.value.retry_after_s is None


@pytest.mark.parametrize("adapter", ADAPTERS, ids=ADAPTER_IDS)
async def test_timeouts_are_classified_as_timeout(
    providers: Callable[[Provider], Provider], adapter: Adapter
) -> None:
    provider = providers(adapter.make(Upstream(error=httpx.ReadTimeout)))
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(chat_call())
    assert (raised.value.status, raised.value.error_class) == (0, "timeout")
    with pytest.raises(UpstreamError) as raised:
        await collect(provider.stream(chat_call()))
    assert (raised.value.status, raised.value.error_class) == (0, "timeout")


@pytest.mark.parametrize("adapter", ADAPTERS, ids=ADAPTER_IDS)
async def test_an_unreachable_upstream_is_classified_as_connect(
    providers: Callable[[Provider], Provider], adapter: Adapter
) -> None:
    provider = providers(adapter.make(Upstream(error=httpx.ConnectError)))
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(chat_call())
    assert (raised.value.status, raised.value.error_class) == (0, "connect")


@pytest.mark.parametrize(
    ("make", "body_so_far", "text_so_far"),
    [
        (azure, sse(*[_azure_chunk({"content": w}) for w in ("Entries", " never")], done=False),
         "Entries never"),
        (anthropic, anthropic_sse(*ANTHROPIC_EVENTS[:5]), "Every entry is append-only, "),
    ],
    ids=["azure", "anthropic"],
)  # fmt: skip
async def test_a_timeout_mid_stream_is_a_timeout_after_the_text_so_far(
    providers: Callable[[Provider], Provider],
    make: Callable[[Upstream], Provider],
    body_so_far: bytes,
    text_so_far: str,
) -> None:
    upstream = Upstream(sse=body_so_far, piece_bytes=50, fail_after_body=httpx.ReadTimeout)
    seen, error = await collect_until_error(providers(make(upstream)).stream(chat_call()))
    assert error.error_class == "timeout"
    assert text_of(seen) == text_so_far
    assert all(d.usage is None for d in seen)


# --- limits -----------------------------------------------------------------------------


async def test_an_oversized_answer_is_refused_not_buffered(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=ANTHROPIC_MESSAGE, piece_bytes=64)
    provider = providers(anthropic(upstream, max_response_bytes=100))
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(chat_call())
    assert raised.value.error_class == "bad_response"
    upstream = Upstream(json_body=AZURE_COMPLETION, piece_bytes=64)
    with pytest.raises(UpstreamError) as raised:
        await providers(azure(upstream, max_response_bytes=100)).complete(chat_call())
    assert raised.value.error_class == "bad_response"


async def test_an_oversized_stream_event_is_refused(
    providers: Callable[[Provider], Provider],
) -> None:
    huge = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
            "text": "x" * 5000}}  # fmt: skip
    upstream = Upstream(sse=anthropic_sse(*ANTHROPIC_EVENTS[:3], huge), piece_bytes=512)
    with pytest.raises(UpstreamError) as raised:
        await collect(providers(anthropic(upstream, max_event_chars=4096)).stream(chat_call()))
    assert raised.value.error_class == "bad_response"
    # A line that never ends is refused as it grows, not when the upstream gives up.
    upstream = Upstream(
        sse=b'data: {"choices": [], "pad": "' + b"y" * 10_000,
        piece_bytes=512,
        fail_after_body=httpx.ReadTimeout,
    )
    with pytest.raises(UpstreamError) as raised:
        await collect(providers(ollama_with_limit(upstream, 4096)).stream(chat_call()))
    assert raised.value.error_class == "bad_response"


def ollama_with_limit(upstream: Upstream, max_event_chars: int) -> OpenAICompatProvider:
    return OpenAICompatProvider(
        name="ollama",
        base_url="http://localhost:11434/v1",
        api_key="",
        timeout_s=5.0,
        transport=httpx.MockTransport(upstream),
        max_event_chars=max_event_chars,
    )


# --- Retry-After parsing ------------------------------------------------------------------

NOW_S = 1741010520.0  # Mon, 03 Mar 2025 14:02:00 GMT


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "17"}, 17.0),
        ({"retry-after": " 0 "}, 0.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "Mon, 03 Mar 2025 14:03:30 GMT"}, 90.0),
        ({"retry-after": "Mon, 03 Mar 2025 14:01:00 GMT"}, 0.0),  # already past
        # The server's own Date is the reference, whatever our clock says.
        (
            {
                "retry-after": "Tue, 04 Mar 2025 09:00:10 GMT",
                "date": "Tue, 04 Mar 2025 09:00:00 GMT",
            },
            10.0,
        ),
        ({"retry-after": "6", "retry-after-ms": "5830"}, 5.83),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(
    headers: dict[str, str], expected: float | None
) -> None:
    result = parse_retry_after(httpx.Headers(headers), now_s=NOW_S)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


# --- server-sent event framing ------------------------------------------------------------


async def test_sse_framing_holds_across_any_split_and_line_ending() -> None:
    body = (
        ": keep-alive comment\n"
        "event: message_start\n"
        'data: {"a": 1}\n'
        "\n"
        "event: ping\n"
        "data: first line\n"
        "data:second line\n"
        "\n"
        "data: [DONE]\n"
        "\n"
    )
    expected = [
        SseEvent("message_start", '{"a": 1}'),
        SseEvent("ping", "first line\nsecond line"),
        SseEvent("message", "[DONE]"),
    ]
    for ending in ("\n", "\r\n", "\r"):
        raw = body.replace("\n", ending).encode()
        for size in (1, 2, 5, len(raw)):
            response = httpx.Response(200, content=pieces(raw, size))
            events = [event async for event in sse_events(response, max_event_chars=1000)]
            assert events == expected, (ending, size)


async def test_sse_last_event_without_its_blank_line_is_kept() -> None:
    response = httpx.Response(200, content=pieces(b"data: one\n\ndata: two", 4))
    events = [event async for event in sse_events(response, max_event_chars=1000)]
    assert [event.data for event in events] == ["one", "two"]
