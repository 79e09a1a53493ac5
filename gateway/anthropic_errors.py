"""Errors as Anthropic's SDKs expect them: `{"type": "error", "error": {"type": ...,
"message": ...}}`, the error type chosen by HTTP status as Anthropic's API reference
lists them. The one place the gateway's errors (OpenAI's shape, gateway.errors) become
Anthropic's: the status and headers are kept, and the gateway's stable code rides along
as `error.code`."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
FALLBACK_TYPE = "api_error"


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status (api_error for any other)."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else FALLBACK_TYPE


def error_object(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """Anthropic's error body for a status and message (and the gateway's code)."""
    error: dict[str, Any] = {"type": error_type(status), "message": message}
    if code:
        error["code"] = code
    return {"type": "error", "error": error}


def _parts(body: bytes) -> tuple[str, str | None]:
    """The message and code of a gateway error body (OpenAI's shape)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")[:500], None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return "the gateway refused the request", None
    message, code = error.get("message"), error.get("code")
    param = error.get("param")
    text = str(message) if message is not None else "the gateway refused the request"
    if isinstance(param, str) and param not in text:
        text = f"{param}: {text}"
    return text, code if isinstance(code, str) else None


def as_anthropic(response: web.StreamResponse) -> web.StreamResponse:
    """The response with its error body (if it has one) in Anthropic's shape; a stream
    under way, or a success, is returned as it is."""
    if response.prepared or response.status < 400 or not isinstance(response, web.Response):
        return response
    body = response.body
    raw = body if isinstance(body, bytes) else b""
    message, code = _parts(raw)
    response.body = orjson.dumps(error_object(response.status, message, code))
    response.content_type = "application/json"
    return response


def error_response(status: int, message: str, code: str | None = None) -> web.Response:
    """An Anthropic-shaped error response."""
    return web.Response(
        status=status,
        body=orjson.dumps(error_object(status, message, code)),
        content_type="application/json",
    )


def error_event(status: int, message: str, code: str | None = None) -> bytes:
    """The `error` event of a Messages stream that failed after it began."""
    data = orjson.dumps(error_object(status, message, code))
    return b"event: error\ndata: " + data + b"\n\n"
