"""Reading an admin request: the JSON body (bounded), its identifiers, names, limits, USD
amounts and short texts, each checked against an allow-list; and the JSON answer. Every
refusal is a GatewayError (400 invalid_request unless said), answered by the guard."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from gateway import errors
from gateway.admin.principals import Principal
from gateway.errors import GatewayError
from schemas.money import usd_to_nanousd

MAX_ADMIN_BODY_BYTES = 64 * 1024
ID_MAX_CHARS = 128
MAX_SCOPE_ITEMS = 64
TEXT_MAX_CHARS = 512


async def read_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (an empty body: {}); 413 past `MAX_ADMIN_BODY_BYTES`."""
    body = await request.content.read(MAX_ADMIN_BODY_BYTES + 1)
    if len(body) > MAX_ADMIN_BODY_BYTES:
        raise GatewayError(errors.BODY_TOO_LARGE, "admin request body too large")
    try:
        data = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise GatewayError(errors.INVALID_JSON, f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GatewayError(errors.INVALID_REQUEST, "body must be a JSON object")
    return data


def identifier(data: Mapping[str, Any], name: str, default: str | None = None) -> str:
    """A tenant, team, key or queue name: a short string without '/'."""
    value = data.get(name, default)
    if not isinstance(value, str) or not value or len(value) > ID_MAX_CHARS or "/" in value:
        raise GatewayError(
            errors.INVALID_REQUEST, f"'{name}' must be a non-empty string without '/'"
        )
    return value


def names(data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """A list of names (or their comma-separated text), at most `MAX_SCOPE_ITEMS`."""
    value = data.get(name, [])
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if (
        not isinstance(value, list)
        or len(value) > MAX_SCOPE_ITEMS
        or not all(isinstance(v, str) and 0 < len(v) <= ID_MAX_CHARS for v in value)
    ):
        raise GatewayError(errors.INVALID_REQUEST, f"'{name}' must be a list of names")
    return tuple(value)


def limit(data: Mapping[str, Any], name: str) -> int:
    """A non-negative whole number (0 when absent)."""
    value = data.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise GatewayError(errors.INVALID_REQUEST, f"'{name}' must be a non-negative integer")
    return value


def short_string(data: Mapping[str, Any], name: str, default: str = "") -> str:
    """An optional short string (absent or empty: `default`)."""
    value = data.get(name) or default
    if not isinstance(value, str) or len(value) > ID_MAX_CHARS:
        raise GatewayError(errors.INVALID_REQUEST, f"'{name}' must be a short string")
    return value


def text(data: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    """A free text, cut at `TEXT_MAX_CHARS`."""
    value = data.get(name, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise GatewayError(errors.INVALID_REQUEST, f"'{name}' must be a non-empty string")
    return value[:TEXT_MAX_CHARS]


def amount(data: Mapping[str, Any], *, sign: int) -> int:
    """The `usd` of a request in nano-USD: positive (sign 1), non-negative (sign 0) or
    signed and non-zero (sign -1)."""
    try:
        nanousd = usd_to_nanousd(data.get("usd", ""))
    except ValueError as exc:
        raise GatewayError(errors.INVALID_REQUEST, str(exc)) from exc
    if sign == 1 and nanousd <= 0:
        raise GatewayError(errors.INVALID_REQUEST, "'usd' must be positive")
    if sign == 0 and nanousd < 0:
        raise GatewayError(errors.INVALID_REQUEST, "'usd' may not be negative")
    if sign == -1 and nanousd == 0:
        raise GatewayError(errors.INVALID_REQUEST, "'usd' may not be 0")
    return nanousd


def acted_on_tenant(principal: Principal, data: Mapping[str, Any], default: str) -> str:
    """The tenant a request acts on: named, or the principal's own, or the default; 403
    for a tenant the principal does not see."""
    tenant = identifier(data, "tenant", principal.tenant_id or default)
    if not principal.sees(tenant):
        raise GatewayError(errors.FORBIDDEN, f"a {principal.role} may not act on {tenant}")
    return tenant
