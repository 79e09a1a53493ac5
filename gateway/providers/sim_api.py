"""The sim provider's answers on OpenAI's other endpoints, decided from the caller's body
alone (same body, same answer): embeddings (a unit vector per input, of the `dimensions`
asked for, as floats or base64 of little-endian float32 as `encoding_format` says) and
legacy text completions (`n` choices, `echo`, `max_tokens`, streamed in chunks). Pure."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.tokens import estimate_text_tokens

SIM_EMBEDDING_MODEL = "sim-embed"
"""The sim's embedding model in the catalogue (any sim model answers embeddings)."""

SIM_EMBEDDING_DIMENSIONS = 64
"""Length of a sim embedding when the caller names no `dimensions` (kept small: tests)."""

SYSTEM_FINGERPRINT = "fp_sim"


def _inputs(value: Any) -> list[Any]:
    """OpenAI's input (or prompt): a string, a token array, or an array of either."""
    if isinstance(value, str) or (
        isinstance(value, list) and value and all(isinstance(v, int) for v in value)
    ):
        return [value]
    return list(value) if isinstance(value, list) else [value]


def input_tokens(item: Any) -> int:
    """Tokens of one input: a token array's length, else estimated from its text."""
    return len(item) if isinstance(item, list) else estimate_text_tokens(str(item))


def _vector(item: Any, dimensions: int) -> list[float]:
    seed = repr(item).encode()
    raw: list[float] = []
    block = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(seed + block.to_bytes(4, "little")).digest()
        raw.extend((b - 127.5) / 127.5 for b in digest)
        block += 1
    return raw[:dimensions]


def _encoded(vector: list[float], encoding_format: Any) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def embeddings_reply(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A `list` of embeddings, one per input, with usage."""
    dimensions = body.get("dimensions")
    size = SIM_EMBEDDING_DIMENSIONS
    if isinstance(dimensions, int) and dimensions > 0:  # validated by the gateway
        size = dimensions
    items = _inputs(body.get("input"))
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": _encoded(_unit(_vector(item, size)), body.get("encoding_format")),
        }
        for index, item in enumerate(items)
    ]
    tokens = sum(input_tokens(item) for item in items)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def _unit(vector: list[float]) -> list[float]:
    """The vector scaled to length 1, rounded through float32 so that its float and base64
    forms are the same numbers."""
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    scaled = [x / norm for x in vector]
    return list(struct.unpack(f"<{len(scaled)}f", struct.pack(f"<{len(scaled)}f", *scaled)))


Words = Callable[[str, int | None], list[str]]


def _completion_choices(body: Mapping[str, Any], words: Words) -> list[tuple[str, str, int]]:
    """(text, finish_reason, completion tokens) of each choice of each prompt."""
    max_tokens = body.get("max_tokens")
    cap = max_tokens if isinstance(max_tokens, int) else None
    n = body.get("n")
    choices = []
    for prompt in _inputs(body.get("prompt", "")):
        for index in range(n if isinstance(n, int) and n > 1 else 1):
            said = words(f"{prompt!r}#{index}", cap)
            text = " " + " ".join(said)
            if body.get("echo") is True and isinstance(prompt, str):
                text = prompt + text
            finish = "length" if cap is not None and len(said) >= cap else "stop"
            choices.append((text, finish, len(said)))
    return choices


def _envelope(model: str) -> dict[str, Any]:
    return {
        "id": "cmpl-sim",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _completion_usage(body: Mapping[str, Any], completion_tokens: int) -> dict[str, int]:
    prompt_tokens = sum(input_tokens(p) for p in _inputs(body.get("prompt", "")))
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_reply(body: Mapping[str, Any], model: str, words: Words) -> dict[str, Any]:
    """A `text_completion` with every choice and usage."""
    answers = _completion_choices(body, words)
    choices = [
        {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        for index, (text, finish, _) in enumerate(answers)
    ]
    usage = _completion_usage(body, sum(tokens for *_, tokens in answers))
    return {**_envelope(model), "choices": choices, "usage": usage}


def completion_chunks(
    body: Mapping[str, Any], model: str, words: Words, chunk_words: int
) -> list[dict[str, Any]]:
    """The same answer streamed: each choice's text in pieces of `chunk_words` words, a
    chunk with its finish_reason, then the usage chunk (no choices)."""
    answers = _completion_choices(body, words)
    chunks = []
    for index, (text, finish, _) in enumerate(answers):
        pieces = text.split(" ")
        for start in range(0, len(pieces), chunk_words):
            piece = " ".join(pieces[start : start + chunk_words])
            if start:
                piece = " " + piece
            choice = {"text": piece, "index": index, "logprobs": None, "finish_reason": None}
            chunks.append({**_envelope(model), "choices": [choice]})
        end = {"text": "", "index": index, "logprobs": None, "finish_reason": finish}
        chunks.append({**_envelope(model), "choices": [end]})
    usage = _completion_usage(body, sum(tokens for *_, tokens in answers))
    chunks.append({**_envelope(model), "choices": [], "usage": usage})
    return chunks
