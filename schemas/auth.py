"""Reading credentials from request headers, the same way on every HTTP surface."""

from __future__ import annotations

BEARER = "Bearer "


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer …` header; empty if there is none."""
    if not authorization or not authorization.startswith(BEARER):
        return ""
    return authorization[len(BEARER) :].strip()
