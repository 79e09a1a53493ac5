"""Providers on OpenAI's APIs besides chat (gateway.providers.base.ApiProvider): an
OpenAI-compatible adapter forwards the body as given (the model mapped, Azure's in the
URL), asks a stream for usage and hands each reply or chunk whole; an adapter that
translates (Anthropic) has no such API, so the pipeline refuses those targets; the sim
answers deterministically in the dimensions and encoding asked for."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway import api_common
from gateway.providers import sim_api
from gateway.providers.base import ApiCall, ApiProvider, Provider, UpstreamError
from gateway.providers.openai_compat import OpenAICompatProvider
from gateway.providers.sim import SimProvider
from tests.unit.provider_support import Upstream, sse
from tests.unit.test_provider_anthropic import anthropic
from tests.unit.test_provider_openai_shaped import azure

EMBEDDINGS = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.5]}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 3, "total_tokens": 3},
}


def compat(upstream: Upstream) -> OpenAICompatProvider:

    return OpenAICompatProvider(
        name="openai",
        base_url="https://api.example.test/v1",
        api_key="sk-upstream",
        timeout_s=5.0,
        transport=httpx.MockTransport(upstream),
    )


async def test_an_embeddings_call_is_forwarded_as_given_and_answered_whole(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=EMBEDDINGS)
    provider = providers(compat(upstream))
    assert isinstance(provider, ApiProvider)
    body = {"model": "alias", "input": ["a"], "dimensions": 2, "future": {"x": [1]}}
    reply = await provider.call_api(ApiCall("embeddings", "text-embedding-3-small", body))
    assert reply == EMBEDDINGS
    assert upstream.request.url.path == "/v1/embeddings"
    assert upstream.sent() == {**body, "model": "text-embedding-3-small"}


async def test_azure_addresses_the_deployment_and_leaves_the_model_out(
    providers: Callable[[Provider], Provider],
) -> None:
    upstream = Upstream(json_body=EMBEDDINGS)
    provider = providers(azure(upstream))
    assert isinstance(provider, ApiProvider)
    await provider.call_api(ApiCall("embeddings", "gpt-4o-mini", {"model": "m", "input": "a"}))
    assert upstream.request.url.path == "/openai/deployments/mini-prod-eastus/embeddings"
    assert upstream.request.url.params["api-version"] == "2024-10-21"
    assert upstream.sent() == {"input": "a"}


async def test_a_stream_asks_for_usage_and_yields_every_chunk_whole(
    providers: Callable[[Provider], Provider],
) -> None:
    chunks: list[dict[str, Any]] = [
        {"object": "text_completion", "choices": [{"text": "Hi", "index": 0}]},
        {"object": "text_completion", "choices": [], "usage": {"prompt_tokens": 1}},
    ]
    upstream = Upstream(sse=sse(*chunks))
    provider = providers(compat(upstream))
    assert isinstance(provider, ApiProvider)
    body = {"prompt": "x", "stream": True, "stream_options": {"include_usage": False}}
    got = [c async for c in provider.stream_api(ApiCall("completions", "m", body))]
    assert got == chunks
    assert upstream.sent()["stream_options"] == {"include_usage": True}


async def test_an_upstream_refusal_keeps_its_parameter(
    providers: Callable[[Provider], Provider],
) -> None:
    error = {"message": "dimensions too large", "type": "invalid_request_error"}
    upstream = Upstream(400, json_body={"error": {**error, "param": "dimensions"}})
    provider = providers(compat(upstream))
    assert isinstance(provider, ApiProvider)
    with pytest.raises(UpstreamError) as raised:
        await provider.call_api(ApiCall("embeddings", "m", {"input": "a"}))
    assert raised.value.invalid is not None and raised.value.invalid["param"] == "dimensions"


async def test_anthropic_has_no_such_api_so_its_targets_are_not_served(
    providers: Callable[[Provider], Provider],
) -> None:
    provider = providers(anthropic(Upstream()))
    assert not api_common.served_by(provider)
    assert api_common.served_by(
        SimProvider(latency_ms=0, error_rate=0, chunk_tokens=2, completion_tokens=4)
    )


def test_sim_embeddings_are_unit_vectors_the_same_as_floats_and_base64() -> None:
    floats = sim_api.embeddings_reply({"input": ["a", [1, 2]], "dimensions": 40}, "sim-embed")
    encoded = sim_api.embeddings_reply(
        {"input": ["a", [1, 2]], "dimensions": 40, "encoding_format": "base64"}, "sim-embed"
    )
    vectors = [d["embedding"] for d in floats["data"]]
    assert [len(v) for v in vectors] == [40, 40] and vectors[0] != vectors[1]
    assert all(abs(sum(x * x for x in v) - 1) < 1e-5 for v in vectors)
    unpacked = [
        list(struct.unpack("<40f", base64.b64decode(d["embedding"]))) for d in encoded["data"]
    ]
    assert unpacked == vectors
    assert floats["usage"] == {"prompt_tokens": 1 + 2, "total_tokens": 3}
    default = sim_api.embeddings_reply({"input": "a"}, "sim-embed")["data"][0]["embedding"]
    assert len(default) == sim_api.SIM_EMBEDDING_DIMENSIONS
