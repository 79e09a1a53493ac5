"""The built-in `sim` provider: deterministic text and usage, configurable latency,
error rate and chunking. Stands in for upstreams in tests, the demo and benchmarks.

`sim-flaky` is the sim's failover drill: it answers like the other sim models, except that
a call whose messages contain `OUTAGE_MARKER` fails with 503, as a provider in an outage
would. The caller decides per request, so an outage can be staged (and ended) against a
running gateway with default settings: no restart, no setting, and nothing shared with
the other sim models' breakers. The catalogue gives it a built-in fallback to sim-small.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncGenerator

from gateway.providers.base import ChatCall, Completion, Delta, UpstreamError, Usage
from gateway.tokens import estimate_prompt_tokens

_WORDS = (
    "ledger",
    "audit",
    "tenant",
    "budget",
    "model",
    "token",
    "policy",
    "stream",
    "wallet",
    "gateway",
    "trace",
    "balance",
    "quota",
    "latency",
    "provider",
    "region",
    "record",
    "replay",
    "export",
    "breaker",
)

FLAKY_MODEL = "sim-flaky"
OUTAGE_MARKER = "[sim-outage]"


def asks_for_outage(call: ChatCall) -> bool:
    """Whether a call to sim-flaky should fail: some message's text carries the marker."""
    if call.upstream_model != FLAKY_MODEL:
        return False
    for message in call.messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else [content]
        for part in parts:
            text = part.get("text") if isinstance(part, dict) else part
            if isinstance(text, str) and OUTAGE_MARKER in text:
                return True
    return False


class SimProvider:
    """Answers from a hash of the prompt: same prompt, same answer, same usage."""

    name = "sim"

    def __init__(
        self,
        *,
        latency_ms: float,
        error_rate: float,
        chunk_tokens: int,
        completion_tokens: int,
        seed: int = 0,
    ) -> None:
        assert 0.0 <= error_rate <= 1.0, "error_rate is a fraction"
        assert chunk_tokens >= 1 and completion_tokens >= 1, "sim needs at least one token"
        self.latency_ms = latency_ms
        self.error_rate = error_rate
        self.chunk_tokens = chunk_tokens
        self.completion_tokens = completion_tokens
        # Not for security: the error draw only needs to be reproducible.
        self._random = random.Random(seed)  # noqa: S311

    def _words(self, call: ChatCall) -> list[str]:
        digest = hashlib.sha256(repr(call.messages).encode()).digest()
        count = self.completion_tokens
        if call.max_tokens is not None:
            count = max(1, min(count, call.max_tokens))
        return [_WORDS[digest[i % len(digest)] % len(_WORDS)] for i in range(count)]

    @staticmethod
    def _finish_reason(call: ChatCall, words: list[str]) -> str:
        capped = call.max_tokens is not None and len(words) >= call.max_tokens
        return "length" if capped else "stop"

    async def _wait_or_fail(self, call: ChatCall) -> None:
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        if asks_for_outage(call):
            raise UpstreamError(503, "http_5xx", f"sim provider: {FLAKY_MODEL} is down (drill)")
        if self.error_rate and self._random.random() < self.error_rate:
            raise UpstreamError(503, "http_5xx", "sim provider: injected failure")

    async def complete(self, call: ChatCall) -> Completion:
        """One answer after the configured latency."""
        await self._wait_or_fail(call)
        words = self._words(call)
        usage = Usage(estimate_prompt_tokens(call.messages), len(words))
        return Completion(" ".join(words), self._finish_reason(call, words), usage)

    async def stream(self, call: ChatCall) -> AsyncGenerator[Delta, None]:
        """The same answer in chunks of `chunk_tokens` words, usage in the last delta."""
        await self._wait_or_fail(call)
        words = self._words(call)
        for start in range(0, len(words), self.chunk_tokens):
            piece = " ".join(words[start : start + self.chunk_tokens])
            yield Delta(piece if start == 0 else " " + piece)
            await asyncio.sleep(0)
        usage = Usage(estimate_prompt_tokens(call.messages), len(words))
        yield Delta("", self._finish_reason(call, words), usage)

    async def close(self) -> None:
        """Nothing to release."""
