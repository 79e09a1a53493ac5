"""`POST /v1/embeddings` as the pipeline serves it (gateway.endpoint.Endpoint): validated
as OpenAI validates it, the body forwarded as sent (the model mapped, the input as the
policy chain left it) and the reply returned whole. Priced by input tokens."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import api_common
from gateway.chat_params import BodyLimits, is_integer, refuse
from gateway.providers.base import Completion, Delta, Provider, UpstreamError, Usage
from gateway.replies import ChunkRelay
from schemas.settings import GatewaySettings

EMBEDDINGS_API = "embeddings"
ENCODING_FORMATS = ("float", "base64")
MAX_INPUTS = 2048
"""OpenAI's limit on the inputs of one embeddings call."""

# Fields the policy chain does not read: numbers and enums no text can hide in.
NOT_SCANNED = frozenset({"model", "dimensions", "encoding_format"})


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    """A validated embeddings request: the body as sent and what the gateway reads of it."""

    model: str
    user: str | None
    body: dict[str, Any]
    input_tokens: int
    # `input` when it holds token ids, which no text step of the policy chain reads.
    token_ids_in: str | None
    api = EMBEDDINGS_API
    stream = False

    def rate_tokens(self) -> int:
        return self.input_tokens

    def reservation_tokens(self, default_completion_tokens: int) -> tuple[int, int]:
        del default_completion_tokens  # an embedding has no completion tokens
        return self.input_tokens, 0

    def policy_messages(self) -> list[dict[str, Any]]:
        return api_common.scanned_fields(self.body, NOT_SCANNED)

    def after_policy(
        self, scanned: list[dict[str, Any]], verdict: Sequence[dict[str, Any]]
    ) -> EmbeddingsRequest:
        body = api_common.body_after_policy(self.body, scanned, verdict)
        return self if body is None else dataclasses.replace(self, body=body)

    def served_by(self, provider: Provider) -> bool:
        return api_common.served_by(provider)

    async def complete(self, provider: Provider, upstream_model: str) -> Completion:
        reply = await api_common.call(provider, EMBEDDINGS_API, upstream_model, self.body)
        data = reply.get("data")
        if not isinstance(data, list):
            raise UpstreamError(200, "bad_response", "the reply has no 'data' array")
        # What the response hash covers: the embeddings as the caller gets them.
        return Completion(orjson.dumps(data).decode(), "stop", api_common.usage_of(reply), reply)

    def open_stream(self, provider: Provider, upstream_model: str) -> AsyncGenerator[Delta, None]:
        raise AssertionError("embeddings are never streamed (parse refuses 'stream')")

    def estimate_usage(self, text: str) -> Usage:
        del text
        return Usage(self.input_tokens, 0)

    def reply_body(self, completion: Completion, event_id: str, usage: Usage) -> bytes:
        del event_id  # an embeddings list has no id; the response header names the record
        reply = {**(completion.reply or {}), "model": self.model}
        if not isinstance(reply.get("usage"), dict):
            tokens = usage.prompt_tokens
            reply["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return orjson.dumps(reply)

    def relay(self, event_id: str) -> ChunkRelay:
        raise AssertionError("embeddings are never streamed")


def parse_embeddings(
    body: bytes, settings: GatewaySettings, limits: BodyLimits
) -> EmbeddingsRequest:
    """The embeddings request of a body; GatewayError naming the parameter at fault."""
    data = api_common.read_object(body, limits)
    model = api_common.identifier(data, "model", settings.max_identifier_chars, required=True)
    assert model is not None, "required"
    items = api_common.input_items(data, "input", max_items=MAX_INPUTS)
    dimensions = data.get("dimensions")
    limit = settings.max_embedding_dimensions
    if dimensions is not None and (not is_integer(dimensions) or not 1 <= dimensions <= limit):
        raise refuse("dimensions", f"must be an integer from 1 to {limit}")
    encoding = data.get("encoding_format")
    if encoding is not None and encoding not in ENCODING_FORMATS:
        raise refuse("encoding_format", f"must be one of {list(ENCODING_FORMATS)}")
    if data.get("stream") not in (None, False):
        raise refuse("stream", "is not supported by the embeddings API")
    return EmbeddingsRequest(
        model=model,
        user=api_common.identifier(data, "user", settings.max_identifier_chars, required=False),
        body=data,
        input_tokens=api_common.input_tokens(items),
        token_ids_in="input" if api_common.has_token_ids(items) else None,
    )
