"""Chat completions as the pipeline serves them (gateway.endpoint.Endpoint): the request
parsed and validated by gateway.chat, the reply written by gateway.replies."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.call_record import CHAT_API
from gateway.chat import ChatRequest, parse_chat_request
from gateway.chat_params import BodyLimits
from gateway.providers.base import Completion, Delta, Provider, Usage
from gateway.replies import ChunkRelay, completion_id, reply_body
from gateway.tokens import estimate_prompt_tokens, estimate_text_tokens
from schemas.settings import GatewaySettings


@dataclass(frozen=True, slots=True)
class ChatEndpoint:
    """A validated chat-completion request."""

    chat: ChatRequest
    api = CHAT_API
    token_ids_in = None  # a chat body has no token-id input: the chain reads every text

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
        chat = self.chat
        return estimate_prompt_tokens(chat.messages) + (chat.max_tokens or 0) * chat.choices

    def reservation_tokens(self, default_completion_tokens: int) -> tuple[int, int]:
        # Each of `n` choices may run to max_tokens.
        chat = self.chat
        completion_tokens = (chat.max_tokens or default_completion_tokens) * chat.choices
        return estimate_prompt_tokens(chat.messages), completion_tokens

    def policy_messages(self) -> list[dict[str, Any]]:
        return self.chat.policy_messages()

    def after_policy(
        self, scanned: list[dict[str, Any]], verdict: Sequence[dict[str, Any]]
    ) -> ChatEndpoint:
        chat = self.chat.after_policy(scanned, verdict)
        return self if chat is self.chat else ChatEndpoint(chat)

    def served_by(self, provider: Provider) -> bool:
        del provider  # every provider has chat
        return True

    async def complete(self, provider: Provider, upstream_model: str) -> Completion:
        return await provider.complete(self.chat.upstream_call(upstream_model))

    def open_stream(self, provider: Provider, upstream_model: str) -> AsyncGenerator[Delta, None]:
        return provider.stream(self.chat.upstream_call(upstream_model))

    def estimate_usage(self, text: str) -> Usage:
        return Usage(estimate_prompt_tokens(self.chat.messages), estimate_text_tokens(text))

    def reply_body(self, completion: Completion, event_id: str, usage: Usage) -> bytes:
        return reply_body(completion, completion_id(event_id), self.chat.model, usage)

    def relay(self, event_id: str) -> ChunkRelay:
        return ChunkRelay(completion_id(event_id), self.chat.model, self.chat.include_usage)


def parse_chat(body: bytes, settings: GatewaySettings, limits: BodyLimits) -> ChatEndpoint:
    """The chat request of a body; GatewayError naming the parameter at fault."""
    return ChatEndpoint(
        parse_chat_request(
            body,
            max_messages=settings.max_messages,
            max_identifier_chars=settings.max_identifier_chars,
            limits=limits,
        )
    )
