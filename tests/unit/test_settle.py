"""Gaps against records in flight (replay/settle.py): a gap is a finding only if it is
still there after the settle interval; what arrived meanwhile is verified like the rest."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

import pytest

from govledger.commands import audit
from replay.settle import SETTLE_S, settle_gaps
from replay.stored import StoredRow
from replay.verify import Report, verify_rows
from tests.unit.test_verify import PRODUCER, _chain, _found, _stored

OTHER = "worker-0-ffee00"


def _changed(row: StoredRow) -> StoredRow:
    raw = bytearray(row.raw)
    raw[-3] ^= 0x01  # past the envelope: the call's own fields
    return dataclasses.replace(row, raw=bytes(raw))


class Store:
    """Rows as the store holds them; `arriving` is stored during the settle wait."""

    def __init__(self, rows: list[StoredRow], arriving: Sequence[StoredRow] = ()) -> None:
        self.rows = list(rows)
        self.arriving = list(arriving)
        self.waits: list[float] = []
        self.walked: list[frozenset[str] | None] = []

    def walk(self, producers: frozenset[str] | None) -> Report:
        self.walked.append(producers)
        rows = [r for r in self.rows if producers is None or r.producer_id in producers]
        return verify_rows(_stored(rows))

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.rows += self.arriving

    def verify(self) -> Report:
        return settle_gaps(self.walk(None), self.walk, self.wait)


def test_a_checkpoint_stored_before_the_record_it_vouches_for_is_no_finding() -> None:
    # A worker's SLA window (seq 10) and its checkpoint (seq 11) go to different topics;
    # the sink stored the checkpoint first.
    _, rows = _chain(10, checkpoint_after=(10,))
    late = [r for r in rows if r.seq == 10]
    store = Store([r for r in rows if r.seq != 10], arriving=late)
    assert _found(verify_rows(_stored(store.rows)).findings) == [("truncated", PRODUCER, 10)]
    report = store.verify()
    assert report.clean, report.findings
    assert report.in_flight == 1
    assert store.waits == [SETTLE_S]
    assert "1 gaps filled while verifying (in flight), 0 findings" in report.summary()


def test_a_deleted_record_is_still_missing_after_the_wait_and_reported() -> None:
    _, rows = _chain(10, checkpoint_after=(10,))
    store = Store([r for r in rows if r.seq != 4])
    report = store.verify()
    assert _found(report.findings) == [("deleted", PRODUCER, 4)]
    assert report.in_flight == 0
    assert store.waits == [SETTLE_S]


def test_a_clean_store_is_not_walked_twice() -> None:
    _, rows = _chain(5, checkpoint_after=(5,))
    store = Store(rows)
    assert store.verify().clean
    assert (store.waits, store.walked) == ([], [None])


def test_only_the_producers_with_gaps_are_walked_again_and_others_keep_their_findings() -> None:
    _, mine = _chain(6, checkpoint_after=(6,))
    _, other = _chain(6, producer=OTHER)
    other[2] = _changed(other[2])
    store = Store([r for r in mine if r.seq != 6] + other, arriving=[mine[5]])
    report = store.verify()
    assert store.walked == [None, frozenset({PRODUCER})]
    assert _found(report.findings) == [("modified", OTHER, 3)]
    assert report.in_flight == 1


def test_a_record_that_arrives_changed_is_reported() -> None:
    _, rows = _chain(6, checkpoint_after=(6,))
    (late,) = [r for r in rows if r.seq == 6]
    store = Store([r for r in rows if r.seq != 6], arriving=[_changed(late)])
    assert _found(store.verify().findings) == [("modified", PRODUCER, 6)]


def test_part_of_a_gap_arriving_leaves_the_rest_reported() -> None:
    _, rows = _chain(10, checkpoint_after=(10,))
    store = Store(
        [r for r in rows if not 5 <= r.seq <= 7],
        arriving=[r for r in rows if r.seq in (5, 6)],
    )
    report = store.verify()
    assert _found(report.findings) == [("deleted", PRODUCER, 7)]
    assert report.in_flight == 0  # the first gap (5-7) is still partly there


def test_a_gap_first_seen_in_the_second_walk_is_left_for_the_next_run() -> None:
    _, rows = _chain(10, checkpoint_after=(10,))
    # At the first walk the chain ends at seq 4 with seq 3 missing; while waiting, seqs
    # 6-11 arrive, but not 5: that gap may be in flight too.
    first = [r for r in rows if r.seq <= 4 and r.seq != 3]
    store = Store(first, arriving=[rows[2]] + [r for r in rows if r.seq >= 6])
    report = store.verify()
    assert report.clean, report.findings
    assert report.in_flight == 1


def test_no_settle_interval_keeps_the_first_walk() -> None:
    _, rows = _chain(5, checkpoint_after=(5,))
    store = Store([r for r in rows if r.seq != 5])
    report = settle_gaps(store.walk(None), store.walk, store.wait, 0)
    assert _found(report.findings) == [("truncated", PRODUCER, 5)]
    assert store.waits == []


@pytest.mark.parametrize("given", ["-1", "601", "nan", "inf", "soon"])
def test_the_command_refuses_a_settle_interval_out_of_bounds(given: str) -> None:
    parser = argparse.ArgumentParser()
    audit.add_arguments(parser)
    assert parser.parse_args([]).settle_s == SETTLE_S
    assert parser.parse_args(["--settle-s", "0"]).settle_s == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["--settle-s", given])
