"""Upstreams that speak the OpenAI chat-completions API with small differences:
Mistral (strict about unknown fields) and Ollama (local, no key)."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.providers.base import ChatCall
from gateway.providers.openai_compat import OpenAICompatProvider

MISTRAL_BASE_URL = "https://api.mistral.ai/v1"
"""Mistral's public API."""

OLLAMA_BASE_URL = "http://localhost:11434/v1"
"""Ollama's OpenAI-compatible endpoint on a local install."""


class MistralProvider(OpenAICompatProvider):
    """Mistral's chat completions: OpenAI's shape, but unknown fields are a 422.

    Mistral rejects `stream_options` and reports usage in the last streamed chunk
    unasked; it calls the sampling seed `random_seed` and knows only `max_tokens`. It
    does not take `user`, which the gateway consumes (lineage, the rbac step); any other
    field it does not know gets its 422, an error the caller sees, never a silent drop.
    """

    def _body(self, call: ChatCall, *, stream: bool) -> dict[str, Any]:
        body = super()._body(call, stream=stream)
        body.pop("stream_options", None)
        body.pop("user", None)
        if "seed" in body:
            body["random_seed"] = body.pop("seed")
        if "max_completion_tokens" in body:
            body["max_tokens"] = body.pop("max_completion_tokens")
        return body


def mistral_provider(
    *,
    api_key: str,
    timeout_s: float,
    base_url: str = MISTRAL_BASE_URL,
    name: str = "mistral",
    transport: httpx.AsyncBaseTransport | None = None,
) -> OpenAICompatProvider:
    """A provider for Mistral's API (Bearer key)."""
    assert api_key, "Mistral needs an API key"
    return MistralProvider(
        name=name, base_url=base_url, api_key=api_key, timeout_s=timeout_s, transport=transport
    )


def ollama_provider(
    *,
    timeout_s: float,
    base_url: str = OLLAMA_BASE_URL,
    name: str = "ollama",
    transport: httpx.AsyncBaseTransport | None = None,
) -> OpenAICompatProvider:
    """A provider for an Ollama server, which takes no key.

    Ollama honours `stream_options.include_usage` in recent versions; when an older one
    sends no usage, the stream simply carries none and the gateway estimates it.
    """
    return OpenAICompatProvider(
        name=name, base_url=base_url, api_key="", timeout_s=timeout_s, transport=transport
    )
