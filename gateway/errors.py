"""The one table of error codes the gateway returns, OpenAI-style."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from schemas import http_errors
from schemas.http_errors import (
    BODY_TOO_LARGE,
    HEADERS_TOO_LARGE,
    INTERNAL_ERROR,
    MALFORMED_API_KEY,
    MALFORMED_REQUEST,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    TIMEOUT,
    UNSUPPORTED_MEDIA_TYPE,
    URI_TOO_LONG,
    ErrorKind,
)

__all__ = [
    "BODY_TOO_LARGE",
    "HEADERS_TOO_LARGE",
    "INTERNAL_ERROR",
    "MALFORMED_API_KEY",
    "MALFORMED_REQUEST",
    "METHOD_NOT_ALLOWED",
    "NOT_FOUND",
    "TIMEOUT",
    "UNSUPPORTED_MEDIA_TYPE",
    "URI_TOO_LONG",
    "ErrorKind",
]

INVALID_JSON = ErrorKind("invalid_json", 400, "invalid_request_error")
INVALID_REQUEST = ErrorKind("invalid_request", 400, "invalid_request_error")
MISSING_API_KEY = ErrorKind("missing_api_key", 401, "authentication_error")
INVALID_API_KEY = ErrorKind("invalid_api_key", 401, "authentication_error")
KEY_REVOKED = ErrorKind("key_revoked", 401, "authentication_error")
KEY_EXPIRED = ErrorKind("key_expired", 401, "authentication_error")
BUDGET_EXHAUSTED = ErrorKind("budget_exhausted", 402, "insufficient_quota")
FORBIDDEN = ErrorKind("forbidden", 403, "permission_error")
MODEL_NOT_ALLOWED = ErrorKind("model_not_allowed", 403, "permission_error")
PROVIDER_NOT_ALLOWED = ErrorKind("provider_not_allowed", 403, "permission_error")
REGION_NOT_ALLOWED = ErrorKind("region_not_allowed", 403, "permission_error")
RATE_LIMITED = ErrorKind("rate_limited", 429, "rate_limit_error")
# Refusals of the policy chain, one code per step outcome.
USER_REQUIRED = ErrorKind("user_required", 400, "invalid_request_error")
ROLE_INSUFFICIENT = ErrorKind("role_insufficient", 403, "permission_error")
PII_BLOCKED = ErrorKind("pii_blocked", 400, "invalid_request_error")
CONTENT_BLOCKED = ErrorKind("content_blocked", 400, "invalid_request_error")
COST_LIMIT_EXCEEDED = ErrorKind("cost_limit_exceeded", 402, "insufficient_quota")
REVIEW_REQUIRED = ErrorKind("review_required", 403, "permission_error")
REVIEW_REJECTED = ErrorKind("review_rejected", 403, "permission_error")
POLICY_UNAVAILABLE = ErrorKind("policy_unavailable", 503, "server_error")
CONFLICT = ErrorKind("conflict", 409, "invalid_request_error")
# An If-Match precondition names a version other than the current one.
PRECONDITION_FAILED = ErrorKind("precondition_failed", 412, "invalid_request_error")
# A transfer (allocation, debit correction) would take its source below its overdraft limit.
TRANSFER_REJECTED = ErrorKind("transfer_rejected", 409, "invalid_request_error")
MODEL_NOT_FOUND = ErrorKind("model_not_found", 404, "invalid_request_error")
# Recorded in lineage only: the caller closed the connection before the answer ended.
CLIENT_CLOSED = ErrorKind("client_closed_request", 499, "client_error")
OVERLOADED = ErrorKind("overloaded", 503, "server_error")
CIRCUIT_OPEN = ErrorKind("circuit_open", 503, "server_error")
LINEAGE_UNAVAILABLE = ErrorKind("lineage_unavailable", 503, "server_error")
UPSTREAM_ERROR = ErrorKind("upstream_error", 502, "upstream_error")
# A tenant pack or key that would weaken the org baseline (gateway/policy/baseline.py).
ORG_POLICY_VIOLATION = ErrorKind("org_policy_violation", 403, "permission_error")
# A pack or baseline that does not lint (the admin API lists the `lines` at fault).
POLICY_INVALID = ErrorKind("policy_invalid", 400, "invalid_request_error")

ALL_KINDS: tuple[ErrorKind, ...] = (
    INVALID_JSON,
    INVALID_REQUEST,
    MISSING_API_KEY,
    INVALID_API_KEY,
    KEY_REVOKED,
    KEY_EXPIRED,
    BUDGET_EXHAUSTED,
    FORBIDDEN,
    MODEL_NOT_ALLOWED,
    PROVIDER_NOT_ALLOWED,
    REGION_NOT_ALLOWED,
    RATE_LIMITED,
    USER_REQUIRED,
    ROLE_INSUFFICIENT,
    PII_BLOCKED,
    CONTENT_BLOCKED,
    COST_LIMIT_EXCEEDED,
    REVIEW_REQUIRED,
    REVIEW_REJECTED,
    POLICY_UNAVAILABLE,
    HEADERS_TOO_LARGE,
    NOT_FOUND,
    CONFLICT,
    TRANSFER_REJECTED,
    MODEL_NOT_FOUND,
    BODY_TOO_LARGE,
    CLIENT_CLOSED,
    OVERLOADED,
    CIRCUIT_OPEN,
    LINEAGE_UNAVAILABLE,
    UPSTREAM_ERROR,
    INTERNAL_ERROR,
    ORG_POLICY_VIOLATION,
    MALFORMED_REQUEST,
    MALFORMED_API_KEY,
    METHOD_NOT_ALLOWED,
    URI_TOO_LONG,
    UNSUPPORTED_MEDIA_TYPE,
    TIMEOUT,
    POLICY_INVALID,
    PRECONDITION_FAILED,
)


class GatewayError(Exception):
    """An expected refusal: the error kind, a message for the caller and, for a request
    field at fault, its name (`param`, as OpenAI names it, e.g. `messages[0].content`);
    `details`: more fields of the error object (the lint `lines` of a pack, the org rules
    it `violations`)."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        param: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.headers = headers or {}
        self.param = param
        self.details = dict(details or {})


def error_body(kind: ErrorKind, message: str, param: str | None = None) -> bytes:
    """The OpenAI-style JSON error body."""
    return http_errors.error_body(
        message, kind.code, status=kind.status, type_=kind.type, param=param
    )


def error_response(
    kind: ErrorKind, message: str, headers: dict[str, str] | None = None, param: str | None = None
) -> web.Response:
    """An OpenAI-style JSON error response."""
    return web.Response(
        status=kind.status,
        body=error_body(kind, message, param),
        content_type="application/json",
        headers=headers,
    )


def refusal_response(exc: GatewayError) -> web.Response:
    """The response to an expected refusal."""
    if not exc.details:
        return error_response(exc.kind, exc.message, exc.headers, exc.param)
    error = orjson.loads(error_body(exc.kind, exc.message, exc.param))["error"]
    return web.Response(
        status=exc.kind.status,
        body=orjson.dumps({"error": {**error, **exc.details}}),
        content_type="application/json",
        headers=exc.headers,
    )
