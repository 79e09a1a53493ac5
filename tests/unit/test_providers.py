"""Provider adapters: the built-in sim provider and any OpenAI-compatible upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gateway.providers.base import ChatCall, Delta, UpstreamError, Usage
from gateway.providers.openai_compat import OpenAICompatProvider
from gateway.providers.sim import SimProvider

QUESTION = [{"role": "user", "content": "What is a ledger?"}]
# The gateway's estimate: four tokens of framing per message plus one token per four
# characters, rounded up. "What is a ledger?" is 17 characters: 4 + 5.
QUESTION_PROMPT_TOKENS = 9


def chat_call(
    messages: list[dict[str, Any]] = QUESTION, max_tokens: int | None = None, **extra: Any
) -> ChatCall:
    return ChatCall(
        upstream_model="gpt-4o-mini",
        messages=messages,
        max_tokens=max_tokens,
        temperature=None,
        extra=extra,
    )


def sim(**overrides: Any) -> SimProvider:
    options: dict[str, Any] = {
        "latency_ms": 0.0,
        "error_rate": 0.0,
        "chunk_tokens": 4,
        "completion_tokens": 24,
    }
    options.update(overrides)
    return SimProvider(**options)


async def collect(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [delta async for delta in stream]


# --- sim ------------------------------------------------------------------------------


async def test_sim_answers_the_same_prompt_the_same_way() -> None:
    first = await sim().complete(chat_call())
    second = await sim(seed=99).complete(chat_call())
    assert first == second
    assert first.content
    assert first.usage == Usage(QUESTION_PROMPT_TOKENS, 24)
    assert len(first.content.split()) == 24
    assert first.finish_reason == "stop"


async def test_sim_answers_another_prompt_differently() -> None:
    first = await sim().complete(chat_call())
    other = await sim().complete(chat_call([{"role": "user", "content": "What is a wallet?"}]))
    assert other.content != first.content


async def test_max_tokens_caps_the_completion() -> None:
    completion = await sim().complete(chat_call(max_tokens=5))
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5
    assert len(completion.content.split()) == 5
    assert completion.finish_reason == "length"


async def test_max_tokens_above_the_answer_length_changes_nothing() -> None:
    capped = await sim().complete(chat_call(max_tokens=1_000))
    assert capped == await sim().complete(chat_call())


async def test_stream_yields_the_completion_text_with_usage_in_the_last_delta() -> None:
    provider = sim(chunk_tokens=5)
    completion = await provider.complete(chat_call())
    deltas = await collect(provider.stream(chat_call()))
    assert "".join(d.content for d in deltas) == completion.content
    assert deltas[-1].usage == completion.usage
    assert all(d.usage is None for d in deltas[:-1])
    assert deltas[-2].finish_reason == "stop"
    # 24 words in chunks of five: the role, five pieces of text, the finish, the usage.
    assert [len(d.content.split()) for d in deltas] == [0, 5, 5, 5, 5, 4, 0, 0]


async def test_stream_and_complete_agree_on_the_finish_reason_of_a_capped_answer() -> None:
    provider = sim()
    completion = await provider.complete(chat_call(max_tokens=5))
    deltas = await collect(provider.stream(chat_call(max_tokens=5)))
    assert completion.finish_reason == "length"
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["length"]


async def test_sim_error_rate_one_always_fails_with_503() -> None:
    provider = sim(error_rate=1.0)
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(chat_call())
    assert raised.value.status == 503
    assert raised.value.error_class == "http_5xx"
    with pytest.raises(UpstreamError) as raised:
        await collect(provider.stream(chat_call()))
    assert raised.value.status == 503


async def test_sim_flaky_fails_only_the_calls_that_ask_for_an_outage() -> None:
    provider = sim()
    down = [{"role": "system", "content": "[sim-outage] drill"}, *QUESTION]
    flaky = ChatCall("sim-flaky", down, None, None, {})
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(flaky)
    assert (raised.value.status, raised.value.error_class) == (503, "http_5xx")
    with pytest.raises(UpstreamError):
        await collect(provider.stream(flaky))
    parts = [{"role": "user", "content": [{"type": "text", "text": "[sim-outage]"}]}]
    with pytest.raises(UpstreamError):
        await provider.complete(ChatCall("sim-flaky", parts, None, None, {}))
    # The same model without the marker, and other sim models with it, answer.
    assert (await provider.complete(ChatCall("sim-flaky", QUESTION, None, None, {}))).content
    assert (await provider.complete(ChatCall("sim-small", down, None, None, {}))).content


# --- OpenAI-compatible upstream ---------------------------------------------------------

BASE_URL = "http://llm.internal:8000/v1"
API_KEY = "sk-test-8f14e45fceea167a"

COMPLETION_RESPONSE = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "A ledger is a record of transactions.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 13,
        "completion_tokens": 9,
        "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_06737a9306",
}


def _chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MJ1lGc2vK5Q3wYzT8dXh0aNpQrS",
        "object": "chat.completion.chunk",
        "created": 1741570059,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
        "choices": choices,
        "usage": usage,
    }


def _delta(delta: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]


STREAM_CHUNKS = [
    _chunk(_delta({"role": "assistant", "content": "", "refusal": None})),
    _chunk(_delta({"content": "A ledger"})),
    _chunk(_delta({"content": " is a record"})),
    _chunk(_delta({"content": " of transactions."})),
    _chunk(_delta({}, "stop")),
    _chunk([], {"prompt_tokens": 13, "completion_tokens": 9, "total_tokens": 22}),
]
STREAM_BODY = (
    "".join(f"data: {json.dumps(c)}\n\n" for c in STREAM_CHUNKS) + "data: [DONE]\n\n"
).encode()


class Upstream:
    """A recorded upstream: answers every request with one response, keeps the requests."""

    def __init__(
        self,
        status: int = 200,
        json_body: Any = None,
        sse: bytes | None = None,
        error: type[httpx.RequestError] | None = None,
    ) -> None:
        self.status = status
        self.json_body = json_body
        self.sse = sse
        self.error = error
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.error is not None:
            raise self.error("upstream did not answer in time", request=request)
        if self.sse is not None:
            return httpx.Response(
                self.status, content=self.sse, headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(self.status, json=self.json_body)

    def sent(self, index: int = 0) -> dict[str, Any]:
        sent: dict[str, Any] = json.loads(self.requests[index].content)
        return sent


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[Upstream], OpenAICompatProvider]]:
    providers: list[OpenAICompatProvider] = []

    def make(upstream: Upstream) -> OpenAICompatProvider:
        provider = OpenAICompatProvider(
            name="openai",
            base_url=BASE_URL,
            api_key=API_KEY,
            timeout_s=5.0,
            transport=httpx.MockTransport(upstream),
        )
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.close()


async def test_non_streamed_completion_is_parsed_with_usage(
    connect: Callable[[Upstream], OpenAICompatProvider],
) -> None:
    upstream = Upstream(json_body=COMPLETION_RESPONSE)
    completion = await connect(upstream).complete(chat_call(max_tokens=64, seed=7))
    assert completion.content == "A ledger is a record of transactions."
    assert completion.finish_reason == "stop"
    assert completion.usage == Usage(13, 9)
    request = upstream.requests[0]
    assert request.method == "POST"
    assert str(request.url) == f"{BASE_URL}/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    sent = upstream.sent()
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"] == QUESTION
    assert sent["max_tokens"] == 64
    assert sent["seed"] == 7
    assert "stream" not in sent


async def test_streamed_completion_is_parsed_into_deltas_with_reported_usage(
    connect: Callable[[Upstream], OpenAICompatProvider],
) -> None:
    upstream = Upstream(sse=STREAM_BODY)
    deltas = await collect(connect(upstream).stream(chat_call()))
    assert "".join(d.content for d in deltas) == "A ledger is a record of transactions."
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    assert [d.usage for d in deltas if d.usage] == [Usage(13, 9)]
    assert deltas[-1].usage == Usage(13, 9)
    sent = upstream.sent()
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert upstream.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


async def test_stream_without_usage_yields_no_usage(
    connect: Callable[[Upstream], OpenAICompatProvider],
) -> None:
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in STREAM_CHUNKS[:-1]) + "data: [DONE]\n\n"
    deltas = await collect(connect(Upstream(sse=body.encode())).stream(chat_call()))
    assert "".join(d.content for d in deltas) == "A ledger is a record of transactions."
    assert all(d.usage is None for d in deltas)


SERVER_ERROR = {"error": {"message": "The server had an error", "type": "server_error"}}
RATE_LIMITED = {"error": {"message": "Rate limit reached", "type": "requests", "code": None}}
BAD_REQUEST = {"error": {"message": "Invalid model", "type": "invalid_request_error"}}


@pytest.mark.parametrize(
    ("status", "json_body", "error_class"),
    [
        (500, SERVER_ERROR, "http_5xx"),
        (503, SERVER_ERROR, "http_5xx"),
        (429, RATE_LIMITED, "rate_limited"),
        (400, BAD_REQUEST, "http_4xx"),
    ],
)
async def test_error_statuses_are_classified(
    connect: Callable[[Upstream], OpenAICompatProvider],
    status: int,
    json_body: dict[str, Any],
    error_class: str,
) -> None:
    upstream = Upstream(status=status, json_body=json_body)
    provider = connect(upstream)
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(chat_call())
    assert (raised.value.status, raised.value.error_class) == (status, error_class)
    with pytest.raises(UpstreamError) as raised:
        await collect(provider.stream(chat_call()))
    assert (raised.value.status, raised.value.error_class) == (status, error_class)


async def test_a_timeout_is_classified_as_timeout(
    connect: Callable[[Upstream], OpenAICompatProvider],
) -> None:
    provider = connect(Upstream(error=httpx.ReadTimeout))
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(chat_call())
    assert (raised.value.status, raised.value.error_class) == (0, "timeout")
    with pytest.raises(UpstreamError) as raised:
        await collect(provider.stream(chat_call()))
    assert (raised.value.status, raised.value.error_class) == (0, "timeout")


async def test_an_unreachable_upstream_is_classified_as_connect(
    connect: Callable[[Upstream], OpenAICompatProvider],
) -> None:
    provider = connect(Upstream(error=httpx.ConnectError))
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(chat_call())
    assert (raised.value.status, raised.value.error_class) == (0, "connect")


async def test_a_malformed_answer_is_a_bad_response(
    connect: Callable[[Upstream], OpenAICompatProvider],
) -> None:
    provider = connect(Upstream(json_body={"object": "chat.completion", "choices": []}))
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(chat_call())
    assert raised.value.error_class == "bad_response"
