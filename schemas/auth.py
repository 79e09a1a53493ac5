"""Reading credentials from request headers, the same way on every HTTP surface.

A presented secret is hostile input: before it is hashed, compared or looked up it must
be printable ASCII without spaces (an allow-list: no control character, no byte outside
ASCII, no undecodable byte, which aiohttp hands over as a lone surrogate) and at most
`MAX_SECRET_CHARS` long. Anything else is `MalformedCredentialError`, which every surface
answers with 401. The secret itself never goes into an error message or a log line.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # aiohttp's header type; multidict comes with aiohttp
    from multidict import CIMultiDictProxy

BEARER = "bearer"
# Our keys (gk_ + 43) and admin tokens (adm_ + 43) are under 50 characters; a configured
# admin token may be longer. No secret we accept can be longer than this, so a longer one
# is refused by its form: this is a format rule, not a capacity knob.
MAX_SECRET_CHARS = 512
# Visible ASCII (RFC 9110 VCHAR), the characters of RFC 6750's b64token and more.
_SECRET = re.compile(r"[\x21-\x7e]+")


class MalformedCredentialError(ValueError):
    """A presented credential is not well-formed. Its text is never part of the message."""


def new_key_secret() -> str:
    """A gateway key secret (gk_ + 43 URL-safe characters); shown once, stored only as
    `key_sha256`."""
    return "gk_" + secrets.token_urlsafe(32)


def key_sha256(secret: str) -> str:
    """The stored form of a key secret: what a key record carries and the views look a
    presented secret up by."""
    return hashlib.sha256(secret.encode()).hexdigest()


def check_secret(secret: str) -> str:
    """The secret if it is well-formed; MalformedCredentialError naming what is wrong."""
    if len(secret) > MAX_SECRET_CHARS:
        raise MalformedCredentialError(
            f"the credential is {len(secret)} characters; at most {MAX_SECRET_CHARS}"
        )
    if not _SECRET.fullmatch(secret):
        raise MalformedCredentialError(
            "the credential must be printable ASCII without spaces or control characters"
        )
    return secret


def authorization_header(headers: CIMultiDictProxy[str]) -> str | None:
    """The request's one Authorization header, None without one. Two are ambiguous (a
    proxy may read one and us the other): MalformedCredentialError."""
    values = headers.getall("Authorization", [])
    if len(values) > 1:
        raise MalformedCredentialError(f"{len(values)} Authorization headers; at most one")
    return values[0] if values else None


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer …` header (scheme matched case-insensitively,
    RFC 9110); empty if there is no header or it names another scheme, which a caller may
    then read itself. MalformedCredentialError when the Bearer token is empty or not
    well-formed (see `check_secret`)."""
    if not authorization:
        return ""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != BEARER:
        return ""
    token = token.strip(" \t")
    if not token:
        raise MalformedCredentialError("the Bearer credential is empty")
    return check_secret(token)
