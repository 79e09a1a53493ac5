"""HTTP errors as JSON, the same on every govledger HTTP server (gateway with its admin API,
query API): `{"error": {"message", "type", "code", "param"}}`, OpenAI's shape, with a
stable `code` from the table below or from the service's own table (gateway/errors.py).

Three places answer errors, and each is made to speak JSON here:
- handlers: each service's own table and `error_response`;
- aiohttp's router and body reader (404, 405, 413, bad chunked encoding) and any bug:
  `json_errors`, a middleware every app installs first;
- aiohttp's HTTP parser (malformed request line or header, too many or too large
  headers): these are answered by `RequestHandler.handle_error` before any app code
  runs, in text/plain. `JsonErrorRequestHandler` overrides that one method, and
  `JsonErrorAppRunner` makes the server build it. The override never echoes or logs
  the offending bytes: a header line may be a credential.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from aiohttp import web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from schemas.auth import MalformedCredentialError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """An error code with its HTTP status and OpenAI error type."""

    code: str
    status: int
    type: str


# Errors of HTTP itself, shared by every server (each service's table re-exports them).
MALFORMED_REQUEST = ErrorKind("malformed_request", 400, "invalid_request_error")
MALFORMED_API_KEY = ErrorKind("malformed_api_key", 401, "authentication_error")
NOT_FOUND = ErrorKind("not_found", 404, "invalid_request_error")
METHOD_NOT_ALLOWED = ErrorKind("method_not_allowed", 405, "invalid_request_error")
BODY_TOO_LARGE = ErrorKind("request_too_large", 413, "invalid_request_error")
URI_TOO_LONG = ErrorKind("request_uri_too_long", 414, "invalid_request_error")
UNSUPPORTED_MEDIA_TYPE = ErrorKind("unsupported_media_type", 415, "invalid_request_error")
HEADERS_TOO_LARGE = ErrorKind("request_headers_too_large", 431, "invalid_request_error")
INTERNAL_ERROR = ErrorKind("internal_error", 500, "server_error")
TIMEOUT = ErrorKind("timeout", 504, "server_error")

HTTP_KINDS: tuple[ErrorKind, ...] = (
    MALFORMED_REQUEST,
    MALFORMED_API_KEY,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    BODY_TOO_LARGE,
    URI_TOO_LONG,
    UNSUPPORTED_MEDIA_TYPE,
    HEADERS_TOO_LARGE,
    INTERNAL_ERROR,
    TIMEOUT,
)
# A 404 or 405 names the path it refused, cut to this length (a request line may be long).
ECHOED_PATH_CHARS = 200
_BY_STATUS = {kind.status: kind for kind in HTTP_KINDS if kind is not MALFORMED_API_KEY}
_TYPES = {401: "authentication_error", 402: "insufficient_quota", 403: "permission_error"}
_TYPES.update({429: "rate_limit_error"})


def error_type(status: int) -> str:
    """OpenAI's error type for a status: server_error for 5xx, else by status."""
    if status >= 500:
        return "server_error"
    return _TYPES.get(status, "invalid_request_error")


def error_body(
    message: str, code: str, *, status: int, type_: str | None = None, param: str | None = None
) -> bytes:
    """The JSON error body; `type` from the status unless given."""
    error = {"message": message, "type": type_ or error_type(status), "code": code}
    return orjson.dumps({"error": {**error, "param": param}})


def json_error(
    status: int,
    code: str,
    message: str,
    *,
    type_: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A JSON error response."""
    return web.Response(
        status=status,
        body=error_body(message, code, status=status, type_=type_, param=param),
        content_type="application/json",
        headers=headers,
    )


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response (every JSON answer of our HTTP servers, errors aside, is made here)."""
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def kind_response(kind: ErrorKind, message: str, *, param: str | None = None) -> web.Response:
    """A JSON error response of one of the kinds above."""
    return json_error(kind.status, kind.code, message, type_=kind.type, param=param)


def _http_exception_response(request: web.Request, exc: web.HTTPException) -> web.Response:
    kind = _BY_STATUS.get(exc.status)
    path = (
        request.path
        if len(request.path) <= ECHOED_PATH_CHARS
        else request.path[:ECHOED_PATH_CHARS] + "…"
    )
    if exc.status == 404:
        message = f"no route {request.method} {path}"
    elif exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        message = f"method {request.method} is not allowed on {path}; allowed: {allowed}"
    else:
        message = exc.reason
    code = kind.code if kind is not None else f"http_{exc.status}"
    keep = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
    return json_error(exc.status, code, message, headers=keep or None)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error a handler lets out, as JSON: aiohttp's HTTP exceptions (404, 405, 413,
    …), a malformed credential (401), a malformed body encoding (400) and any bug (500,
    logged; ours, so the message says nothing of it)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # a redirect is not an error
        return _http_exception_response(request, exc)
    except MalformedCredentialError as exc:
        return kind_response(MALFORMED_API_KEY, str(exc))
    except HttpProcessingError as exc:  # the body's framing (chunked, length) is broken
        log.info("malformed request body", path=request.path, error=type(exc).__name__)
        return kind_response(MALFORMED_REQUEST, "the request body is not well-framed HTTP")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error", path=request.path)
        return kind_response(INTERNAL_ERROR, "internal error; see the server's logs")


def parser_error_kind(exc: BaseException | None, status: int, max_line_size: int) -> ErrorKind:
    """The kind of an error aiohttp's parser or request loop reports (see handle_error)."""
    if isinstance(exc, LineTooLong):
        # The parser raises it for the request line (limit max_line_size) and for a header
        # field (limit max_field_size); the limit it names tells which.
        limit = exc.args[1] if len(exc.args) > 1 else None
        return URI_TOO_LONG if limit == max_line_size else HEADERS_TOO_LARGE
    if isinstance(exc, HttpProcessingError):
        if "Too many headers" in (exc.message or ""):
            return HEADERS_TOO_LARGE
        return MALFORMED_REQUEST
    if status == 504:
        return TIMEOUT
    if status >= 500:
        return INTERNAL_ERROR
    return _BY_STATUS.get(status, MALFORMED_REQUEST)


class JsonErrorRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, answering what its parser refuses as JSON.

    `handle_error` is the one place aiohttp turns a parse failure (and an exception that
    escaped every middleware) into a response; it is overridden whole because the base
    class writes text/plain and logs the exception, whose text quotes the offending line.
    """

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A JSON error response; the connection is closed after it, as aiohttp does."""
        kind = parser_error_kind(exc, status, self.max_line_size)
        if kind.status >= 500:
            self.log_exception("Error handling request", exc_info=exc)
        else:
            # Only the exception's class: its text quotes the request's bytes.
            log.info("malformed HTTP request", code=kind.code, error=type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("a response is already under way; cannot send an error")
        text = {
            HEADERS_TOO_LARGE: "request headers too many or too large",
            URI_TOO_LONG: "request line too long",
            MALFORMED_REQUEST: "malformed HTTP request",
        }.get(kind, kind.code.replace("_", " "))
        response = kind_response(kind, text)
        response.force_close()
        return response


class JsonErrorServer(web.Server):
    """aiohttp's low-level server, making `JsonErrorRequestHandler` connections."""

    def __call__(self) -> web_protocol.RequestHandler:
        """A handler for one new connection (the server is asyncio's protocol factory)."""
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorAppRunner(web.AppRunner):
    """`web.AppRunner` whose server answers HTTP parse errors as JSON."""

    def _new_server(self, *args: Any, **kwargs: Any) -> JsonErrorServer:
        """The server (a subclass of JsonErrorServer for a runner that needs one)."""
        return JsonErrorServer(*args, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The same server, made by the subclass: its own (private) loop and handler args.
        return self._new_server(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )


def header_bytes(request: web.BaseRequest) -> int:
    """The size of the request's headers as sent (name, value, separators)."""
    return sum(len(name) + len(value) + 4 for name, value in request.raw_headers)


def handler_args(*, max_header_bytes: int, max_headers: int, max_url_bytes: int) -> dict[str, Any]:
    """aiohttp's parser limits: one header field, header count, request line."""
    # Distinct limits let `parser_error_kind` tell a long request line from a long header.
    if max_url_bytes == max_header_bytes:
        max_url_bytes += 1
    return {
        "max_field_size": max_header_bytes,
        "max_headers": max_headers,
        "max_line_size": max_url_bytes,
    }


def _check_aiohttp() -> None:
    # The override relies on these; fail at import, not on the first malformed request.
    for owner, name in (
        (web_protocol.RequestHandler, "handle_error"),
        (web.AppRunner, "_make_server"),
        (web.Server, "__call__"),
    ):
        if not hasattr(owner, name):
            raise RuntimeError(f"aiohttp changed: {owner.__name__}.{name} is gone")


_check_aiohttp()
