"""The gateway key a call presents: a bearer token in `Authorization` (OpenAI's SDKs,
Anthropic's `auth_token`) or, on Anthropic's routes, the `x-api-key` header (Anthropic's
SDKs and tools; elsewhere it is a header like any other, never read nor forwarded).
Ambiguity is refused, never resolved by picking one: two x-api-key headers, or an
x-api-key and a bearer token that name different keys."""

from __future__ import annotations

from multidict import CIMultiDictProxy

from gateway.anthropic_shape import COUNT_TOKENS_PATH, MESSAGES_PATH
from schemas.auth import MalformedCredentialError, authorization_header, bearer_token, check_secret

API_KEY_HEADER = "x-api-key"
API_KEY_PATHS = frozenset({MESSAGES_PATH, COUNT_TOKENS_PATH})


def presented_secret(headers: CIMultiDictProxy[str], path: str) -> str:
    """The key the headers of a call to `path` present, empty when none;
    MalformedCredentialError (whose message never quotes a secret) when malformed or
    ambiguous."""
    bearer = bearer_token(authorization_header(headers))
    keys = headers.getall(API_KEY_HEADER, []) if path in API_KEY_PATHS else []
    if not keys:
        return bearer
    if len(keys) > 1:
        raise MalformedCredentialError(f"{len(keys)} {API_KEY_HEADER} headers; at most one")
    key = keys[0].strip(" \t")
    if not key:
        raise MalformedCredentialError(f"the {API_KEY_HEADER} credential is empty")
    key = check_secret(key)
    if bearer and bearer != key:
        raise MalformedCredentialError(
            f"{API_KEY_HEADER} and Authorization name different keys; send one"
        )
    return key
