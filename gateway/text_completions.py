"""OpenAI's legacy `POST /v1/completions` as the pipeline serves it
(gateway.endpoint.Endpoint), streamed or not: validated as OpenAI validates it, the body
forwarded as sent (the model mapped, the prompt as the policy chain left it, usage asked
for on a stream) and the reply returned whole, `id` and `model` the gateway's as in chat."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import api_common
from gateway.chat import MAX_TOKENS_LIMIT
from gateway.chat_params import (
    BodyLimits,
    check_sampling,
    is_integer,
    refuse,
    stream_usage_asked,
)
from gateway.providers.base import Completion, Delta, Provider, UpstreamError, Usage
from gateway.replies import ChunkRelay
from gateway.tokens import estimate_text_tokens
from schemas.settings import GatewaySettings

COMPLETIONS_API = "completions"
COMPLETION_ID_PREFIX = "cmpl-"
MAX_LOGPROBS = 5
MAX_BEST_OF = 20
# Fields the policy chain does not read: the gateway's own and numbers, flags and maps
# of token ids no text can hide in.
NOT_SCANNED = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "n",
        "best_of",
        "echo",
        "temperature",
        "top_p",
        "max_tokens",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "logprobs",
        "logit_bias",
    }
)


def _texts(choices: Any) -> tuple[str, str | None]:
    """The text of every choice joined, and the first finish_reason."""
    texts: list[str] = []
    finish: str | None = None
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            raise TypeError("'choices' is not an array of objects")
        if isinstance(choice.get("text"), str):
            texts.append(choice["text"])
        if finish is None and isinstance(choice.get("finish_reason"), str):
            finish = choice["finish_reason"]
    return "".join(texts), finish


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A validated legacy completion request: the body as sent and what the gateway
    reads of it."""

    model: str
    user: str | None
    body: dict[str, Any]
    stream: bool
    include_usage: bool
    prompt_tokens: int
    max_tokens: int | None
    # Completions the upstream generates (and bills): n (or best_of) per prompt.
    generated: int
    # `prompt` when it holds token ids, which no text step of the policy chain reads.
    token_ids_in: str | None
    api = COMPLETIONS_API

    def rate_tokens(self) -> int:
        return self.prompt_tokens + (self.max_tokens or 0) * self.generated

    def reservation_tokens(self, default_completion_tokens: int) -> tuple[int, int]:
        return self.prompt_tokens, (self.max_tokens or default_completion_tokens) * self.generated

    def policy_messages(self) -> list[dict[str, Any]]:
        return api_common.scanned_fields(self.body, NOT_SCANNED)

    def after_policy(
        self, scanned: list[dict[str, Any]], verdict: Sequence[dict[str, Any]]
    ) -> CompletionRequest:
        body = api_common.body_after_policy(self.body, scanned, verdict)
        return self if body is None else dataclasses.replace(self, body=body)

    def served_by(self, provider: Provider) -> bool:
        return api_common.served_by(provider)

    async def complete(self, provider: Provider, upstream_model: str) -> Completion:
        reply = await api_common.call(provider, COMPLETIONS_API, upstream_model, self.body)
        choices = reply.get("choices")
        try:
            if not isinstance(choices, list) or not choices:
                raise TypeError("the reply has no choices")
            text, finish = _texts(choices)
        except TypeError as exc:
            raise UpstreamError(200, "bad_response", str(exc)) from exc
        return Completion(text, finish or "stop", api_common.usage_of(reply), reply)

    async def open_stream(
        self, provider: Provider, upstream_model: str
    ) -> AsyncGenerator[Delta, None]:
        chunks = api_common.chunks(provider, COMPLETIONS_API, upstream_model, self.body)
        async for chunk in chunks:
            try:
                text, finish = _texts(chunk.get("choices"))
            except TypeError as exc:
                raise UpstreamError(200, "bad_response", str(exc)) from exc
            yield Delta(text, finish, api_common.usage_of(chunk), chunk)

    def estimate_usage(self, text: str) -> Usage:
        return Usage(self.prompt_tokens, estimate_text_tokens(text))

    def reply_body(self, completion: Completion, event_id: str, usage: Usage) -> bytes:
        reply = {**(completion.reply or {}), "id": COMPLETION_ID_PREFIX + event_id}
        reply["model"] = self.model
        if not isinstance(reply.get("usage"), dict):
            reply["usage"] = {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            }
        return orjson.dumps(reply)

    def relay(self, event_id: str) -> ChunkRelay:
        return ChunkRelay(COMPLETION_ID_PREFIX + event_id, self.model, self.include_usage)


def _count(data: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = data.get(name)
    if value is not None and (not is_integer(value) or not low <= value <= high):
        raise refuse(name, f"must be an integer from {low} to {high}")
    return None if value is None else int(value)


def parse_completions(
    body: bytes, settings: GatewaySettings, limits: BodyLimits
) -> CompletionRequest:
    """The legacy completion request of a body; GatewayError naming the parameter at
    fault."""
    data = api_common.read_object(body, limits)
    model = api_common.identifier(data, "model", settings.max_identifier_chars, required=True)
    assert model is not None, "required"
    prompts = api_common.input_items(data, "prompt", max_items=limits.max_members)
    for name in ("stream", "echo"):
        if data.get(name) is not None and not isinstance(data[name], bool):
            raise refuse(name, "must be a boolean")
    if data.get("suffix") is not None and not isinstance(data["suffix"], str):
        raise refuse("suffix", "must be a string")
    max_tokens = _count(data, "max_tokens", 0, MAX_TOKENS_LIMIT)
    _count(data, "logprobs", 0, MAX_LOGPROBS)
    check_sampling(data, limits)
    n = int(data.get("n") or 1)
    best_of = _count(data, "best_of", 1, MAX_BEST_OF)
    if best_of is not None and best_of < n:
        raise refuse("best_of", "must be at least 'n'")
    stream = data.get("stream") is True
    if stream and (best_of or 1) > 1:
        raise refuse("best_of", "cannot be used with 'stream'")
    include_usage = stream_usage_asked(data)
    return CompletionRequest(
        model=model,
        user=api_common.identifier(data, "user", settings.max_identifier_chars, required=False),
        body=data,
        stream=stream,
        include_usage=include_usage,
        prompt_tokens=api_common.input_tokens(prompts),
        max_tokens=max_tokens,
        generated=max(n, best_of or 1) * len(prompts),
        token_ids_in="prompt" if api_common.has_token_ids(prompts) else None,
    )
