"""Provider adapters for Azure OpenAI, Mistral, Ollama and Anthropic, against recorded-looking
upstream answers: what is sent, what comes back, and how failures are classified."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.azure import AzureOpenAIProvider
from gateway.providers.base import ChatCall, Delta, Provider, UpstreamError, Usage
from gateway.providers.compat_variants import mistral_provider, ollama_provider
from gateway.providers.openai_compat import OpenAICompatProvider
from gateway.providers.upstream_http import SseEvent, parse_retry_after, sse_events
from gateway.replies import upstream_failure


def chat_call(
    messages: list[dict[str, Any]] | None = None,
    *,
    model: str = "gpt-4o-mini",
    max_tokens: int | None = None,
    temperature: float | None = None,
    **extra: Any,
) -> ChatCall:
    return ChatCall(
        upstream_model=model,
        messages=messages or [{"role": "user", "content": "What is a ledger?"}],
        max_tokens=max_tokens,
        temperature=temperature,
        extra=extra,
    )


async def collect(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [delta async for delta in stream]


async def collect_until_error(stream: AsyncIterator[Delta]) -> tuple[list[Delta], UpstreamError]:
    """The deltas a stream yielded before it failed, and the failure."""
    seen: list[Delta] = []
    try:
        async for delta in stream:
            seen.append(delta)  # noqa: PERF401 - a comprehension would lose them on the raise
    except UpstreamError as exc:
        return seen, exc
    raise AssertionError("the stream ended without an UpstreamError")


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.content for d in deltas)


async def pieces(
    data: bytes, size: int, fail: type[httpx.HTTPError] | None = None
) -> AsyncIterator[bytes]:
    """A body as the network delivers it: in small pieces, maybe cut off by an error."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
    if fail is not None:
        raise fail("upstream stopped sending")


class Upstream:
    """A recorded upstream: one answer for every request; keeps the requests it saw."""

    def __init__(
        self,
        status: int = 200,
        *,
        json_body: Any = None,
        sse: bytes | None = None,
        headers: dict[str, str] | None = None,
        error: type[httpx.RequestError] | None = None,
        piece_bytes: int | None = None,
        fail_after_body: type[httpx.HTTPError] | None = None,
    ) -> None:
        self.status = status
        self.json_body = json_body
        self.sse = sse
        self.headers = headers or {}
        self.error = error
        self.piece_bytes = piece_bytes
        self.fail_after_body = fail_after_body
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.error is not None:
            raise self.error("upstream did not answer in time", request=request)
        headers = dict(self.headers)
        if self.sse is not None:
            body = self.sse
            headers.setdefault("content-type", "text/event-stream; charset=utf-8")
        else:
            body = json.dumps(self.json_body).encode()
            headers.setdefault("content-type", "application/json")
        if self.piece_bytes is None and self.fail_after_body is None:
            return httpx.Response(self.status, content=body, headers=headers)
        content: AsyncIterator[bytes] = pieces(
            body, self.piece_bytes or len(body), self.fail_after_body
        )
        return httpx.Response(self.status, content=content, headers=headers)

    @property
    def request(self) -> httpx.Request:
        assert len(self.requests) == 1
        return self.requests[0]

    def sent(self) -> dict[str, Any]:
        sent: dict[str, Any] = json.loads(self.request.content)
        return sent


def sse(*events: dict[str, Any], done: bool = True) -> bytes:
    """OpenAI-style server-sent events: `data:` lines only, then [DONE]."""
    body = "".join(f"data: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events)
    return (body + ("data: [DONE]\n\n" if done else "")).encode()


def anthropic_sse(*events: dict[str, Any]) -> bytes:
    """Anthropic's server-sent events: an `event:` line naming the type, then `data:`."""
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


@pytest.fixture
async def providers() -> AsyncIterator[Callable[[Provider], Provider]]:
    opened: list[Provider] = []

    def keep(provider: Provider) -> Provider:
        opened.append(provider)
        return provider

    yield keep
    for provider in opened:
        await provider.close()


# --- Azure OpenAI -----------------------------------------------------------------------

AZURE_ENDPOINT = "https://contoso-eastus.openai.azure.com/"
AZURE_KEY = "5f1c0e7a9b2d4c6e8f0a1b3c5d7e9f01"
AZURE_VERSION = "2024-10-21"
AZURE_DEPLOYMENTS = {"gpt-4o-mini": "mini-prod-eastus", "gpt-4o": "gpt4o-prod"}

_SAFE = {"filtered": False, "severity": "safe"}
AZURE_FILTERS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
AZURE_PROMPT_FILTERS = [
    {
        "prompt_index": 0,
        "content_filter_results": {
            **AZURE_FILTERS,
            "jailbreak": {"filtered": False, "detected": False},
        },
    }
]

AZURE_COMPLETION = {
    "choices": [
        {
            "content_filter_results": AZURE_FILTERS,
            "finish_reason": "stop",
            "index": 0,
            "logprobs": None,
            "message": {
                "annotations": [],
                "content": "A ledger is a record of transactions.",
                "refusal": None,
                "role": "assistant",
            },
        }
    ],
    "created": 1741569952,
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "model": "gpt-4o-mini-2024-07-18",
    "object": "chat.completion",
    "prompt_filter_results": AZURE_PROMPT_FILTERS,
    "system_fingerprint": "fp_b705f0c291",
    "usage": {
        "completion_tokens": 9,
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        "prompt_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "total_tokens": 22,
    },
}


def _azure_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "choices": [
            {
                "content_filter_results": AZURE_FILTERS if delta.get("content") else {},
                "delta": delta,
                "finish_reason": finish_reason,
                "index": 0,
                "logprobs": None,
            }
        ],
        "created": 1741570059,
        "id": "chatcmpl-B9MJ1lGc2vK5Q3wYzT8dXh0aNpQrS",
        "model": "gpt-4o-mini-2024-07-18",
        "object": "chat.completion.chunk",
        "system_fingerprint": "fp_b705f0c291",
        "usage": None,
    }


AZURE_STREAM = sse(
    # Azure opens with the prompt's content-filter verdict: no choices, no id.
    {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": AZURE_PROMPT_FILTERS,
    },
    _azure_chunk({"content": "", "refusal": None, "role": "assistant"}),
    _azure_chunk({"content": "Entries"}),
    _azure_chunk({"content": " never"}),
    _azure_chunk({"content": " change."}),
    _azure_chunk({}, "stop"),
    {
        "choices": [],
        "created": 1741570059,
        "id": "chatcmpl-B9MJ1lGc2vK5Q3wYzT8dXh0aNpQrS",
        "model": "gpt-4o-mini-2024-07-18",
        "object": "chat.completion.chunk",
        "system_fingerprint": "fp_b705f0c291",
        "usage": {"completion_tokens": 4, "prompt_tokens": 13, "total_tokens": 17},
    },
)


def azure(upstream: Upstream, **overrides: Any) -> AzureOpenAIProvider:
    options: dict[str, Any] = {
        "name": "azure-eastus",
        "endpoint": AZURE_ENDPOINT,
        "api_key": AZURE_KEY,
        "api_version": AZURE_VERSION,
        "deployments": AZURE_DEPLOYMENTS,
        "timeout_s": 5.0,
        "transport": httpx.MockTransport(upstream),
    }
    options.update(overrides)
    return AzureOpenAIProvider(**options)


async def test_azure_completion_goes_to_the_deployment_with_the_api_key(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=AZURE_COMPLETION)
    provider = providers(azure(upstream))
    completion = await provider.complete(chat_call(max_tokens=64, temperature=0.2, seed=7))

    assert completion.content == "A ledger is a record of transactions."
    assert completion.finish_reason == "stop"
    assert completion.usage == Usage(13, 9)
    request = upstream.request
    assert request.method == "POST"
    assert request.url.host == "contoso-eastus.openai.azure.com"
    assert request.url.path == "/openai/deployments/mini-prod-eastus/chat/completions"
    assert request.url.params["api-version"] == "2024-10-21"
    assert request.headers["api-key"] == AZURE_KEY
    assert "authorization" not in request.headers
    sent = upstream.sent()
    assert "model" not in sent
    assert sent["messages"] == [{"role": "user", "content": "What is a ledger?"}]
    assert (sent["max_tokens"], sent["temperature"], sent["seed"]) == (64, 0.2, 7)
    assert "stream" not in sent


async def test_a_streamed_usage_chunk_reports_cached_and_reasoning_tokens(
    providers: Callable[[Provider], Provider],
) -> None:
    usage = {
        "completion_tokens": 4,
        "prompt_tokens": 13,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 0},
    }
    body = AZURE_STREAM.replace(
        b'"usage":{"completion_tokens":4,"prompt_tokens":13,"total_tokens":17}',
        b'"usage":' + json.dumps(usage, separators=(",", ":")).encode(),
    )
    assert body != AZURE_STREAM
    deltas = await collect(providers(azure(Upstream(sse=body))).stream(chat_call()))
    assert deltas[-1].usage == Usage(13, 4, cached_prompt_tokens=8, reasoning_tokens=2)


async def test_azure_picks_the_deployment_of_the_model_asked_for(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=AZURE_COMPLETION)
    await providers(azure(upstream)).complete(chat_call(model="gpt-4o"))
    assert upstream.request.url.path == "/openai/deployments/gpt4o-prod/chat/completions"


async def test_azure_stream_yields_text_and_reported_usage(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(sse=AZURE_STREAM)
    deltas = await collect(providers(azure(upstream)).stream(chat_call()))

    assert text_of(deltas) == "Entries never change."
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    assert deltas[-1].usage == Usage(13, 4)
    assert [d.usage for d in deltas if d.usage] == [Usage(13, 4)]
    request = upstream.request
    assert request.url.path == "/openai/deployments/mini-prod-eastus/chat/completions"
    assert request.url.params["api-version"] == "2024-10-21"
    assert request.headers["api-key"] == AZURE_KEY
    sent = upstream.sent()
    assert "model" not in sent
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_azure_content_filter_stop_comes_through(
    providers: Callable[[Provider], Provider],
) -> None:
    filtered = json.loads(json.dumps(AZURE_COMPLETION))
    choice = filtered["choices"][0]
    choice["finish_reason"] = "content_filter"
    choice["message"]["content"] = None
    choice["content_filter_results"]["violence"] = {"filtered": True, "severity": "high"}
    completion = await providers(azure(Upstream(json_body=filtered))).complete(chat_call())
    assert completion.content == ""
    assert completion.finish_reason == "content_filter"


async def test_azure_model_without_a_deployment_fails_before_any_request(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=AZURE_COMPLETION)
    provider = providers(azure(upstream))
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(chat_call(model="o3-mini"))
    assert raised.value.error_class == "http_4xx"
    assert "o3-mini" in str(raised.value)
    with pytest.raises(UpstreamError) as raised:
        await collect(provider.stream(chat_call(model="o3-mini")))
    assert raised.value.error_class == "http_4xx"
    assert upstream.requests == []


async def test_azure_retry_after_ms_is_preferred_for_precision(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(
        429,
        json_body={"error": {"code": "429", "message": "Please retry after 6 seconds."}},
        headers={"retry-after": "6", "retry-after-ms": "5830"},
    )
    with pytest.raises(UpstreamError) as raised:
        await providers(azure(upstream)).complete(chat_call())
    assert raised.value.error_class == "rate_limited"
    assert raised.value.retry_after_s == pytest.approx(5.83)


# --- Mistral ----------------------------------------------------------------------------

MISTRAL_KEY = "mst-Qx7d9KpL2vR4tY8wZ1aB3cE5"

MISTRAL_COMPLETION = {
    "id": "cmpl-e5cc70bb28c444948073e77776eb30ef",
    "object": "chat.completion",
    "created": 1741571000,
    "model": "mistral-small-latest",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "A ledger records every transaction in order.",
                "tool_calls": None,
                "prefix": False,
            },
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 10, "total_tokens": 21, "completion_tokens": 11},
}


def _mistral_chunk(
    content: str, finish_reason: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    chunk = {
        "id": "5c1b2e3f7a8d4c0e9b6a1f2d3c4b5a69",
        "object": "chat.completion.chunk",
        "created": 1741571010,
        "model": "mistral-small-latest",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish_reason}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


# Mistral sends usage unasked, in the chunk that carries the finish reason.
MISTRAL_STREAM = sse(
    {
        **_mistral_chunk(""),
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        ],
    },
    _mistral_chunk("Debits"),
    _mistral_chunk(" equal"),
    _mistral_chunk(" credits."),
    _mistral_chunk("", "stop", {"prompt_tokens": 10, "total_tokens": 15, "completion_tokens": 5}),
)


def mistral(upstream: Upstream) -> OpenAICompatProvider:
    return mistral_provider(
        api_key=MISTRAL_KEY, timeout_s=5.0, transport=httpx.MockTransport(upstream)
    )


async def test_mistral_completion_uses_bearer_key_and_mistral_field_names(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=MISTRAL_COMPLETION)
    provider = providers(mistral(upstream))
    completion = await provider.complete(
        chat_call(model="mistral-small-latest", max_tokens=128, seed=42, top_p=0.9)
    )

    assert provider.name == "mistral"
    assert completion.content == "A ledger records every transaction in order."
    assert completion.finish_reason == "stop"
    assert completion.usage == Usage(10, 11)
    assert str(upstream.request.url) == "https://api.mistral.ai/v1/chat/completions"
    assert upstream.request.headers["authorization"] == f"Bearer {MISTRAL_KEY}"
    sent = upstream.sent()
    assert sent["model"] == "mistral-small-latest"
    # Mistral answers 422 to fields it does not know; its seed is called random_seed.
    assert sent["random_seed"] == 42
    assert "seed" not in sent
    assert (sent["max_tokens"], sent["top_p"]) == (128, 0.9)


async def test_mistral_gets_the_callers_body_in_its_own_field_names(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=MISTRAL_COMPLETION)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    body = {
        "model": "alias",
        "messages": [],
        "tools": tools,
        "tool_choice": "any",
        "user": "u-7",
        "seed": 5,
        "max_completion_tokens": 64,
    }
    call = dataclasses.replace(chat_call(model="mistral-small-latest"), body=body)
    await providers(mistral(upstream)).complete(call)

    sent = upstream.sent()
    assert sent == {
        "model": "mistral-small-latest",
        "messages": call.messages,
        "tools": tools,
        "tool_choice": "any",
        "random_seed": 5,
        "max_tokens": 64,
    }


async def test_mistral_stream_sends_no_stream_options_and_reads_usage_from_the_last_chunk(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(sse=MISTRAL_STREAM)
    deltas = await collect(providers(mistral(upstream)).stream(chat_call(model="mistral-large")))

    assert text_of(deltas) == "Debits equal credits."
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    assert [d.usage for d in deltas if d.usage] == [Usage(10, 5)]
    assert deltas[-1].usage == Usage(10, 5)
    sent = upstream.sent()
    assert sent["stream"] is True
    assert "stream_options" not in sent


# --- Ollama -----------------------------------------------------------------------------

OLLAMA_COMPLETION = {
    "id": "chatcmpl-417",
    "object": "chat.completion",
    "created": 1741572000,
    "model": "llama3.2",
    "system_fingerprint": "fp_ollama",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "A ledger is a book of accounts."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 31, "completion_tokens": 10, "total_tokens": 41},
}


def _ollama_chunk(content: str, finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-608",
        "object": "chat.completion.chunk",
        "created": 1741572010,
        "model": "llama3.2",
        "system_fingerprint": "fp_ollama",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
    }


OLLAMA_CHUNKS = [
    _ollama_chunk("Balances"),
    _ollama_chunk(" are"),
    _ollama_chunk(" sums."),
    _ollama_chunk("", "length"),
]
OLLAMA_USAGE_CHUNK = {
    **_ollama_chunk(""),
    "choices": [],
    "usage": {"prompt_tokens": 31, "completion_tokens": 3, "total_tokens": 34},
}


def ollama(upstream: Upstream) -> OpenAICompatProvider:
    return ollama_provider(timeout_s=5.0, transport=httpx.MockTransport(upstream))


async def test_ollama_completion_needs_no_key(providers: Callable[[Provider], Provider]) -> None:
    upstream = Upstream(json_body=OLLAMA_COMPLETION)
    provider = providers(ollama(upstream))
    completion = await provider.complete(chat_call(model="llama3.2"))

    assert provider.name == "ollama"
    assert completion.content == "A ledger is a book of accounts."
    assert completion.usage == Usage(31, 10)
    assert str(upstream.request.url) == "http://localhost:11434/v1/chat/completions"
    assert "authorization" not in upstream.request.headers
    assert upstream.sent()["model"] == "llama3.2"


async def test_ollama_stream_without_usage_ends_cleanly_with_no_usage(
    providers: Callable[[Provider], Provider],
) -> None:
    # Ollama versions that ignore stream_options send no usage chunk: the gateway then
    # estimates, so the adapter must simply finish without one.
    upstream = Upstream(sse=sse(*OLLAMA_CHUNKS))
    deltas = await collect(providers(ollama(upstream)).stream(chat_call(model="llama3.2")))

    assert text_of(deltas) == "Balances are sums."
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["length"]
    assert all(d.usage is None for d in deltas)
    assert upstream.sent()["stream_options"] == {"include_usage": True}


async def test_ollama_stream_with_usage_reports_it(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(sse=sse(*OLLAMA_CHUNKS, OLLAMA_USAGE_CHUNK))
    deltas = await collect(providers(ollama(upstream)).stream(chat_call(model="llama3.2")))
    assert text_of(deltas) == "Balances are sums."
    assert deltas[-1].usage == Usage(31, 3)


async def test_ollama_stream_cut_without_done_still_ends(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(sse=sse(*OLLAMA_CHUNKS[:2], done=False))
    deltas = await collect(providers(ollama(upstream)).stream(chat_call(model="llama3.2")))
    assert text_of(deltas) == "Balances are"
    assert all(d.usage is None for d in deltas)


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
            "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f"}}],
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


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("tool_choice", "required"),
        ("response_format", {"type": "json_object"}),
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
