"""Record authentication: which producer may change the ledger, proven per record.

One org root secret (32 random bytes, kept 0600 in the data dir or named by
GOVLEDGER_ROOT_SECRET_FILE) registers producers without any registration record: a
producer's key is derived from the root, its role and its producer id,

    producer_key = HKDF-SHA256(root, info = "govledger/producer/v1" 0 role 0 producer_id)

so a verifier holding the root re-derives the key of any (role, producer id) it meets, and
a record whose MAC does not verify under it was not made by a holder of the root. Every
record carries the Kafka header `govledger-auth`:

    v1.<root_key_id>.<role>.<hex HMAC-SHA256(producer_key, record bytes)>

over the record's full single-object bytes. `root_key_id` names the root (16 hex of a
SHA-256 of an HKDF-derived id, never of the secret itself), so the root can rotate: the
keyring file holds every root, oldest first; the newest signs, older ones only verify.

Verification also checks that the role may write the topic and the record type (the
allow-lists below: control records only from the admin API, lineage only from gateways).
A record that fails is refused with a reason the consumers put on the dead letter:
`unauthenticated: no auth header`, `forged: unknown root`, `forged: bad mac`,
`forged: role gateway may not write control`, ...

Checkpoints are also signed with Ed25519 (see `checkpoint_signature`): each producer's
Ed25519 key is derived from the root like its MAC key, and the org key (derived from the
root too) certifies each producer's public key, so an auditor holding only the org public
key (`govledger audit pubkey`) can check them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schemas import codec, notify_records
from schemas import records as rec
from schemas.codec import HashChain
from schemas.records import ChainCheckpoint, Event
from schemas.topics import (
    ALERTS,
    BREAKER_STATE,
    CHECKPOINTS,
    CONTROL,
    DLQ,
    ESCALATIONS,
    LINEAGE,
    NOTIFICATIONS,
    SLA,
    STORED,
    WALLET_STATE,
)

HEADER = "govledger-auth"
VERSION = "v1"
ROOT_FILE = "root.keys"
ROOT_SECRET_BYTES = 32
ROOT_ID_HEX = 16
MAC_HEX = 64
MAX_HEADER_BYTES = 128
KEY_CACHE_ENTRIES = 4_096
RELOAD_EVERY_S = 1.0
"""Least time between two reloads of the keyring file on meeting an unknown root (a root
rotated while this process runs); bounds what a stream of forged root ids costs."""

Role = Literal["gateway", "admin", "processor", "sink"]
ROLES: tuple[Role, ...] = ("gateway", "admin", "processor", "sink")

ROLES_BY_TOPIC: Mapping[str, frozenset[Role]] = {
    LINEAGE.name: frozenset({"gateway"}),
    ESCALATIONS.name: frozenset({"gateway"}),
    CONTROL.name: frozenset({"admin"}),
    WALLET_STATE.name: frozenset({"processor"}),
    BREAKER_STATE.name: frozenset({"processor"}),
    ALERTS.name: frozenset({"processor"}),
    SLA.name: frozenset({"processor"}),
    DLQ.name: frozenset({"processor", "sink"}),
    CHECKPOINTS.name: frozenset(ROLES),
    STORED.name: frozenset({"sink"}),
    NOTIFICATIONS.name: frozenset({"processor"}),
}
"""Which roles may write each topic. A topic not listed takes no record at all."""

_ADMIN: frozenset[Role] = frozenset({"admin"})
_PROCESSOR: frozenset[Role] = frozenset({"processor"})
ROLES_BY_TYPE: Mapping[type[Event], frozenset[Role]] = {
    rec.LineageRecord: frozenset({"gateway"}),
    rec.EscalationOpened: frozenset({"gateway"}),
    rec.KeyIssued: _ADMIN,
    rec.KeyRevoked: _ADMIN,
    rec.WalletFunded: _ADMIN,
    rec.PolicyPackPublished: _ADMIN,
    rec.OrgBaselinePublished: _ADMIN,
    rec.PricePublished: _ADMIN,
    rec.EscalationResolved: _ADMIN,
    rec.EscalationChanged: _ADMIN,
    rec.WalletBudgetSet: _ADMIN,
    rec.WalletAllocated: _ADMIN,
    rec.WalletRefunded: _ADMIN,
    rec.WalletCorrected: _ADMIN,
    rec.WalletLimitSet: _ADMIN,
    rec.WalletBalance: _PROCESSOR,
    rec.BreakerState: _PROCESSOR,
    rec.SlaWindow: _PROCESSOR,
    rec.CircuitChanged: _PROCESSOR,
    rec.QuotaThresholdCrossed: _PROCESSOR,
    rec.SlaBreached: _PROCESSOR,
    rec.EscalationSlaBreached: _PROCESSOR,
    rec.DeadLetter: frozenset({"processor", "sink"}),
    rec.ChainCheckpoint: frozenset(ROLES),
    rec.RecordsStored: frozenset({"sink"}),
    notify_records.NotifyRouteAdded: _ADMIN,
    notify_records.NotifyRouteRemoved: _ADMIN,
    # The sink writes those of the scheduled exports it notifies straight into the store
    # (sinks/notification_rows.py); it may not publish them (ROLES_BY_TOPIC).
    notify_records.NotificationAttempted: frozenset({"processor", "sink"}),
}
"""Which roles may write each record type, whatever the topic."""

ROLE_OF_PREFIX: Mapping[str, Role] = {
    "gateway": "gateway",
    "admin": "admin",
    "streams": "processor",
    "restore": "processor",
    "sink": "sink",
}
"""The role a producer id's prefix names (`new_producer_id(prefix)`), for publishers
not told their role."""


class Forged(codec.DecodeError):
    """A record that is not authenticated as coming from a producer allowed to write it.
    A DecodeError, so every consumer that dead-letters undecodable records refuses it."""


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def root_key_id(secret: bytes) -> str:
    """The public name of a root: 16 hex of SHA-256 of an id derived from it."""
    return hashlib.sha256(_derive(secret, b"govledger/root-id/v1")).hexdigest()[:ROOT_ID_HEX]


def _info(kind: bytes, role: str, producer_id: str) -> bytes:
    return kind + b"\x00" + role.encode() + b"\x00" + producer_id.encode()


def producer_key(secret: bytes, role: str, producer_id: str) -> bytes:
    """A producer's MAC key, from the root, its role and its id."""
    return _derive(secret, _info(b"govledger/producer/v1", role, producer_id))


def org_signing_key(secret: bytes) -> Ed25519PrivateKey:
    """The org's Ed25519 key, which certifies producers' public keys."""
    return Ed25519PrivateKey.from_private_bytes(_derive(secret, b"govledger/org-ed25519/v1"))


def producer_signing_key(secret: bytes, role: str, producer_id: str) -> Ed25519PrivateKey:
    """A producer's Ed25519 key (signs its checkpoints)."""
    seed = _derive(secret, _info(b"govledger/ed25519/v1", role, producer_id))
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def certificate_message(producer_id: str, role: str, public_key: bytes) -> bytes:
    """What the org signs to certify a producer's public key."""
    return _info(b"govledger/cert/v1", role, producer_id) + b"\x00" + public_key


def checkpoint_message(producer_id: str, checkpoint_seq: int, checkpoint_hash: str) -> bytes:
    """What a producer signs in a checkpoint."""
    return b"\x00".join(
        (b"govledger/checkpoint/v1", producer_id.encode(), str(checkpoint_seq).encode(),
         checkpoint_hash.encode())
    )  # fmt: skip


# --- the keyring ----------------------------------------------------------------------


class KeyringError(RuntimeError):
    """The root secret file is missing, unreadable or malformed."""


def _parse_roots(text: str, path: Path) -> list[bytes]:
    roots = []
    for number, written in enumerate(text.splitlines(), 1):
        line = written.strip()
        if not line or line.startswith("#"):
            continue
        try:
            secret = bytes.fromhex(line)
        except ValueError:
            raise KeyringError(f"{path}:{number}: not a hex root secret") from None
        if len(secret) != ROOT_SECRET_BYTES:
            raise KeyringError(f"{path}:{number}: a root secret is {ROOT_SECRET_BYTES} bytes")
        roots.append(secret)
    if not roots:
        raise KeyringError(f"{path}: no root secret")
    return roots


class Keyring:
    """Every org root, oldest first; the newest signs. Reads its file again (at most every
    RELOAD_EVERY_S) when asked for a root it does not know: a root rotated meanwhile."""

    def __init__(self, roots: Iterable[bytes], path: Path | None = None) -> None:
        self.path = path
        self._set(list(roots))
        self._reloaded_at = time.monotonic()
        self._lock = threading.Lock()

    def _set(self, roots: list[bytes]) -> None:
        assert roots, "a keyring holds at least one root"
        self._roots = {root_key_id(secret): secret for secret in roots}
        self.signing_id = root_key_id(roots[-1])

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """The roots kept in a file (one hex secret a line, oldest first)."""
        try:
            return cls(_parse_roots(path.read_text(), path), path)
        except OSError as exc:
            raise KeyringError(f"cannot read the root secret file {path}: {exc}") from exc

    @property
    def ids(self) -> list[str]:
        """Root key ids, oldest first."""
        return list(self._roots)

    @property
    def signing_secret(self) -> bytes:
        """The newest root."""
        return self._roots[self.signing_id]

    def secret(self, root_id: str) -> bytes | None:
        """The root named by an id; None if unknown even after reading the file again."""
        found = self._roots.get(root_id)
        if found is None and self.path is not None:
            with self._lock:
                if time.monotonic() - self._reloaded_at >= RELOAD_EVERY_S:
                    self._reloaded_at = time.monotonic()
                    # On a bad file keep what we have: the unknown id fails closed.
                    with contextlib.suppress(OSError, KeyringError):
                        self._set(_parse_roots(self.path.read_text(), self.path))
            found = self._roots.get(root_id)
        return found

    def org_public_keys(self) -> dict[str, bytes]:
        """Each root's org public key, by root id (what an outside auditor is given)."""
        return {rid: public_bytes(org_signing_key(s)) for rid, s in self._roots.items()}

    def credential(self, role: Role, producer_id: str) -> Credential:
        """A producer's credential under the newest root."""
        assert role in ROLES, f"unknown role {role}"
        secret = self.signing_secret
        return Credential(
            role, producer_id, self.signing_id, producer_key(secret, role, producer_id)
        )

    def checkpoint_signer(self, role: Role, producer_id: str) -> CheckpointSigner:
        """The producer's Ed25519 key and the org's certificate of it, under the newest root."""
        secret = self.signing_secret
        key = producer_signing_key(secret, role, producer_id)
        public = public_bytes(key)
        certificate = org_signing_key(secret).sign(certificate_message(producer_id, role, public))
        return CheckpointSigner(self.signing_id, role, producer_id, key, public, certificate)


def new_root_line() -> str:
    """A fresh root secret as its keyring line."""
    return os.urandom(ROOT_SECRET_BYTES).hex() + "\n"


def keyring_path(data_path: Path, root_secret_file: str) -> Path:
    """Where the keyring is: the configured file, else `root.keys` in the data dir."""
    return Path(root_secret_file).expanduser() if root_secret_file else data_path / ROOT_FILE


def resolve_keyring(data_path: Path, root_secret_file: str, *, create: bool) -> Keyring:
    """The org keyring. Made (0600, one new root) in the data dir at first start when
    `create` and no file was configured; a configured file must exist (fail closed)."""
    path = keyring_path(data_path, root_secret_file)
    if not path.exists() and create and not root_secret_file:
        data_path.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another service made it first
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(new_root_line())
    return Keyring.load(path)


def rotate_root(path: Path) -> str:
    """Append a new root to a keyring file; returns its id. Records and checkpoints under
    older roots still verify; producers sign with the new one from their next start."""
    Keyring.load(path)  # refuse to append to a file that is not a keyring
    line = new_root_line()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    with os.fdopen(fd, "a") as handle:
        handle.write(line)
    return root_key_id(bytes.fromhex(line.strip()))


# --- signing ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credential:
    """What a producer signs its records with."""

    role: Role
    producer_id: str
    root_id: str
    key: bytes

    def header(self, value: bytes) -> bytes:
        """The `govledger-auth` header value for a record's bytes."""
        mac = hmac.digest(self.key, value, "sha256").hex()
        return f"{VERSION}.{self.root_id}.{self.role}.{mac}".encode()

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        """Kafka headers carrying the record's authentication."""
        return [(HEADER, self.header(value))]


@dataclass(frozen=True, slots=True)
class CheckpointSigner:
    """A producer's Ed25519 key with the org's certificate of its public key."""

    root_id: str
    role: Role
    producer_id: str
    key: Ed25519PrivateKey
    public_key: bytes
    certificate: bytes

    def sign(self, record: ChainCheckpoint) -> ChainCheckpoint:
        """The checkpoint with its signature fields filled (before it is sealed)."""
        message = checkpoint_message(
            self.producer_id, record.checkpoint_seq, record.checkpoint_hash
        )
        return replace(
            record,
            signer_root_id=self.root_id,
            signer_role=self.role,
            signer_public_key=self.public_key,
            signer_certificate=self.certificate,
            signature=self.key.sign(message),
        )


def checkpoint_signature_problem(
    record: ChainCheckpoint, org_public_keys: Mapping[str, bytes]
) -> str | None:
    """Why a checkpoint's signature does not hold under the org public keys (by root id),
    or None when it does. Needs no secret: what an outside auditor runs."""
    from cryptography.exceptions import InvalidSignature

    if not record.signature:
        return "checkpoint is not signed"
    org = org_public_keys.get(record.signer_root_id)
    if org is None:
        return f"checkpoint signed under unknown root {record.signer_root_id!r}"
    if record.signer_role not in ROLES:
        return f"checkpoint signed by unknown role {record.signer_role!r}"
    try:
        Ed25519PublicKey.from_public_bytes(org).verify(
            record.signer_certificate,
            certificate_message(record.producer_id, record.signer_role, record.signer_public_key),
        )
    except (InvalidSignature, ValueError):
        return "checkpoint's producer key is not certified by the org"
    try:
        Ed25519PublicKey.from_public_bytes(record.signer_public_key).verify(
            record.signature,
            checkpoint_message(record.producer_id, record.checkpoint_seq, record.checkpoint_hash),
        )
    except (InvalidSignature, ValueError):
        return "checkpoint signature does not verify"
    return None


class SignedChain(HashChain):
    """A hash chain whose records carry this producer's authentication. Without a keyring
    (none installed, none given) its records go unsigned, and every consumer refuses them."""

    def __init__(
        self, producer_id: str, role: Role | None = None, keyring: Keyring | None = None
    ) -> None:
        super().__init__(producer_id)
        self.role: Role = role or role_of(producer_id)
        ring = keyring if keyring is not None else _installed
        self.credential = None if ring is None else ring.credential(self.role, producer_id)
        self.checkpoint_signer = (
            None if ring is None else ring.checkpoint_signer(self.role, producer_id)
        )

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        """Kafka headers for a record this chain sealed."""
        return [] if self.credential is None else self.credential.headers(value)

    def sign_checkpoint(self, record: ChainCheckpoint) -> ChainCheckpoint:
        """The checkpoint signed by this producer (unchanged without a keyring)."""
        return record if self.checkpoint_signer is None else self.checkpoint_signer.sign(record)


def role_of(producer_id: str) -> Role:
    """The role a producer id's prefix names; ValueError for an unknown prefix."""
    prefix = producer_id.split("-", 1)[0]
    role = ROLE_OF_PREFIX.get(prefix)
    if role is None:
        raise ValueError(f"producer id {producer_id!r} names no role; pass one")
    return role


# --- verifying --------------------------------------------------------------------------


producer_id_of = codec.producer_id_of
"""The producer_id of single-object bytes, read from the envelope alone (the codec's)."""


def header_of(headers: Any) -> bytes | None:
    """The `govledger-auth` value among Kafka headers (aiokafka's pairs or Faust's mapping);
    None if absent. More than one is refused as ambiguous."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found = [bytes(value or b"") for key, value in pairs if key == HEADER]
    if len(found) > 1:
        raise Forged("forged: more than one auth header")
    return found[0] if found else None


def _short(topic: str) -> str:
    return topic.removeprefix("govledger.")


class Verifier:
    """Checks records' authentication against a keyring. Each producer's MAC, keyed, is
    kept (up to KEY_CACHE_ENTRIES, then the cache starts again): one HKDF per producer."""

    def __init__(self, keyring: Keyring | None) -> None:
        self.keyring = keyring
        self._macs: dict[tuple[str, str, str], Any] = {}
        # (topic, header prefix, producer id, record type) of records that checked, with
        # their producer's keyed MAC: the sink's hot path (`check_sealed`).
        self._sealed: dict[tuple[str, bytes, str, type[Event]], tuple[Any, str]] = {}

    def _keyed(self, root_id: str, role: str, producer_id: str) -> Any:
        cache_key = (root_id, role, producer_id)
        keyed = self._macs.get(cache_key)
        if keyed is not None:
            return keyed
        secret = None if self.keyring is None else self.keyring.secret(root_id)
        if secret is None:
            raise Forged("forged: unknown root")
        keyed = hmac.new(producer_key(secret, role, producer_id), digestmod=hashlib.sha256)
        # The C object behind hmac.HMAC when OpenSSL provides it: its copy() skips the
        # Python wrapper's (same MAC, a third of the CPU per record).
        keyed = getattr(keyed, "_hmac", None) or keyed
        if len(self._macs) >= KEY_CACHE_ENTRIES:
            self._macs.clear()  # forged ids must not grow it without bound
        self._macs[cache_key] = keyed
        return keyed

    @staticmethod
    def _claim(topic: str | None, header: bytes | None) -> tuple[str, str, str]:
        """(root id, role, mac) of a well-formed header whose role may write the topic."""
        if not header:
            raise Forged("unauthenticated: no auth header")
        if len(header) > MAX_HEADER_BYTES:
            raise Forged("forged: malformed auth header")
        try:
            version, root_id, role, mac = header.decode("ascii").split(".")
        except (UnicodeDecodeError, ValueError):
            raise Forged("forged: malformed auth header") from None
        if version != VERSION or role not in ROLES or len(mac) != MAC_HEX:
            raise Forged("forged: malformed auth header")
        if topic is not None and role not in ROLES_BY_TOPIC.get(topic, frozenset()):
            raise Forged(f"forged: role {role} may not write {_short(topic)}")
        return root_id, role, mac

    def _prove(
        self, claim: tuple[str, str, str], record_type: type[Event], producer_id: str, value: bytes
    ) -> str:
        root_id, role, mac = claim
        if role not in ROLES_BY_TYPE.get(record_type, frozenset()):
            raise Forged(f"forged: role {role} may not write {record_type.event_type_name}")
        keyed = self._keyed(root_id, role, producer_id).copy()
        keyed.update(value)
        if not hmac.compare_digest(keyed.hexdigest(), mac):
            raise Forged("forged: bad mac")
        return role

    def check(self, topic: str | None, value: bytes, header: bytes | None) -> str:
        """The role that wrote the record; Forged with the reason when it is not
        authenticated, or its role may not write this topic (None: any topic) or type."""
        claim = self._claim(topic, header)
        record_type = codec.schema_of(value).record_type
        return self._prove(claim, record_type, producer_id_of(value), value)

    def check_sealed(
        self,
        topic: str,
        value: bytes,
        header: bytes | None,
        entry: codec.SchemaEntry,
        producer_id: str | None = None,
    ) -> str:
        """`check` for the sink's hot loop, given the record's schema (`codec.schema_of`):
        the same MAC over the same bytes, the same refusals with the same reasons, the
        same role returned. What
        does not change between one producer's records is checked once: the header's
        prefix (`v1.<root>.<role>.`, well-formed whatever 64 characters follow it unless
        they hold a dot or are not ASCII, which take the full parse), the role's right to
        the topic and record type, and the producer's keyed MAC. A caller that has read
        the record's producer_id (`codec.envelope_ids_of`) passes it."""
        if header is not None and len(header) > MAC_HEX:
            mac = header[-MAC_HEX:]
            if producer_id is None:
                producer_id = producer_id_of(value)
            seen = (topic, header[:-MAC_HEX], producer_id, entry.record_type)
            known = self._sealed.get(seen)
            if known is not None and mac.isascii() and b"." not in mac:
                keyed = known[0].copy()
                keyed.update(value)
                if not hmac.compare_digest(keyed.hexdigest(), mac.decode()):
                    raise Forged("forged: bad mac")
                return known[1]
        claim = self._claim(topic, header)  # Forged with the reason
        if producer_id is None:
            producer_id = producer_id_of(value)
        self._prove(claim, entry.record_type, producer_id, value)
        if len(self._sealed) >= KEY_CACHE_ENTRIES:
            self._sealed.clear()  # many producers must not grow it without bound
        assert header is not None, "a claim has a header"
        root_id, role, _ = claim
        seen = (topic, header[:-MAC_HEX], producer_id, entry.record_type)
        self._sealed[seen] = (self._keyed(root_id, role, producer_id), role)
        return role

    def decode(self, topic: str | None, value: bytes, headers: Any) -> Event:
        """The record, decoded, once its authentication is checked; DecodeError (Forged for
        authentication) otherwise. Nothing is applied before the check; the bytes are
        decoded first only to read the type and producer id without parsing them twice."""
        claim = self._claim(topic, header_of(headers))
        record = codec.decode(value)
        self._prove(claim, type(record), record.producer_id, value)
        return record

    def decode_message(self, message: Any) -> Event:
        """`decode` for a consumed Kafka message (aiokafka or Faust)."""
        return self.decode(message.topic, message.value or b"", getattr(message, "headers", None))


# --- the process's keyring ----------------------------------------------------------------

_installed: Keyring | None = None
_verifier: Verifier | None = None


def install(keyring: Keyring) -> None:
    """Make this keyring the process's: publishers sign with it, consumers verify."""
    global _installed, _verifier  # noqa: PLW0603 - one keyring per process, set at start
    _installed = keyring
    _verifier = Verifier(keyring)


def installed() -> Keyring | None:
    """The process's keyring, if one was installed."""
    return _installed


def verifier() -> Verifier:
    """The process's verifier. Without a keyring, one that knows no root: every record is
    refused (fail closed)."""
    return _verifier if _verifier is not None else Verifier(None)


def decode_message(message: Any) -> Event:
    """A consumed record, decoded after its authentication is checked by the process's
    verifier; DecodeError (Forged when not authenticated) otherwise."""
    return verifier().decode_message(message)
