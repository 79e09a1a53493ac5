"""Finding forged records: what `govledger audit verify` reports as kind `forged`.

Three places hold them:

- the dead-letter table: every record a consumer refused because it was not authenticated
  (`forged: …`, `unauthenticated: …`); the worker and the sink both refuse each one, so a
  record is reported once, with every reason given for it;
- the audit tables and the chain links (sinks.links): each stored row's `raw` is checked
  again against its stored `auth` header (a row written into the store by hand, or whose
  bytes changed after the sink stored them, no longer verifies: its producer did not
  make those bytes);
- the checkpoints: each one's Ed25519 signature and the org's certificate of the
  producer's key must hold under the org public keys.

Checking MACs needs the org root (the verifier derives producer keys); checking
checkpoint signatures needs only the org public keys (`govledger audit pubkey`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from replay.stored import Query, quote
from replay.verify import Finding
from schemas import authn, codec
from schemas.authn import Verifier
from schemas.records import ChainCheckpoint
from sinks.tables import CHAINED_TABLES

PAGE_ROWS = 10_000
REFUSED = "(startsWith(error, 'forged:') OR startsWith(error, 'unauthenticated:'))"


def _pages(query: Query, sql: str, keys: str, page_rows: int) -> Iterator[list[Any]]:
    """Rows of `sql` (which ends in its WHERE clause) ordered by `keys`, by offset pages."""
    offset = 0
    while True:
        rows = query(f"{sql} ORDER BY {keys} LIMIT {int(page_rows)} OFFSET {int(offset)}")
        yield from rows
        if len(rows) < page_rows:
            return
        offset += page_rows


def _envelope(payload: bytes) -> tuple[str, int, int | None, str, str]:
    """(producer_id, seq, occurred_at, tenant_id, event_id) a payload claims, as far as it
    decodes."""
    try:
        record = codec.decode(payload)
    except codec.DecodeError:
        try:
            return authn.producer_id_of(payload), 0, None, "", ""
        except codec.DecodeError:
            return "", 0, None, "", ""
    return record.producer_id, record.seq, record.occurred_at, record.tenant_id, record.event_id


def refused_records(query: Query, page_rows: int = PAGE_ROWS) -> list[Finding]:
    """One finding per record consumers dead-lettered as not authenticated."""
    sql = (
        "SELECT origin_topic, consumer, error, hex(payload) FROM dead_letters "  # noqa: S608
        f"WHERE {REFUSED}"
    )
    by_payload: dict[bytes, tuple[bytes, set[str], set[str], set[str]]] = {}
    for topic, consumer, error, payload_hex in _pages(query, sql, "event_id", page_rows):
        payload = bytes.fromhex(str(payload_hex))
        digest = hashlib.sha256(str(topic).encode() + b"\x00" + payload).digest()
        _, errors, consumers, topics = by_payload.setdefault(digest, (payload, set(), set(), set()))
        errors.add(str(error))
        consumers.add(str(consumer))
        topics.add(str(topic))
    findings = []
    for payload, errors, consumers, topics in by_payload.values():
        producer_id, seq, at, tenant_id, event_id = _envelope(payload)
        detail = (
            f"{'; '.join(sorted(errors))} (sent to {', '.join(sorted(topics))}; refused by "
            f"{', '.join(sorted(consumers))}, dead-lettered, applied nowhere)"
        )
        findings.append(
            Finding("forged", producer_id, seq, at, detail, tenant_id, "dead_letters", event_id)
        )
    return findings


def stored_forgeries(
    query: Query,
    verifier: Verifier | None,
    org_public_keys: Mapping[str, bytes],
    *,
    tenant_id: str | None = None,
    page_rows: int = PAGE_ROWS,
) -> list[Finding]:
    """Rows of the audit tables whose stored authentication does not verify, and
    checkpoints whose signature does not hold. Without a verifier (an auditor holding
    only the org public keys), the checkpoints' signatures alone."""
    scope = "1" if tenant_id is None else f"tenant_id = {quote(tenant_id)}"
    findings = []
    for table in CHAINED_TABLES if verifier is not None else ("chain_checkpoints",):
        sql = (
            "SELECT producer_id, seq, toUnixTimestamp64Milli(occurred_at), tenant_id, "  # noqa: S608
            f"toString(event_id), hex(raw), hex(auth) FROM {table} WHERE {scope}"
        )
        keys = "producer_id, seq, cityHash64(raw)"
        for producer_id, seq, at, tenant, event_id, raw_hex, auth_hex in _pages(
            query, sql, keys, page_rows
        ):
            raw = bytes.fromhex(str(raw_hex))
            problem: str | None = None
            try:
                if verifier is not None:
                    verifier.check(None, raw, bytes.fromhex(str(auth_hex)))
                if table == "chain_checkpoints":
                    checkpoint = codec.decode_as(raw, ChainCheckpoint)
                    problem = authn.checkpoint_signature_problem(checkpoint, org_public_keys)
            except codec.DecodeError as exc:
                problem = f"{exc} (stored row)"
            if problem is not None:
                findings.append(
                    Finding(
                        "forged",
                        str(producer_id),
                        int(seq),
                        int(at),
                        problem,
                        str(tenant),
                        table,
                        str(event_id),
                    )
                )
    return findings


def forged_findings(
    query: Query,
    verifier: Verifier | None,
    *,
    tenant_id: str | None = None,
    org_public_keys: Mapping[str, bytes] | None = None,
) -> list[Finding]:
    """Every forged record: refused by consumers, or stored and not authentic. Without a
    verifier, only what the org public keys can check (the checkpoints' signatures)."""
    public = dict(org_public_keys or {})
    if verifier is not None and verifier.keyring is not None:
        public.update(verifier.keyring.org_public_keys())
    refused = refused_records(query)
    if tenant_id is not None:
        refused = [f for f in refused if f.tenant_id in (tenant_id, "")]
    return refused + stored_forgeries(query, verifier, public, tenant_id=tenant_id)


def read_org_keys(text: str) -> dict[str, bytes]:
    """Org public keys by root id from `govledger audit pubkey`'s output; ValueError on a
    line that is not `<root id>\ted25519:<hex>`."""
    keys = {}
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        root_id, key, *_ = [*line.split("\t"), ""]
        if not key.startswith("ed25519:") or len(root_id) != authn.ROOT_ID_HEX:
            raise ValueError(f"not an org public key line: {line!r}")
        keys[root_id] = bytes.fromhex(key.removeprefix("ed25519:"))
    if not keys:
        raise ValueError("no org public key")
    return keys
