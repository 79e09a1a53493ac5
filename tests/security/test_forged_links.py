"""Chain links cannot hide tampering (issue 13): `chain_links` keeps the sealed bytes of
duplicates the sink dropped, and `audit verify` lets a link close a gap in its chain. So
an attacker who can write to the store tries to close a gap they made with a link of
their own. Each attempt is still a finding: a link whose bytes do not hash to its
record_hash (`modified`, and `forged`: its auth does not verify), a sound record moved out
of its table into the links (`deleted`: a link copies a record that must be stored), and a
link sealed correctly but without the producer's key (`forged`). chDB in-process, no
broker: the store is what is attacked."""

from __future__ import annotations

import dataclasses
import hmac
import os
from collections.abc import Iterator

import pytest

from replay.forged import forged_findings
from replay.verify import verify_store
from schemas import authn, codec
from schemas.codec import HashChain
from schemas.ids import uuid7
from schemas.records import Event, LineageRecord
from schemas.topics import LINEAGE
from sinks.links import LINK_COLUMNS, DroppedCopy, link_row
from sinks.store import Store
from tests.integration.links_support import (
    KEYRING,
    batch,
    message,
    migrated_store,
    query,
    sink_writer,
)
from tests.unit import builders


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    yield from migrated_store(tmp_path_factory.mktemp("chdb"))


async def stored_chain(store: Store, producer_id: str, calls: int) -> list[LineageRecord]:
    """A gateway's calls, signed and stored by the sink; the sealed records."""
    chain = HashChain(producer_id)
    records = [chain.seal(builders.call(event_id=uuid7(), tenant_id="links")) for _ in range(calls)]
    messages = [message(r, n, topic=LINEAGE.name) for n, r in enumerate(records)]
    await sink_writer(store).write(batch(*messages, topic=LINEAGE.name))
    return records


def hand_insert_link(store: Store, value: bytes, auth: bytes) -> None:
    """What an attacker with write access to the store does: a row into chain_links."""
    built = link_row(DroppedCopy(LINEAGE.name, "lineage", value, auth))
    assert built is not None
    store.insert_rows("chain_links", [built[1]], LINK_COLUMNS)


def delete_row(store: Store, record: Event) -> None:
    store.command(f"DELETE FROM lineage WHERE event_id = '{record.event_id}'")


def forged_mac(value: bytes) -> bytes:
    """A well-formed auth header made without the org root."""
    header = KEYRING.credential("gateway", "x").headers(value)[0][1].decode()
    version, root_id, role, _ = header.split(".")
    return (
        f"{version}.{root_id}.{role}.{hmac.digest(os.urandom(32), value, 'sha256').hex()}".encode()
    )


def findings(store: Store) -> set[tuple[str, str, int]]:
    report = verify_store(query(store))
    found = report.findings + forged_findings(query(store), authn.Verifier(KEYRING))
    return {(f.kind, f.producer_id, f.seq) for f in found}


async def test_a_clean_store_with_a_genuine_link_has_no_finding(store: Store) -> None:
    records = await stored_chain(store, "gateway-genuine", 2)
    # The sink's own link: another producer's copy of a stored call (same event id).
    copy = HashChain("gateway-genuine-copy").seal(records[0])
    value = codec.encode(copy)
    hand_insert_link(
        store, value, KEYRING.credential("gateway", copy.producer_id).headers(value)[0][1]
    )
    assert findings(store) == set()


async def test_a_link_with_altered_bytes_closing_a_deleted_record_is_found(store: Store) -> None:
    records = await stored_chain(store, "gateway-altered", 3)
    delete_row(store, records[1])
    # The deleted call, cheaper, with the successor's prev_hash kept as its record_hash.
    altered = dataclasses.replace(records[1], cost_nanousd=1)
    value = codec.encode(altered)
    hand_insert_link(
        store,
        value,
        KEYRING.credential("gateway", altered.producer_id).headers(codec.encode(records[1]))[0][1],
    )
    found = findings(store)
    assert ("modified", "gateway-altered", 2) in found  # its hash
    assert ("forged", "gateway-altered", 2) in found  # its auth is for other bytes
    assert ("deleted", "gateway-altered", 2) in found  # the record it copies is gone


async def test_a_record_moved_from_its_table_into_the_links_is_found(store: Store) -> None:
    records = await stored_chain(store, "gateway-moved", 3)
    value = codec.encode(records[1])
    auth = KEYRING.credential("gateway", records[1].producer_id).headers(value)[0][1]
    delete_row(store, records[1])
    hand_insert_link(store, value, auth)  # authentic bytes, authentic auth: only moved
    assert {f for f in findings(store) if f[1] == "gateway-moved"} == {
        ("deleted", "gateway-moved", 2)
    }


async def test_a_link_sealed_without_the_producers_key_is_found(store: Store) -> None:
    records = await stored_chain(store, "gateway-sealed", 2)
    # Sealed as the chain's next record (hash and link sound), copying a stored call's id,
    # but its MAC is not the producer's.
    chain = HashChain("gateway-sealed")
    for record in records:
        chain.seal(record)
    appended = chain.seal(dataclasses.replace(records[0], cost_nanousd=0))
    value = codec.encode(appended)
    hand_insert_link(store, value, forged_mac(value))
    assert {f for f in findings(store) if f[1] == "gateway-sealed"} == {
        ("forged", "gateway-sealed", 3)
    }
