"""The HTTP layer of the sink's query service, one place for what every route shares: the
credential a request presents (`presented_token`), the guard that turns it into a `Reader`
before a handler runs, JSON responses, and the one mapping of the service's errors to
JSON (`error_response`). The JSON error shape and the middleware for aiohttp's own errors
are `schemas/http_errors.py`, shared with the gateway."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

from aiohttp import web

from schemas.access_log import note_caller
from schemas.auth import authorization_header, bearer_token
from schemas.durations import parse_duration_ms
from schemas.http_errors import json_error, json_response
from sinks.access import AccessDeniedError, Authenticate, Reader

__all__ = [
    "BadRequestError",
    "Guard",
    "Handler",
    "error_response",
    "guard",
    "json_response",
    "presented_token",
    "window_ms",
]

MAX_WINDOW_MS = 3_650 * 86_400_000

# A route's handler, given the authenticated reader; and the guard that wraps it.
Handler = Callable[[web.Request, Reader], Awaitable[web.StreamResponse]]
Guard = Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]


class BadRequestError(Exception):
    """A parameter is malformed (400) or names what the reader may not see (403)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def presented_token(request: web.Request) -> str:
    """The secret a request presents: a bearer token, the password of Basic auth (as
    clickhouse-connect sends it), `X-ClickHouse-Key`, or `?password=`; empty if none."""
    header = authorization_header(request.headers) or ""  # two: 401, by json_errors
    if token := bearer_token(header):
        return token
    if header.startswith("Basic "):
        try:
            _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return ""
        return password
    return request.headers.get("X-ClickHouse-Key", "") or request.query.get("password", "")


def error_response(exc: AccessDeniedError | BadRequestError) -> web.Response:
    """The JSON answer to an error of the service (the one error shape of every HTTP
    server of ours, schemas.http_errors)."""
    return json_error(exc.status, exc.code, exc.message)


def guard(authenticate: Authenticate) -> Guard:
    """Wrap handlers so each runs with the reader the presented secret resolves to; a
    refused secret or a bad request answers JSON from `error_response`."""

    def wrap(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            presented = presented_token(request)
            try:
                if not presented.isascii():
                    raise AccessDeniedError(401, "invalid_api_key", "admin key required")
                reader = authenticate(presented)
                note_caller(request, reader.tenant_id)
                return await handler(request, reader)
            except (AccessDeniedError, BadRequestError) as exc:
                return error_response(exc)

        return guarded

    return wrap


def window_ms(text: str) -> int:
    """A report or export window ('30d', '12h', '30m', '45s') in milliseconds, at most ten
    years; a 400 for anything `schemas.durations` refuses."""
    try:
        return min(parse_duration_ms(text), MAX_WINDOW_MS)
    except ValueError as exc:
        raise BadRequestError(400, "invalid_request", str(exc)) from None
