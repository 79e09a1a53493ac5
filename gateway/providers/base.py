"""What a provider adapter offers the gateway: one completion, or a stream of deltas."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from schemas.pricing import Usage, openai_usage

__all__ = ["Usage"]  # re-exported: adapters build usage from here


@dataclass(frozen=True, slots=True)
class ChatCall:
    """The normalized request handed to a provider."""

    upstream_model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None
    temperature: float | None
    extra: dict[str, Any]
    # The caller's body as sent (OpenAI's shape): what an OpenAI-compatible upstream is
    # given, with `model` and `messages` replaced by the two fields above.
    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer. `content`: the text of every choice (content, refusal, tool-call
    arguments), what the gateway hashes and estimates tokens from; `reply`: the
    provider's whole `chat.completion` object when it speaks OpenAI's shape (then the
    caller gets it as is), None when the adapter translated a text answer."""

    content: str
    finish_reason: str
    usage: Usage | None
    reply: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Delta:
    """One piece of a streamed answer; the last carries finish_reason and maybe usage.
    `chunk`: the provider's whole `chat.completion.chunk` when it speaks OpenAI's shape
    (relayed to the caller as is), None when the adapter translated text."""

    content: str
    finish_reason: str | None = None
    usage: Usage | None = None
    chunk: dict[str, Any] | None = None


def choice_texts(choices: Any, part: str) -> str:
    """The text of OpenAI choices: content, refusal and tool-call arguments of each
    choice's `part` ("message" in a reply, "delta" in a chunk), joined."""
    texts: list[str] = []
    for choice in choices if isinstance(choices, list) else ():
        body = choice.get(part) if isinstance(choice, dict) else None
        if not isinstance(body, dict):
            continue
        texts.extend(body[k] for k in ("content", "refusal") if isinstance(body.get(k), str))
        calls = body.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                texts.append(function["arguments"])
    return "".join(texts)


class UpstreamError(Exception):
    """The provider failed: status 0 when no response came back.

    `retry_after_s` is how long the provider asked us to wait (Retry-After on a 429 or
    503), None when it did not say. `invalid`: the provider's own error object when it
    refused the request as invalid (400, 422: a parameter the gateway does not check).
    """

    def __init__(
        self,
        status: int,
        error_class: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        invalid: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_class = error_class
        self.retry_after_s = retry_after_s
        self.invalid = invalid


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


@dataclass(frozen=True, slots=True)
class ApiCall:
    """A call to one of OpenAI's endpoints besides chat (`api`: "embeddings",
    "completions", the path under the base URL), the caller's body forwarded as sent
    (redacted where the policy chain acted) with the upstream's name of the model."""

    api: str
    upstream_model: str
    body: Mapping[str, Any]


@runtime_checkable
class ApiProvider(Protocol):
    """A provider that serves OpenAI's other endpoints in OpenAI's shape: the reply (each
    chunk of a stream) is handed whole, as the upstream sent it."""

    async def call_api(self, call: ApiCall) -> dict[str, Any]:
        """The upstream's whole reply; UpstreamError as `complete` raises it."""
        ...

    def stream_api(self, call: ApiCall) -> AsyncGenerator[dict[str, Any], None]:
        """Each chunk of a streamed reply, usage asked for (OpenAI's include_usage)."""
        ...


def reported_usage(data: Any) -> Usage | None:
    """OpenAI's usage object as counts; None when absent. Anything but non-negative
    integers is a bad response (TypeError)."""
    if not isinstance(data, dict):
        return None
    return openai_usage(data)
