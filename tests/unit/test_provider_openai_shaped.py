"""Provider adapters for OpenAI-shaped upstreams (Azure OpenAI, Mistral, Ollama) against
recorded-looking answers: what is sent and what comes back."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.providers.azure import AzureOpenAIProvider
from gateway.providers.base import Provider, UpstreamError, Usage
from gateway.providers.compat_variants import mistral_provider, ollama_provider
from gateway.providers.openai_compat import OpenAICompatProvider
from tests.unit.provider_support import Upstream, chat_call, collect, sse, text_of

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
