"""What the adapters of OpenAI's other APIs (embeddings, legacy completions) share:
reading the body, the caller's identifiers, OpenAI's input shape (text, token ids, or
arrays of either), and asking a provider that serves the API in OpenAI's shape."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any, TypeGuard

import orjson

from gateway import errors
from gateway.chat_params import BodyLimits, check_shape, is_integer, refuse
from gateway.errors import GatewayError
from gateway.providers.base import ApiCall, ApiProvider, Provider, UpstreamError, Usage
from gateway.providers.base import reported_usage as _reported_usage
from gateway.tokens import estimate_text_tokens


def read_object(body: bytes, limits: BodyLimits) -> dict[str, Any]:
    """The body as a JSON object bounded in shape; GatewayError otherwise."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(errors.INVALID_JSON, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GatewayError(errors.INVALID_REQUEST, "request body must be a JSON object")
    check_shape(data, limits)
    return data


def identifier(data: dict[str, Any], name: str, limit: int, *, required: bool) -> str | None:
    """A non-empty string field of at most `limit` characters (model, user)."""
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise refuse(name, "must be a non-empty string")
    if len(value) > limit:
        raise refuse(name, f"is {len(value)} characters; at most {limit}")
    return value


def _token_ids(value: Any) -> TypeGuard[list[int]]:
    return isinstance(value, list) and bool(value) and all(is_integer(v) and v >= 0 for v in value)


def input_items(data: dict[str, Any], name: str, *, max_items: int) -> list[str | list[int]]:
    """OpenAI's `input`/`prompt`: a non-empty string, an array of token ids, or a
    non-empty array of either; the items, each one a text or a token array."""
    value = data.get(name)
    if isinstance(value, str) and len(value) > 0:
        return [value]
    if _token_ids(value):
        return [value]
    if not isinstance(value, list) or not value:
        raise refuse(name, "must be a non-empty string or array")
    if len(value) > max_items:
        raise refuse(name, f"has {len(value)} items; at most {max_items}")
    for index, item in enumerate(value):
        if not (isinstance(item, str) and item) and not _token_ids(item):
            raise refuse(f"{name}[{index}]", "must be a non-empty string or array of token ids")
    return list(value)


def input_tokens(items: list[str | list[int]]) -> int:
    """Tokens of the items: a token array's length, a text's estimate."""
    return sum(len(i) if isinstance(i, list) else estimate_text_tokens(i) for i in items)


def has_token_ids(items: list[str | list[int]]) -> bool:
    """Whether any item is token ids, which no text step of the policy chain can read."""
    return any(isinstance(item, list) for item in items)


def served_by(provider: Provider) -> bool:
    """Whether a provider serves OpenAI's other APIs in OpenAI's shape."""
    return isinstance(provider, ApiProvider)


def usage_of(data: Mapping[str, Any], status: int = 200) -> Usage | None:
    """The usage a reply (or chunk) reports; bad_response when it is malformed."""
    try:
        return _reported_usage(data.get("usage"))
    except TypeError as exc:
        raise UpstreamError(status, "bad_response", str(exc)) from exc


async def call(provider: Provider, api: str, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The provider's whole reply to a call to `api`."""
    assert isinstance(provider, ApiProvider), "targets are filtered by served_by"
    return await provider.call_api(ApiCall(api, model, body))


async def chunks(
    provider: Provider, api: str, model: str, body: Mapping[str, Any]
) -> AsyncGenerator[dict[str, Any], None]:
    """Each chunk of the provider's streamed reply, closed however the stream ends."""
    assert isinstance(provider, ApiProvider), "targets are filtered by served_by"
    opened = provider.stream_api(ApiCall(api, model, body))
    async with aclosing(opened):
        async for chunk in opened:
            yield chunk


def scanned_fields(body: Mapping[str, Any], not_scanned: frozenset[str]) -> list[dict[str, Any]]:
    """What the policy chain reads of a body passed through whole: one "message" of
    every field but those that hold no text (`not_scanned`)."""
    return [{k: v for k, v in body.items() if k not in not_scanned}]


def body_after_policy(
    body: dict[str, Any], scanned: list[dict[str, Any]], verdict: Sequence[dict[str, Any]]
) -> dict[str, Any] | None:
    """The body with the chain's rewrites (redactions) laid over it; None when the chain
    changed nothing (it hands back the very object it was given)."""
    if verdict[0] is scanned[0]:
        return None
    return {**body, **verdict[0]}
