"""Anthropic's `POST /v1/messages` as the pipeline serves it (gateway.endpoint.Endpoint),
and `POST /v1/messages/count_tokens`.

The request is translated to a chat completion (gateway.anthropic_shape) and served as
one by any provider, under the key, the policy chain (which reads and redacts the
translated text), the budget, pricing and routing, with one lineage record of api
"messages". The key comes in `x-api-key` (as the anthropic SDK sends it) or as a bearer
token (gateway.credentials); errors reach the caller in Anthropic's shape
(gateway.anthropic_errors)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway import anthropic_errors, api_common, errors
from gateway.anthropic_shape import (
    MESSAGES_API,
    message_body,
    message_id,
    to_chat_body,
)
from gateway.anthropic_stream import MessagesRelay
from gateway.chat_endpoint import ChatEndpoint, parse_chat
from gateway.chat_params import BodyLimits, refuse
from gateway.errors import GatewayError
from gateway.pipeline import Gateway
from gateway.providers.base import Completion, Delta, Provider, Usage
from gateway.replies import ChunkRelay
from gateway.tokens import estimate_prompt_tokens, estimate_text_tokens
from schemas.settings import GatewaySettings


@dataclass(frozen=True, slots=True)
class MessagesEndpoint:
    """A Messages request, translated to the chat completion every provider serves."""

    chat: ChatEndpoint
    api = MESSAGES_API
    token_ids_in = None  # a Messages body has no token-id input

    @property
    def model(self) -> str:
        return self.chat.model

    @property
    def user(self) -> str | None:
        return self.chat.user

    @property
    def stream(self) -> bool:
        return self.chat.stream

    def rate_tokens(self) -> int:
        return self.chat.rate_tokens()

    def reservation_tokens(self, default_completion_tokens: int) -> tuple[int, int]:
        return self.chat.reservation_tokens(default_completion_tokens)

    def policy_messages(self) -> list[dict[str, Any]]:
        return self.chat.policy_messages()

    def after_policy(
        self, scanned: list[dict[str, Any]], verdict: Sequence[dict[str, Any]]
    ) -> MessagesEndpoint:
        chat = self.chat.after_policy(scanned, verdict)
        return self if chat is self.chat else MessagesEndpoint(chat)

    def served_by(self, provider: Provider) -> bool:
        # Every provider has chat; the Anthropic adapter carries tools and structured
        # output back to Anthropic's terms (gateway/providers/anthropic_request.py).
        return self.chat.served_by(provider)

    async def complete(self, provider: Provider, upstream_model: str) -> Completion:
        completion = await self.chat.complete(provider, upstream_model)
        # Translated here, so a reply that cannot be (a tool call's arguments that are not
        # JSON) fails as the provider's bad response: recorded, and the next target tried.
        message = message_body(
            reply=completion.reply,
            text=completion.content,
            finish_reason=completion.finish_reason,
            reply_id="",
            model=self.model,
            usage=Usage(0, 0),
        )
        return dataclasses.replace(completion, reply=message)

    def open_stream(self, provider: Provider, upstream_model: str) -> AsyncGenerator[Delta, None]:
        return self.chat.open_stream(provider, upstream_model)

    def estimate_usage(self, text: str) -> Usage:
        return self.chat.estimate_usage(text)

    def reply_body(self, completion: Completion, event_id: str, usage: Usage) -> bytes:
        assert completion.reply is not None, "complete() translated the reply"
        reply = {**completion.reply, "id": message_id(event_id), "model": self.model}
        reply["usage"] = {
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
        }
        return orjson.dumps(reply)

    def relay(self, event_id: str) -> ChunkRelay:
        prompt_tokens = estimate_prompt_tokens(self.chat.chat.messages)
        return MessagesRelay(message_id(event_id), self.model, prompt_tokens)


def _translated(body: bytes, limits: BodyLimits) -> dict[str, Any]:
    return to_chat_body(api_common.read_object(body, limits))


def parse_messages(body: bytes, settings: GatewaySettings, limits: BodyLimits) -> MessagesEndpoint:
    """The Messages request of a body, translated; GatewayError naming the field at fault."""
    chat_body = _translated(body, limits)
    # The translation is checked as any chat completion is (shape, limits, parameters).
    return MessagesEndpoint(parse_chat(orjson.dumps(chat_body), settings, limits))


async def messages(gateway: Gateway, request: web.Request) -> web.StreamResponse:
    """Anthropic `POST /v1/messages`, streamed or not, through the call pipeline."""
    response = await gateway.serve(request, MESSAGES_API, parse_messages)
    return anthropic_errors.as_anthropic(response)


async def count_tokens(gateway: Gateway, request: web.Request) -> web.StreamResponse:
    """Anthropic `POST /v1/messages/count_tokens`: the input tokens of a Messages request
    as the gateway estimates and reserves them, for a model the key may call. No provider
    is called and nothing is charged, so no lineage record is written."""
    try:
        key = gateway._authenticate(request)
        data = api_common.read_object(await request.read(), gateway.limits)
        if "stream" in data or "max_tokens" in data:
            raise refuse("stream" if "stream" in data else "max_tokens", "is not a field here")
        chat = to_chat_body({**data, "max_tokens": 1})
        endpoint = parse_chat(orjson.dumps(chat), gateway.settings, gateway.limits)
        targets, _ = gateway._plan(endpoint.model)
        if not targets:
            raise GatewayError(errors.MODEL_NOT_FOUND, f"model '{endpoint.model}' does not exist")
        gateway.access.allowed(key, endpoint.model, targets)
    except GatewayError as exc:
        return anthropic_errors.as_anthropic(errors.refusal_response(exc))
    tokens = estimate_prompt_tokens(endpoint.chat.messages)
    if "tools" in chat:
        tokens += estimate_text_tokens(orjson.dumps(chat["tools"]).decode())
    return web.Response(
        body=orjson.dumps({"input_tokens": tokens}), content_type="application/json"
    )
