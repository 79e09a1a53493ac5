"""Webhook secrets on the control topic, sealed.

A route's secret (the HMAC key of its signatures, or a PagerDuty routing key) and its full
URL (a Slack or Teams webhook URL is itself a credential) must reach every notifier, and
routes travel as control records, which every process of the org reads and the store
keeps (`raw`, exports). So neither is ever written in the clear: they are sealed with
AES-256-GCM under a key derived from the org root with HKDF, as producer keys are
(schemas.authn),

    notify_key = HKDF-SHA256(root, info = "govledger/notify-secret/v1")
    sealed     = "v1" ‖ root_key_id (16 hex) ‖ nonce (12) ‖ AES-GCM(notify_key, nonce,
                 text, aad = tenant_id 0 route_id)

(the sealed text of a route is the JSON `{"url", "secret"}`: `seal_route` /
`unseal_route`), so only a holder of the root (the admin API that seals it, the notifier
that opens it) reads it, and a sealed secret copied onto another tenant's or route's
record does not open. The root id names which root sealed it: a rotated root still
opens older routes.
"""

from __future__ import annotations

import os

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schemas.authn import ROOT_ID_HEX, Keyring

VERSION = b"v1"
NONCE_BYTES = 12
MAX_SECRET_BYTES = 1024
MAX_SEALED_BYTES = 8192


class SealError(ValueError):
    """A sealed secret that does not open: unknown root, wrong tenant or route, altered."""


def _key(root: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"govledger/notify-secret/v1"
    ).derive(root)


def _aad(tenant_id: str, route_id: str) -> bytes:
    return tenant_id.encode() + b"\x00" + route_id.encode()


def seal(keyring: Keyring, tenant_id: str, route_id: str, secret: str) -> bytes:
    """The secret sealed under the newest root, bound to its tenant and route."""
    data = secret.encode()
    assert len(data) <= MAX_SEALED_BYTES, "secrets and URLs are checked for length first"
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(_key(keyring.signing_secret)).encrypt(nonce, data, _aad(tenant_id, route_id))
    return VERSION + keyring.signing_id.encode() + nonce + sealed


def unseal(keyring: Keyring, tenant_id: str, route_id: str, sealed: bytes) -> str:
    """The secret a route's record carries; SealError when it does not open."""
    head = len(VERSION) + ROOT_ID_HEX
    if sealed[: len(VERSION)] != VERSION or len(sealed) < head + NONCE_BYTES + 16:
        raise SealError("not a sealed secret of this version")
    root = keyring.secret(sealed[len(VERSION) : head].decode("ascii", "replace"))
    if root is None:
        raise SealError("sealed under a root this keyring does not hold")
    nonce, body = sealed[head : head + NONCE_BYTES], sealed[head + NONCE_BYTES :]
    try:
        data = AESGCM(_key(root)).decrypt(nonce, body, _aad(tenant_id, route_id))
    except InvalidTag:
        raise SealError("sealed secret does not open for this tenant and route") from None
    return data.decode()


def seal_route(keyring: Keyring, tenant_id: str, route_id: str, url: str, secret: str) -> bytes:
    """A route's full URL and secret, sealed together."""
    return seal(keyring, tenant_id, route_id, orjson.dumps({"url": url, "secret": secret}).decode())


def unseal_route(keyring: Keyring, tenant_id: str, route_id: str, sealed: bytes) -> tuple[str, str]:
    """The full URL and the secret of a route; SealError when they do not open."""
    try:
        opened = orjson.loads(unseal(keyring, tenant_id, route_id, sealed))
        url, secret = opened["url"], opened["secret"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise SealError("sealed route is not a URL and a secret") from None
    if not isinstance(url, str) or not isinstance(secret, str):
        raise SealError("sealed route is not a URL and a secret")
    return url, secret
