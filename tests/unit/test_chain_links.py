"""Chain links, the pure parts: which dropped copies become links (sinks.links, the
writer's window), and how verify walks them (replay.verify)."""

from __future__ import annotations

import dataclasses

from aiokafka import TopicPartition

from replay.stored import StoredRow
from replay.verify import verify_rows
from schemas import codec
from schemas.codec import HashChain
from schemas.records import Event, QuotaThresholdCrossed
from sinks.links import DroppedCopy, link_row, new_link_rows, place_of
from sinks.prepare import RecentIds
from sinks.tables import LINKS_TABLE
from tests.unit import builders

IDS = [f"0b8e6d3c-3333-4c33-8a44-00000000000{n}" for n in range(1, 6)]


def _alert(event_id: str) -> QuotaThresholdCrossed:
    return builders.quota_crossed(event_id=event_id)


def _row(record: Event, table: str = "alerts") -> StoredRow:
    return StoredRow(table, record.producer_id, record.seq, codec.encode(record))


def _restarted() -> tuple[list[StoredRow], list[QuotaThresholdCrossed]]:
    """Stored rows of a processor killed after 4 alerts and restarted: its new chain
    derives the 4 again (seqs 1-4, dropped by event id) then a 5th (seq 5, stored).
    Returns the stored rows and the dropped copies."""
    before, after = HashChain("streams-quotas-a"), HashChain("streams-quotas-b")
    rows = [_row(before.seal(_alert(i))) for i in IDS[:4]]
    copies = [after.seal(_alert(i)) for i in IDS[:4]]
    rows.append(_row(after.seal(_alert(IDS[4]))))
    return rows, copies


def _sorted(rows: list[StoredRow]) -> list[StoredRow]:
    return sorted(rows, key=lambda r: (r.producer_id, r.seq))


def _found(rows: list[StoredRow]) -> list[tuple[str, str, int]]:
    return [(f.kind, f.producer_id, f.seq) for f in verify_rows(_sorted(rows)).findings]


def test_dropped_copies_leave_a_gap_that_their_links_close() -> None:
    rows, copies = _restarted()
    assert _found(rows) == [("deleted", "streams-quotas-b", 1)]
    linked = rows + [_row(c, LINKS_TABLE) for c in copies]
    report = verify_rows(_sorted(linked))
    assert report.findings == [] and report.links == 4
    assert "4 duplicates kept as chain links, 0 findings" in report.summary()


def test_a_link_whose_bytes_do_not_hash_does_not_close_the_gap() -> None:
    rows, copies = _restarted()
    copies[1] = dataclasses.replace(copies[1], threshold_percent=50)  # record_hash kept
    linked = rows + [_row(c, LINKS_TABLE) for c in copies]
    assert _found(linked) == [("modified", "streams-quotas-b", 2)]


def test_a_link_byte_identical_to_a_stored_row_is_no_duplicate_but_data_twice_is() -> None:
    rows, _ = _restarted()
    assert _found([*rows, dataclasses.replace(rows[0], table=LINKS_TABLE)]) == [
        ("deleted", "streams-quotas-b", 1)
    ]
    assert ("duplicate", "streams-quotas-a", 1) in _found([*rows, rows[0]])


def test_a_link_row_is_built_from_the_sealed_bytes() -> None:
    _, copies = _restarted()
    value = codec.encode(copies[2])
    built = link_row(DroppedCopy("govledger.alerts", "alerts", value, b"v1.x"))
    assert built is not None
    key, row = built
    assert key == ("streams-quotas-b", 3, copies[2].record_hash)
    assert row[4:] == (
        "streams-quotas-b", 3, copies[2].prev_hash, copies[2].record_hash,
        "govledger.alerts", "alerts", value, b"v1.x",
    )  # fmt: skip
    assert place_of(value) == ("streams-quotas-b", 3)
    assert link_row(DroppedCopy("t", "alerts", b"not a record", b"")) is None
    assert place_of(b"not a record") is None


def test_links_already_stored_or_repeated_in_a_batch_are_written_once() -> None:
    _, copies = _restarted()
    dropped = [DroppedCopy("t", "alerts", codec.encode(c), b"") for c in copies]
    stored = {("streams-quotas-b", 1, copies[0].record_hash)}
    rows = new_link_rows([*dropped, dropped[3]], stored)
    assert [row[5] for row in rows] == [2, 3, 4]


def test_the_window_remembers_each_ids_first_copy() -> None:
    window, tp = RecentIds(capacity=2), TopicPartition("t", 0)
    assert window.earlier(tp, "a", 11) is None
    assert window.earlier(tp, "a", 12) == 11  # a different copy: the writer keeps a link
    assert window.earlier(tp, "b", 21) is None
    assert window.earlier(tp, "c", 31) is None  # evicts "a"
    assert window.earlier(tp, "a", 13) is None
