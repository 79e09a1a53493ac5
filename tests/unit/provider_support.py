"""What the provider adapter tests share: a recorded upstream (an httpx.MockTransport
handler), calls, stream collectors and server-sent event bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from gateway.providers.base import ChatCall, Delta, UpstreamError


def chat_call(
    messages: list[dict[str, Any]] | None = None,
    *,
    model: str = "gpt-4o-mini",
    max_tokens: int | None = None,
    temperature: float | None = None,
    **extra: Any,
) -> ChatCall:
    return ChatCall(
        upstream_model=model,
        messages=messages or [{"role": "user", "content": "What is a ledger?"}],
        max_tokens=max_tokens,
        temperature=temperature,
        extra=extra,
    )


async def collect(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [delta async for delta in stream]


async def collect_until_error(stream: AsyncIterator[Delta]) -> tuple[list[Delta], UpstreamError]:
    """The deltas a stream yielded before it failed, and the failure."""
    seen: list[Delta] = []
    try:
        async for delta in stream:
            seen.append(delta)  # noqa: PERF401 - a comprehension would lose them on the raise
    except UpstreamError as exc:
        return seen, exc
    raise AssertionError("the stream ended without an UpstreamError")


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.content for d in deltas)


async def pieces(
    data: bytes, size: int, fail: type[httpx.HTTPError] | None = None
) -> AsyncIterator[bytes]:
    """A body as the network delivers it: in small pieces, maybe cut off by an error."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
    if fail is not None:
        raise fail("upstream stopped sending")


class Upstream:
    """A recorded upstream: one answer for every request; keeps the requests it saw."""

    def __init__(
        self,
        status: int = 200,
        *,
        json_body: Any = None,
        sse: bytes | None = None,
        headers: dict[str, str] | None = None,
        error: type[httpx.RequestError] | None = None,
        piece_bytes: int | None = None,
        fail_after_body: type[httpx.HTTPError] | None = None,
    ) -> None:
        self.status = status
        self.json_body = json_body
        self.sse = sse
        self.headers = headers or {}
        self.error = error
        self.piece_bytes = piece_bytes
        self.fail_after_body = fail_after_body
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.error is not None:
            raise self.error("upstream did not answer in time", request=request)
        headers = dict(self.headers)
        if self.sse is not None:
            body = self.sse
            headers.setdefault("content-type", "text/event-stream; charset=utf-8")
        else:
            body = json.dumps(self.json_body).encode()
            headers.setdefault("content-type", "application/json")
        if self.piece_bytes is None and self.fail_after_body is None:
            return httpx.Response(self.status, content=body, headers=headers)
        content: AsyncIterator[bytes] = pieces(
            body, self.piece_bytes or len(body), self.fail_after_body
        )
        return httpx.Response(self.status, content=content, headers=headers)

    @property
    def request(self) -> httpx.Request:
        assert len(self.requests) == 1
        return self.requests[0]

    def sent(self) -> dict[str, Any]:
        sent: dict[str, Any] = json.loads(self.request.content)
        return sent


def sse(*events: dict[str, Any], done: bool = True) -> bytes:
    """OpenAI-style server-sent events: `data:` lines only, then [DONE]."""
    body = "".join(f"data: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events)
    return (body + ("data: [DONE]\n\n" if done else "")).encode()


def anthropic_sse(*events: dict[str, Any]) -> bytes:
    """Anthropic's server-sent events: an `event:` line naming the type, then `data:`."""
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
