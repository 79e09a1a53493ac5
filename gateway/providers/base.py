"""What a provider adapter offers the gateway: one completion, or a stream of deltas."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ChatCall:
    """The normalized request handed to a provider."""

    upstream_model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None
    temperature: float | None
    extra: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the provider reported them."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer."""

    content: str
    finish_reason: str
    usage: Usage | None


@dataclass(frozen=True, slots=True)
class Delta:
    """One piece of a streamed answer; the last carries finish_reason and maybe usage."""

    content: str
    finish_reason: str | None = None
    usage: Usage | None = None


class UpstreamError(Exception):
    """The provider failed: status 0 when no response came back.

    `retry_after_s` is how long the provider asked us to wait (Retry-After on a 429 or
    503), None when it did not say.
    """

    def __init__(
        self, status: int, error_class: str, message: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_class = error_class
        self.retry_after_s = retry_after_s


class Provider(Protocol):
    """A model provider adapter."""

    name: str

    async def complete(self, call: ChatCall) -> Completion:
        """One non-streamed completion."""
        ...

    def stream(self, call: ChatCall) -> AsyncGenerator[Delta, None]:
        """A streamed completion, usage in the last delta when the provider reports it."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
