"""An OpenAI-compatible upstream for the APIs besides chat: `/embeddings` and the legacy
`/completions` answered as OpenAI answers them (vectors of the `dimensions` asked for, as
floats or base64 as `encoding_format` says; every choice of `n`; a stream's usage chunk
only when asked for), each request's path and body kept as received. Its replies carry a
field the gateway does not know (`future_field`), so a test sees whether it survives.
Chat requests fall through to OpenAIUpstream."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from tests.component.openai_upstream import OpenAIUpstream

EMBED_MODEL = "text-embedding-3-small"
INSTRUCT_MODEL = "gpt-3.5-turbo-instruct"
TOKENS_PER_INPUT = 7
COMPLETION_TOKENS_PER_CHOICE = 5
WORDS = ("The", "ledger", "balances.")


def vector(index: int, dimensions: int) -> list[float]:
    """The upstream's embedding of input `index`: exact in float32."""
    return [(index + 1) * 0.25 - i * 0.125 for i in range(dimensions)]


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    given = body["input"]
    items = given if isinstance(given, list) and not isinstance(given[0], int) else [given]
    data = []
    for index in range(len(items)):
        numbers = vector(index, body.get("dimensions", 4))
        encoded: Any = numbers
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(numbers)}f", *numbers)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = TOKENS_PER_INPUT * len(items)
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "future_field": {"kept": True},
    }


def _usage(body: dict[str, Any]) -> dict[str, int]:
    completion = COMPLETION_TOKENS_PER_CHOICE * int(body.get("n") or 1)
    return {
        "prompt_tokens": TOKENS_PER_INPUT,
        "completion_tokens": completion,
        "total_tokens": TOKENS_PER_INPUT + completion,
    }


def _envelope(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "cmpl-upstream-own-id",
        "object": "text_completion",
        "created": 1_700_000_000,
        "model": body["model"],
        "system_fingerprint": "fp_instruct",
    }


def completion(body: dict[str, Any]) -> dict[str, Any]:
    """The non-streamed answer: each choice says WORDS (after the prompt when echoed)."""
    prefix = body["prompt"] if body.get("echo") else ""
    choices = [
        {
            "text": prefix + " " + " ".join(WORDS),
            "index": index,
            "logprobs": None,
            "finish_reason": "stop",
            "future_field": {"kept": True},
        }
        for index in range(int(body.get("n") or 1))
    ]
    return {**_envelope(body), "choices": choices, "usage": _usage(body)}


def completion_chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The streamed answer, word by word, then a finish chunk per choice and, when asked
    for, the usage chunk."""
    with_usage = (body.get("stream_options") or {}).get("include_usage") is True
    out = []
    for index in range(int(body.get("n") or 1)):
        for word in (*WORDS, ""):
            finish = None if word else "stop"
            text = " " + word if word else ""
            choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
            out.append({**_envelope(body), "choices": [choice]})
    if with_usage:
        out.append({**_envelope(body), "choices": [], "usage": _usage(body)})
    return out


@dataclass
class ApiUpstream(OpenAIUpstream):
    """OpenAIUpstream, plus /embeddings and /completions; `paths` keeps each path."""

    paths: list[str] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/chat/completions"):
            return super().handle(request)
        self.paths.append(path)
        self.raw_bodies.append(request.content)
        body = orjson.loads(request.content)
        self.received.append(body)
        if path.endswith("/embeddings"):
            return httpx.Response(200, json=_embeddings(body))
        if body.get("stream") is True:
            events = b"".join(
                b"data: " + orjson.dumps(c) + b"\n\n" for c in completion_chunks(body)
            )
            return httpx.Response(
                200,
                headers={"Content-Type": "text/event-stream"},
                content=events + b"data: [DONE]\n\n",
            )
        return httpx.Response(200, json=completion(body))
