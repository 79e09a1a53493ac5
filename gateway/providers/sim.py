"""The built-in `sim` provider: deterministic answers and usage in OpenAI's shape
(every choice of `n`, tool calls when given tools, JSON for `response_format`, logprobs
when asked), configurable latency, error rate and chunking. Stands in for upstreams in
tests, the demo and benchmarks.

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
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from gateway.providers import sim_api, sim_responses
from gateway.providers.base import (
    ApiCall,
    ChatCall,
    Completion,
    Delta,
    UpstreamError,
    Usage,
    choice_texts,
)
from gateway.providers.sim_shapes import logprobs, structured_content, tool_call, tool_to_call
from gateway.tokens import estimate_prompt_tokens, estimate_text_tokens

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

SYSTEM_FINGERPRINT = "fp_sim"
FLAKY_MODEL = "sim-flaky"
RESPONSE_CHUNK_CHARS = 16  # characters of text (or arguments) per streamed Responses delta
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

    def _words(self, call: ChatCall, index: int = 0) -> list[str]:
        seen = repr(call.messages) if index == 0 else f"{call.messages!r}#{index}"
        return self._words_of(seen, call.max_tokens)

    def _words_of(self, seen: str, max_tokens: int | None) -> list[str]:
        digest = hashlib.sha256(seen.encode()).digest()
        count = self.completion_tokens
        if max_tokens is not None:
            count = max(1, min(count, max_tokens))
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

    def _answers(self, call: ChatCall) -> list[SimAnswer]:
        """One answer per choice the caller asked for (`n`)."""
        n = call.body.get("n")
        tool = tool_to_call(call.body, call.messages)
        answers = []
        for index in range(n if isinstance(n, int) and n > 1 else 1):
            words = self._words(call, index)
            if tool is not None:
                made = tool_call(tool, words, index)
                count = estimate_text_tokens(made["function"]["arguments"])
                answers.append(SimAnswer([], "tool_calls", count, made))
                continue
            structured = structured_content(call.body, words)
            if structured is not None:
                answers.append(SimAnswer([structured], "stop", estimate_text_tokens(structured)))
                continue
            tokens = [word if i == 0 else " " + word for i, word in enumerate(words)]
            answers.append(SimAnswer(tokens, self._finish_reason(call, words), len(words)))
        return answers

    def _usage(self, call: ChatCall, answers: list[SimAnswer]) -> Usage:
        completion_tokens = sum(a.completion_tokens for a in answers)
        return Usage(estimate_prompt_tokens(call.messages), completion_tokens)

    def _logprobs(self, call: ChatCall, tokens: list[str]) -> dict[str, Any] | None:
        if call.body.get("logprobs") is not True:
            return None
        top = call.body.get("top_logprobs")
        return logprobs(tokens, top if isinstance(top, int) else 0)

    def _envelope(self, call: ChatCall, kind: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-sim",
            "object": kind,
            "created": int(time.time()),
            "model": call.upstream_model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

    async def complete(self, call: ChatCall) -> Completion:
        """One answer per choice after the configured latency, in OpenAI's shape."""
        await self._wait_or_fail(call)
        answers = self._answers(call)
        usage = self._usage(call, answers)
        choices = []
        for index, answer in enumerate(answers):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(answer.tokens) if answer.call is None else None,
                "refusal": None,
            }
            if answer.call is not None:
                message["tool_calls"] = [answer.call]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": self._logprobs(call, answer.tokens),
                    "finish_reason": answer.finish_reason,
                }
            )
        reply = {
            **self._envelope(call, "chat.completion"),
            "choices": choices,
            "usage": usage_object(usage),
        }
        text = "".join(a.text() for a in answers)
        return Completion(text, answers[0].finish_reason, usage, reply)

    async def stream(self, call: ChatCall) -> AsyncGenerator[Delta, None]:
        """The same answers in chunks of `chunk_tokens` words (tool-call arguments in two
        pieces), choice after choice, usage in a last chunk with no choices."""
        await self._wait_or_fail(call)
        answers = self._answers(call)

        def chunk(
            index: int, delta: dict[str, Any], finish: str | None = None, **fields: Any
        ) -> Delta:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            choice.update(fields)
            body = {**self._envelope(call, "chat.completion.chunk"), "choices": [choice]}
            return Delta(choice_texts([choice], "delta"), finish, None, body)

        for index, answer in enumerate(answers):
            yield chunk(index, {"role": "assistant", "content": ""})
            if answer.call is not None:
                arguments = answer.call["function"]["arguments"]
                half = len(arguments) // 2
                opening = {**answer.call, "function": {**answer.call["function"]}}
                opening["function"]["arguments"] = arguments[:half]
                yield chunk(index, {"tool_calls": [{"index": 0, **opening}]})
                rest = {"index": 0, "function": {"arguments": arguments[half:]}}
                yield chunk(index, {"tool_calls": [rest]})
            for start in range(0, len(answer.tokens), self.chunk_tokens):
                tokens = answer.tokens[start : start + self.chunk_tokens]
                yield chunk(
                    index, {"content": "".join(tokens)}, logprobs=self._logprobs(call, tokens)
                )
                await asyncio.sleep(0)
            yield chunk(index, {}, answer.finish_reason)
        usage = self._usage(call, answers)
        body = {**self._envelope(call, "chat.completion.chunk"), "choices": []}
        body["usage"] = usage_object(usage)
        yield Delta("", None, usage, body)

    async def call_api(self, call: ApiCall) -> dict[str, Any]:
        """Embeddings or a legacy text completion (ApiProvider), after the latency."""
        await self._wait_or_fail_api()
        if call.api == "embeddings":
            return sim_api.embeddings_reply(call.body, call.upstream_model)
        if call.api == "completions":
            return sim_api.completion_reply(call.body, call.upstream_model, self._words_of)
        if call.api == "responses":
            return sim_responses.response_reply(call.body, call.upstream_model, self._words_of)
        raise UpstreamError(404, "http_4xx", f"sim provider: no /{call.api} endpoint")

    async def stream_api(self, call: ApiCall) -> AsyncGenerator[dict[str, Any], None]:
        """A legacy text completion in chunks of `chunk_tokens` words, or a Responses API
        stream of events (ApiProvider)."""
        await self._wait_or_fail_api()
        if call.api == "responses":
            chunks = sim_responses.response_events(
                call.body, call.upstream_model, self._words_of, RESPONSE_CHUNK_CHARS
            )
        elif call.api == "completions":
            chunks = sim_api.completion_chunks(
                call.body, call.upstream_model, self._words_of, self.chunk_tokens
            )
        else:
            raise UpstreamError(400, "http_4xx", f"sim provider: /{call.api} does not stream")
        for chunk in chunks:
            yield chunk
            await asyncio.sleep(0)

    async def _wait_or_fail_api(self) -> None:
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        if self.error_rate and self._random.random() < self.error_rate:
            raise UpstreamError(503, "http_5xx", "sim provider: injected failure")

    async def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True, slots=True)
class SimAnswer:
    """One choice of a sim answer: its tokens (text) or the tool call it makes."""

    tokens: list[str]
    finish_reason: str
    completion_tokens: int
    call: dict[str, Any] | None = None

    def text(self) -> str:
        """What the choice says: its text, or its tool call's arguments."""
        return "".join(self.tokens) if self.call is None else self.call["function"]["arguments"]


def usage_object(usage: Usage) -> dict[str, int]:
    """OpenAI's usage object."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }
