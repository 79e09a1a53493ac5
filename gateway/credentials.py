"""The gateway key a call presents: a bearer token in `Authorization` (OpenAI's SDKs,
Anthropic's `auth_token`) or Anthropic's `x-api-key` header (Anthropic's SDKs and
tools). Ambiguity is refused, never resolved by picking one: two x-api-key headers, or
an x-api-key and a bearer token that name different keys."""

from __future__ import annotations

from multidict import CIMultiDictProxy

from schemas.auth import MalformedCredentialError, authorization_header, bearer_token, check_secret

API_KEY_HEADER = "x-api-key"


def presented_secret(headers: CIMultiDictProxy[str]) -> str:
    """The key the headers present, empty when none; MalformedCredentialError (whose
    message never quotes a secret) when malformed or ambiguous."""
    bearer = bearer_token(authorization_header(headers))
    keys = headers.getall(API_KEY_HEADER, [])
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
