"""HTTP plumbing shared by the provider adapters: bounded reads, server-sent event
framing, and the one classification of upstream failures into UpstreamError."""

from __future__ import annotations

import codecs
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
import orjson

from gateway.providers.base import UpstreamError

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""Largest non-streamed upstream body read into memory; a chat completion is far smaller."""

DEFAULT_MAX_SSE_EVENT_CHARS = 1024 * 1024
"""Largest server-sent event (or unterminated line) held while a stream is parsed."""

UPSTREAM_POOL = httpx.Limits(
    max_connections=1_024, max_keepalive_connections=512, keepalive_expiry=30.0
)
"""Connections to one upstream: enough to keep a busy gateway's calls on warm connections
(httpx keeps 20 by default, so a burst would reconnect); the gateway's own limit on
concurrent upstream calls is what bounds them."""

ERROR_BODY_BYTES = 4096
"""How much of an error body is read: enough for the provider's message, no more."""

ERROR_EXCERPT_BYTES = 200
INVALID_REQUEST_STATUSES = frozenset({400, 422})
"""How much of an error body goes into the error message (it may reach the caller)."""

# Retry-After is only meaningful on these: RFC 9110 defines it for 503, RFC 6585 for 429,
# and Anthropic's 529 (overloaded) is a 503 under another number.
RETRY_AFTER_STATUSES = frozenset({429, 503, 529})

_LINE_END = re.compile(r"\r\n|\r|\n")


class UpstreamReply(Protocol):
    """An answer whose body is still to be read (httpx.Response has this shape)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Looked up case-insensitively."""
        ...

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The (decoded) body as it arrives; UpstreamError when the transport fails."""
        ...

    async def aclose(self) -> None: ...


class UpstreamClient(Protocol):
    """Sends a provider's requests (gateway/providers/upstream_client.py); transport
    failures raise UpstreamError (`timeout`, `connect`, `transport`)."""

    async def post(self, path: str, body: bytes, *, stream: bool) -> UpstreamReply:
        """POST `body` (JSON) to `path` under the base URL; `stream` asks for events."""
        ...

    async def aclose(self) -> None: ...


def error_kind(status: int) -> str:
    """The error class of an HTTP status the upstream answered with."""
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "http_5xx"
    return "http_4xx"


def classify_transport_error(exc: httpx.HTTPError) -> UpstreamError:
    """An httpx failure with no usable response: timeout, connect, or other transport."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(0, "timeout", f"upstream timed out: {exc}")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError(0, "connect", f"upstream unreachable: {exc}")
    return UpstreamError(0, "transport", f"upstream transport error: {exc}")


def parse_retry_after(headers: Mapping[str, str], *, now_s: float) -> float | None:
    """Seconds the upstream asks us to wait, None when it did not say (or said nonsense).

    Azure sends `retry-after-ms` next to `Retry-After`; the milliseconds are more precise.
    Retry-After is either delay-seconds or an HTTP date. A date is measured against the
    response's own Date header when there is one, so our clock skew does not matter;
    otherwise against `now_s` (Unix seconds).
    """
    millis = _non_negative(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative(value)
    if seconds is not None:
        return seconds
    until = _http_date_s(value)
    if until is None:
        return None
    served_at = _http_date_s(headers.get("date") or "")
    return max(0.0, until - (now_s if served_at is None else served_at))


def _non_negative(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _http_date_s(value: str) -> float | None:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        # RFC 9110 dates are GMT; a zone-less one is malformed and not worth guessing about.
        return None
    return moment.timestamp()


def _invalid_request(status: int, body: bytes) -> dict[str, Any] | None:
    """The OpenAI-shaped error object of a 400 or 422 (the request was invalid), if any."""
    if status not in INVALID_REQUEST_STATUSES:
        return None
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    return error


def status_error(response: UpstreamReply, body: bytes) -> UpstreamError:
    """The UpstreamError for a non-2xx answer, with Retry-After where it means something."""
    status = response.status_code
    retry_after_s = None
    if status in RETRY_AFTER_STATUSES:
        retry_after_s = parse_retry_after(response.headers, now_s=time.time())
    return UpstreamError(
        status,
        error_kind(status),
        f"upstream answered {status}: {body[:ERROR_EXCERPT_BYTES]!r}",
        retry_after_s=retry_after_s,
        invalid=_invalid_request(status, body),
    )


async def read_body(response: UpstreamReply, *, limit: int) -> bytes:
    """The whole (decoded) body of a streamed response; bad_response when over `limit`."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise UpstreamError(
                response.status_code, "bad_response", f"upstream body over {limit} bytes"
            )
        parts.append(chunk)
    return b"".join(parts)


async def fetch_body(
    client: UpstreamClient, path: str, body: bytes, *, limit: int
) -> tuple[int, bytes]:
    """POST a request and read the answer under a limit: (status, body). Non-2xx answers
    and transport failures raise UpstreamError."""
    response = await client.post(path, body, stream=False)
    try:
        if response.status_code >= 400:
            raise status_error(response, await read_error_body(response))
        return response.status_code, await read_body(response, limit=limit)
    finally:
        await response.aclose()


async def read_error_body(response: UpstreamReply) -> bytes:
    """The start of an error body; the rest is left unread (the caller closes the response)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= ERROR_BODY_BYTES:
            break
    return b"".join(parts)[:ERROR_BODY_BYTES]


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event: its `event:` name ("message" when absent) and joined data."""

    event: str
    data: str


async def sse_events(
    response: UpstreamReply, *, max_event_chars: int
) -> AsyncGenerator[SseEvent, None]:
    """Server-sent events as the WHATWG spec frames them, from a streamed response.

    Lines end in LF, CRLF or CR; `data:` lines of one event are joined with LF; comments
    (`:` lines, used as keep-alives) are skipped. An event still open when the body ends
    is dispatched rather than dropped, since some servers omit the last blank line.
    Raises bad_response when one event, or one line, grows past `max_event_chars`.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    event = ""
    data: list[str] = []
    data_chars = 0

    def too_big() -> UpstreamError:
        return UpstreamError(
            response.status_code,
            "bad_response",
            f"upstream sent a server-sent event over {max_event_chars} characters",
        )

    async for chunk in response.aiter_bytes():
        pending += decoder.decode(chunk)
        position = 0
        while (found := _LINE_END.search(pending, position)) is not None:
            if found.group() == "\r" and found.end() == len(pending):
                break  # may be the first half of a CRLF split across chunks
            line = pending[position : found.start()]
            position = found.end()
            if not line:
                if data:
                    yield SseEvent(event or "message", "\n".join(data))
                event, data, data_chars = "", [], 0
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
                data_chars += len(value) + 1
                if data_chars > max_event_chars:
                    raise too_big()
            elif field == "event":
                event = value
        pending = pending[position:]
        if len(pending) > max_event_chars:
            raise too_big()
    # An unterminated last line can only complete the open event if it carries data.
    field, _, value = (pending + decoder.decode(b"", final=True)).rstrip("\r").partition(":")
    if field == "data":
        data.append(value.removeprefix(" "))
    if data:
        yield SseEvent(event or "message", "\n".join(data))
