"""Verification of hash chains: each kind of tampering is found at its producer and seq;
a clean chain gives no finding."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from replay.stored import StoredRow
from replay.verify import (
    Finding,
    KnownHead,
    check_heads,
    heads_of_manifest,
    seq_ranges,
    unexplained,
    unseal,
    verify_rows,
)
from schemas import codec
from schemas.codec import HashChain
from schemas.ids import uuid7
from schemas.publisher import ChainedPublisher, checkpoint_of
from schemas.records import ChainCheckpoint, Event, LineageRecord
from streams.checkpoints import Checkpoints
from tests.unit import builders

PRODUCER = "gateway-eu1-0a1b2c"


def _checkpoint(chain: HashChain) -> ChainCheckpoint:
    return dataclasses.replace(checkpoint_of(chain, "records"), occurred_at=builders.T0)


def _chain(
    records: int = 10, checkpoint_after: tuple[int, ...] = (), producer: str = PRODUCER
) -> tuple[HashChain, list[StoredRow]]:
    """Rows of one producer: calls, with a checkpoint after the given counts of calls."""
    chain = HashChain(producer)
    rows = []
    for n in range(1, records + 1):
        call = builders.call(event_id=uuid7(), occurred_at=builders.T0 + n * 1000)
        rows.append(_row(chain.seal(call)))
        if n in checkpoint_after:
            rows.append(_row(chain.seal(_checkpoint(chain))))
    return chain, rows


def _row(record: Event, seq: int | None = None) -> StoredRow:
    table = "chain_checkpoints" if isinstance(record, ChainCheckpoint) else "lineage"
    return StoredRow(
        table, record.producer_id, record.seq if seq is None else seq, codec.encode(record)
    )


def _stored(rows: list[StoredRow]) -> list[StoredRow]:
    """As the store returns them: by (producer_id, seq column)."""
    return sorted(rows, key=lambda r: (r.producer_id, r.seq))


def _found(findings: list[Finding]) -> list[tuple[str, str, int]]:
    return [(f.kind, f.producer_id, f.seq) for f in findings]


def test_a_clean_chain_gives_no_finding() -> None:
    _, rows = _chain(10, checkpoint_after=(5, 10))
    report = verify_rows(rows)
    assert report.findings == []
    assert (report.producers, report.records, report.checkpoints) == (1, 12, 2)
    assert report.open_chains == 0
    assert report.clean


def test_a_chain_without_a_final_checkpoint_is_open_not_tampered() -> None:
    _, rows = _chain(3)
    report = verify_rows(rows)
    assert report.findings == [] and report.open_chains == 1


def test_hashing_the_stored_bytes_matches_the_codec() -> None:
    _, rows = _chain(3)
    for row in rows:
        sealed = unseal(row)
        assert sealed.valid
        assert sealed.record_hash == codec.compute_record_hash(codec.decode(row.raw))


def test_every_record_type_verifies_from_its_bytes() -> None:
    chain = HashChain(PRODUCER)
    records = [r for r in builders.one_of_each() if not isinstance(r, ChainCheckpoint)]
    rows = [_row(chain.seal(record)) for record in records]
    rows.append(_row(chain.seal(_checkpoint(chain))))
    assert verify_rows(_stored(rows)).findings == []


def test_one_changed_byte_of_a_body_is_a_modified_record() -> None:
    _, rows = _chain(10)
    raw = bytearray(rows[4].raw)
    raw[-3] ^= 0x01  # past the envelope: the call's own fields
    rows[4] = dataclasses.replace(rows[4], raw=bytes(raw))
    findings = verify_rows(rows).findings
    assert _found(findings) == [("modified", PRODUCER, 5)]
    assert findings[0].table == "lineage" and findings[0].event_id
    assert findings[0].time == "2025-03-03T14:02:05.000Z"


def test_a_record_changed_and_re_sealed_breaks_the_link_to_its_successor() -> None:
    _, rows = _chain(10)
    original = codec.decode(rows[4].raw)
    forged = dataclasses.replace(original, cost_nanousd=1, record_hash="")  # type: ignore[call-arg]
    forged = dataclasses.replace(forged, record_hash=codec.compute_record_hash(forged))
    rows[4] = _row(forged)
    assert _found(verify_rows(rows).findings) == [("modified", PRODUCER, 5)]


def test_a_deleted_record_is_reported_at_its_seq_with_the_time_before_it() -> None:
    _, rows = _chain(10)
    del rows[4]
    findings = verify_rows(rows).findings
    assert _found(findings) == [("deleted", PRODUCER, 5)]
    assert findings[0].occurred_at == builders.T0 + 4_000


def test_deleted_records_at_the_head_of_a_chain_are_found() -> None:
    _, rows = _chain(5)
    assert _found(verify_rows(rows[2:]).findings) == [("deleted", PRODUCER, 1)]


def test_two_swapped_records_are_reordered() -> None:
    _, rows = _chain(10)
    rows[3], rows[4] = dataclasses.replace(rows[3], seq=5), dataclasses.replace(rows[4], seq=4)
    findings = verify_rows(_stored(rows)).findings
    assert _found(findings) == [("reordered", PRODUCER, 4), ("reordered", PRODUCER, 5)]


def test_records_met_out_of_order_are_reordered() -> None:
    _, rows = _chain(10)
    rows[3], rows[4] = rows[4], rows[3]
    assert _found(verify_rows(rows).findings) == [("reordered", PRODUCER, 4)]


def test_a_forged_record_inserted_at_a_taken_seq_is_inserted() -> None:
    _, rows = _chain(10)
    # The forger knows the format: a well-sealed call linked to seq 4, numbered 5.
    forger = HashChain(PRODUCER)
    forger.seq, forger.head = 4, unseal(rows[3]).record_hash
    forged = forger.seal(builders.call(event_id=uuid7(), cost_nanousd=1))
    rows.insert(5, _row(forged))
    findings = verify_rows(_stored(rows)).findings
    assert _found(findings) == [("inserted", PRODUCER, 5)]
    assert findings[0].event_id == forged.event_id


def test_a_forged_record_replacing_the_next_seqs_is_found() -> None:
    _, rows = _chain(10)
    forger = HashChain(PRODUCER)
    forger.seq, forger.head = 10, "ab" * 32  # appended, but not linked to the real head
    rows.append(_row(forger.seal(builders.call(event_id=uuid7()))))
    assert _found(verify_rows(rows).findings) == [("modified", PRODUCER, 10)]


def test_a_tail_truncated_past_a_checkpoint_is_truncated() -> None:
    _, rows = _chain(10, checkpoint_after=(10,))
    # Seqs 8-10 go; the checkpoint (seq 11, in its own table) vouches for seq 10.
    kept = [r for r in rows if not 8 <= r.seq <= 10]
    findings = verify_rows(kept).findings
    assert _found(findings) == [("truncated", PRODUCER, 8)]
    assert "up to 10" in findings[0].detail


def test_a_gap_before_an_ordinary_record_is_deleted_not_truncated() -> None:
    _, rows = _chain(10, checkpoint_after=(5,))
    kept = [r for r in rows if r.seq not in (4, 5)]  # seq 6 is the checkpoint of seq 5
    assert _found(verify_rows(kept).findings) == [("truncated", PRODUCER, 4)]
    kept = [r for r in rows if r.seq not in (8, 9)]
    assert _found(verify_rows(kept).findings) == [("deleted", PRODUCER, 8)]


def test_seqs_retention_deleted_are_counted_not_reported() -> None:
    _, rows = _chain(10, checkpoint_after=(10,))
    kept = [r for r in rows if not 2 <= r.seq <= 6]
    report = verify_rows(kept, expired={PRODUCER: seq_ranges([2, 3, 4, 5, 6])})
    assert report.clean and report.expired == 5
    assert "5 records deleted by retention" in report.summary()


def test_a_gap_retention_covers_only_in_part_reports_the_rest() -> None:
    _, rows = _chain(10, checkpoint_after=(10,))
    kept = [r for r in rows if not 2 <= r.seq <= 6 and r.seq not in (9, 10)]
    # Retention took 2, 3 and 5; 4 and 6 went some other way, and so did the tail 9-10.
    report = verify_rows(kept, expired={PRODUCER: seq_ranges([2, 3, 5])})
    assert _found(report.findings) == [
        ("deleted", PRODUCER, 4),
        ("deleted", PRODUCER, 6),
        ("truncated", PRODUCER, 9),
    ]
    assert report.expired == 3


def test_retention_cuts_of_another_producer_explain_nothing() -> None:
    _, rows = _chain(10)
    del rows[4]
    report = verify_rows(rows, expired={"gateway-other": seq_ranges([5])})
    assert _found(report.findings) == [("deleted", PRODUCER, 5)]


@pytest.mark.parametrize(
    ("first", "last", "expired", "answer"),
    [
        (1, 5, [], (0, [(1, 5)])),
        (1, 5, [(1, 5)], (5, [])),
        (3, 4, [(1, 10)], (2, [])),
        (1, 10, [(2, 3), (5, 5), (9, 12)], (5, [(1, 1), (4, 4), (6, 8)])),
        (5, 6, [(1, 2), (8, 9)], (0, [(5, 6)])),
    ],
)
def test_unexplained_splits_a_gap_around_the_expired_ranges(
    first: int, last: int, expired: list[tuple[int, int]], answer: tuple[int, Any]
) -> None:
    assert unexplained(first, last, expired) == answer


def _lookup(rows: list[StoredRow]) -> Any:
    return lambda producer, seq: [r for r in rows if (r.producer_id, r.seq) == (producer, seq)]


def _resealed_from(rows: list[StoredRow], seq: int) -> list[StoredRow]:
    """The chain re-sealed from `seq` on with a changed cost: every link and checkpoint
    consistent again, as a forger who knows the format would leave it."""
    chain = HashChain(PRODUCER)
    chain.seq, chain.head = seq - 1, unseal(rows[seq - 2]).record_hash
    forged = rows[: seq - 1]
    for row in rows[seq - 1 :]:
        record = codec.decode(row.raw)
        if isinstance(record, ChainCheckpoint):
            record = _checkpoint(chain)
        elif record.seq == seq:
            assert isinstance(record, LineageRecord)  # the forger changes a call's cost
            record = dataclasses.replace(record, cost_nanousd=1)
        forged.append(_row(chain.seal(record)))
    return forged


def test_a_chain_re_sealed_after_an_export_passes_the_walk_but_not_its_kept_head() -> None:
    _, rows = _chain(10, checkpoint_after=(10,))
    kept = KnownHead(PRODUCER, 10, unseal(rows[9]).record_hash, "manifest.json")
    forged = _resealed_from(rows, 4)
    assert verify_rows(forged).clean  # the walk alone cannot tell
    findings = check_heads([kept], _lookup(forged))
    assert _found(findings) == [("modified", PRODUCER, 10)]
    assert "manifest.json" in findings[0].detail and "re-sealed" in findings[0].detail
    assert check_heads([kept], _lookup(rows)) == []


def test_a_kept_head_missing_from_the_store_is_deleted_unless_retention_took_it() -> None:
    _, rows = _chain(10)
    kept = KnownHead(PRODUCER, 10, unseal(rows[9]).record_hash, "manifest.json")
    assert _found(check_heads([kept], _lookup(rows[:9]))) == [("deleted", PRODUCER, 10)]
    assert check_heads([kept], _lookup(rows[:9]), {PRODUCER: [(10, 10)]}) == []


def test_heads_are_read_from_an_export_manifest() -> None:
    manifest = {
        "chain_heads": [
            {"producer_id": PRODUCER, "first_seq": 1, "last_seq": 7, "record_hash": "ab", "rows": 7}
        ]
    }
    assert heads_of_manifest(manifest, "m.json") == [KnownHead(PRODUCER, 7, "ab", "m.json")]
    with pytest.raises(ValueError, match="not an export manifest"):
        heads_of_manifest({"rows": 3}, "m.json")
    with pytest.raises(ValueError, match="not an export manifest"):
        heads_of_manifest({"chain_heads": [{"producer_id": PRODUCER}]}, "m.json")


def test_a_checkpoint_whose_head_was_changed_is_modified() -> None:
    chain, rows = _chain(4)
    bad = dataclasses.replace(_checkpoint(chain), checkpoint_hash="cd" * 32)
    rows.append(_row(chain.seal(bad)))
    assert _found(verify_rows(rows).findings) == [("modified", PRODUCER, 5)]


def test_the_same_record_stored_twice_is_a_duplicate() -> None:
    _, rows = _chain(5)
    rows.insert(2, rows[2])
    assert _found(verify_rows(rows).findings) == [("duplicate", PRODUCER, 3)]


def test_bytes_that_are_not_a_record_are_modified() -> None:
    _, rows = _chain(5)
    rows[2] = dataclasses.replace(rows[2], raw=b"\xc3\x01garbage")
    kinds = _found(verify_rows(rows).findings)
    assert ("modified", PRODUCER, 3) in kinds


def test_chains_are_independent_and_a_tenant_keeps_its_own_findings() -> None:
    _, first = _chain(5, producer="gateway-a")
    _, second = _chain(5, producer="gateway-b")
    del second[1]
    raw = bytearray(first[2].raw)
    raw[-3] ^= 1
    first[2] = dataclasses.replace(first[2], raw=bytes(raw))
    report = verify_rows(first + second)
    assert report.producers == 2
    assert _found(report.findings) == [("modified", "gateway-a", 3), ("deleted", "gateway-b", 2)]
    tenant = builders.call().tenant_id
    assert len(verify_rows(first + second, tenant_id=tenant).findings) == 2
    assert _found(verify_rows(first + second, tenant_id="other").findings) == [
        ("deleted", "gateway-b", 2)
    ]


def test_a_row_moved_within_the_window_still_links() -> None:
    _, rows = _chain(30)
    moved = dataclasses.replace(rows[2], seq=20)
    rows = _stored([*rows[:2], moved, *rows[3:]])
    assert _found(verify_rows(rows, window=50).findings) == [("reordered", PRODUCER, 3)]


# --- the publisher makes checkpoints -----------------------------------------------------


class _FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def start(self) -> None:
        pass

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Any = None,
        prompt: bool = True,
    ) -> asyncio.Future[Any]:
        assert key is not None, "every record is keyed"
        self.sent.append((topic, value, key))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def flush(self) -> None:
        pass

    async def stop(self) -> None:
        pass


@pytest.mark.parametrize("wait", [False, True])
async def test_the_publisher_checkpoints_every_n_records_and_at_stop(wait: bool) -> None:
    publisher = ChainedPublisher("127.0.0.1:1", PRODUCER, checkpoint_every=2)
    fake = _FakeProducer()
    publisher._producer = fake
    await publisher.start()
    for _ in range(5):
        call = builders.call(event_id=uuid7())
        if wait:
            await publisher.publish_and_wait("govledger.lineage", "t", call)
        else:
            await publisher.publish("govledger.lineage", "t", call)
    await publisher.stop()
    records = [codec.decode(value) for _, value, _ in fake.sent]
    checkpoints = [r for r in records if isinstance(r, ChainCheckpoint)]
    assert [(c.seq, c.checkpoint_seq, c.reason) for c in checkpoints] == [
        (3, 2, "records"),
        (6, 5, "records"),
        (8, 7, "stop"),
    ]
    assert {t for t, _, _ in fake.sent if t != "govledger.lineage"} == {"govledger.checkpoints"}
    rows = [_row(r) for r in records]
    report = verify_rows(_stored(rows))
    assert report.findings == [] and report.open_chains == 0 and report.checkpoints == 3


async def test_the_publisher_checkpoints_on_its_interval_only_after_new_records() -> None:
    publisher = ChainedPublisher("127.0.0.1:1", PRODUCER, checkpoint_interval_s=0.05)
    fake = _FakeProducer()
    publisher._producer = fake
    await publisher.start()
    await publisher.publish("govledger.lineage", "t", builders.call(event_id=uuid7()))
    await asyncio.sleep(0.3)
    await publisher.stop()
    records = [codec.decode(value) for _, value, _ in fake.sent]
    assert [type(r).__name__ for r in records] == ["LineageRecord", "ChainCheckpoint"]
    assert records[1].reason == "interval"  # type: ignore[attr-defined]


def test_a_workers_chains_are_checkpointed_when_they_sealed_something() -> None:
    chains = Checkpoints()
    busy, idle = chains.chain("streams-sla-1"), chains.chain("streams-quotas-1")
    rows = [_row(busy.seal(builders.call(event_id=uuid7()))) for _ in range(3)]
    due = chains.seal_due("interval")
    assert [producer for producer, _, _ in due] == ["streams-sla-1"]
    assert idle.seq == 0 and chains.seal_due("interval") == []  # nothing new since
    checkpoint = codec.decode_as(due[0][1], ChainCheckpoint)
    assert (checkpoint.seq, checkpoint.checkpoint_seq, checkpoint.reason) == (4, 3, "interval")
    rows.append(StoredRow("chain_checkpoints", "streams-sla-1", 4, due[0][1]))
    report = verify_rows(rows)
    assert report.clean and report.checkpoints == 1 and report.open_chains == 0
    # The checkpoint vouches for seq 3: a tail cut before it is found.
    assert _found(verify_rows([rows[0], rows[3]]).findings) == [("truncated", "streams-sla-1", 2)]
