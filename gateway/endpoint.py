"""What the call pipeline needs of an API it serves: the request adapter of one endpoint
(chat completions, embeddings, legacy completions). The pipeline (gateway/pipeline.py)
authenticates, rate-limits, runs the policy chain, reserves the budget, routes with
fallbacks and records the lineage record the same way for each; the adapter says what
the request is (model, tokens to hold, what the policy chain reads), how a provider is
asked, and what the caller gets back."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol, Self

from gateway.providers.base import Completion, Delta, Provider, Usage
from gateway.replies import ChunkRelay


class Endpoint(Protocol):
    """A validated request to one API, as the pipeline handles it."""

    @property
    def api(self) -> str:
        """The API's name in the lineage record (chat.completions, embeddings, …)."""
        ...

    @property
    def model(self) -> str:
        """The model the caller asked for."""
        ...

    @property
    def user(self) -> str | None:
        """The caller's end user, when it named one."""
        ...

    @property
    def stream(self) -> bool:
        """Whether the reply is streamed."""
        ...

    @property
    def token_ids_in(self) -> str | None:
        """The parameter that holds token ids (which no text step of the policy chain can
        read), None when none does."""
        ...

    def rate_tokens(self) -> int:
        """Tokens the call counts against tokens-per-minute limits."""
        ...

    def reservation_tokens(self, default_completion_tokens: int) -> tuple[int, int]:
        """(prompt, completion) tokens the budget reservation covers, at most."""
        ...

    def policy_messages(self) -> list[dict[str, Any]]:
        """What the policy chain reads and may redact: every text an upstream reads."""
        ...

    def after_policy(
        self, scanned: list[dict[str, Any]], verdict: Sequence[dict[str, Any]]
    ) -> Self:
        """The request as the chain left `scanned` (policy_messages): redacted or not."""
        ...

    def served_by(self, provider: Provider) -> bool:
        """Whether the provider has this API."""
        ...

    async def complete(self, provider: Provider, upstream_model: str) -> Completion:
        """The provider's whole answer; UpstreamError when it failed."""
        ...

    def open_stream(self, provider: Provider, upstream_model: str) -> AsyncGenerator[Delta, None]:
        """The provider's answer as deltas, usage in the last when it reports it."""
        ...

    def estimate_usage(self, text: str) -> Usage:
        """Usage estimated from the request and the answer's text (none reported)."""
        ...

    def reply_body(self, completion: Completion, event_id: str, usage: Usage) -> bytes:
        """The body the caller gets for a whole answer."""
        ...

    def relay(self, event_id: str) -> ChunkRelay:
        """What turns a stream's deltas into the caller's events."""
        ...
