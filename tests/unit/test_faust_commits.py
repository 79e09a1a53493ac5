"""Faust's commit position covers a whole run of acknowledged offsets even when its
bookkeeping holds an offset twice (streams.app.commit_past_duplicate_acks).

The bookkeeping is Faust's own `Consumer._new_offset`, run on the state it reads: the
acknowledged offsets, the gaps, the committed position, per partition."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.app import commit_past_duplicate_acks

PARTITION = TP("govledger.wallet-state", 2)


class CommitState:
    """The fields of a Faust consumer that `_new_offset` reads and writes."""

    def __init__(self, committed: int, acked: Iterable[int], gap: tuple[int, int] | None) -> None:
        self._committed_offset: defaultdict[Any, int | None] = defaultdict(lambda: None)
        self._committed_offset[PARTITION] = committed
        self._acked: defaultdict[Any, list[int]] = defaultdict(list)
        self._acked[PARTITION] = list(acked)
        self._acked_index: defaultdict[Any, set[int]] = defaultdict(set)
        self._acked_index[PARTITION] = set(self._acked[PARTITION])
        self._gap: defaultdict[Any, IntervalTree] = defaultdict(IntervalTree)
        if gap is not None:
            self._gap[PARTITION].addi(*gap)

    def commits(self, times: int) -> list[int | None]:
        """The positions `times` commits in a row would write (None: nothing to commit)."""
        positions = []
        for _ in range(times):
            # A stand-in self: it carries only the state _new_offset reads.
            position = Consumer._new_offset(self, PARTITION)  # type: ignore[arg-type]
            if position is not None:
                self._committed_offset[PARTITION] = position
            positions.append(position)
        return positions


def test_offsets_acknowledged_twice_are_committed_in_one_go() -> None:
    commit_past_duplicate_acks()
    state = CommitState(committed=3, acked=[3, 4, 4, 5, 5, 6], gap=None)
    assert state.commits(1) == [7]


def test_a_gap_over_acknowledged_offsets_costs_at_most_one_short_commit() -> None:
    # After a seek back to the committed position (3) a fetch from before it delivers
    # 135: Faust records 4-135 as a gap, though 4-134 were read and acknowledged.
    commit_past_duplicate_acks()
    state = CommitState(committed=3, acked=range(4, 135), gap=(4, 136))
    assert state.commits(3)[1:] == [136, None]


def test_a_hole_before_the_acknowledged_run_still_holds_the_commit_back() -> None:
    # Offsets 4 and 5 were read but not acknowledged: nothing past them is committed.
    commit_past_duplicate_acks()
    state = CommitState(committed=4, acked=[6, 7, 7, 8], gap=None)
    assert state.commits(2) == [None, None]


def test_the_patch_is_applied_once() -> None:
    commit_past_duplicate_acks()
    patched = Consumer._new_offset
    commit_past_duplicate_acks()
    assert Consumer._new_offset is patched
