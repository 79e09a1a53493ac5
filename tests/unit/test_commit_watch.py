"""The commit watch: a partition whose records read a while ago are still not committed
(its position stopped, or creeps) is reported once per stall; a partition whose position
keeps up, however busy, or that is caught up, never."""

from __future__ import annotations

from streams.commit_watch import Stall, Watched, observe

P = "govledger.wallet-state[1]"
STALL_S = 120.0


def look(
    watched: dict[str, Watched], committed: int | None, read: int, now_s: float
) -> tuple[dict[str, Watched], list[Stall]]:
    committed_offsets = {} if committed is None else {P: committed}
    return observe(watched, committed_offsets, {P: read}, now_s, STALL_S)


def test_a_position_that_stays_put_while_reads_go_on_is_reported_once() -> None:
    watched: dict[str, Watched] = {}
    reported: list[Stall] = []
    for step, now_s in enumerate((0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0)):
        watched, stalls = look(watched, 500, 600 + 100 * step, now_s)
        reported += stalls
    assert reported == [Stall(P, 500, 1000, 120.0)]


def test_a_position_that_creeps_behind_the_reads_is_reported() -> None:
    # One offset per commit while hundreds are read: what the kill test saw in Faust.
    watched: dict[str, Watched] = {}
    reported: list[Stall] = []
    for step in range(8):
        watched, stalls = look(watched, 139 + step, 274 + 50 * step, 30.0 * step)
        reported += stalls
    assert [(s.committed_offset, s.stalled_s) for s in reported] == [(143, 120.0)]


def test_a_position_that_keeps_up_with_a_busy_partition_is_never_reported() -> None:
    watched: dict[str, Watched] = {}
    for step in range(20):
        watched, stalls = look(watched, 500 + 90 * step, 600 + 90 * step, 30.0 * step)
        assert stalls == []


def test_a_caught_up_partition_is_never_reported() -> None:
    watched: dict[str, Watched] = {}
    for step in range(20):
        # Caught up: the commit position is the offset after the last one read.
        watched, stalls = look(watched, 701, 700, 30.0 * step)
        assert stalls == []


def test_a_partition_never_committed_since_assignment_is_reported() -> None:
    watched, _ = look({}, None, 10, 0.0)
    watched, stalls = look(watched, None, 900, 125.0)
    assert stalls == [Stall(P, None, 900, 125.0)]


def test_a_stall_that_clears_and_returns_is_reported_again() -> None:
    watched, _ = look({}, 500, 600, 0.0)
    watched, first = look(watched, 500, 700, 130.0)
    watched, cleared = look(watched, 900, 899, 140.0)
    watched, _ = look(watched, 900, 950, 150.0)
    watched, second = look(watched, 900, 990, 280.0)
    assert (len(first), cleared, len(second)) == (1, [], 1)
    assert second[0].committed_offset == 900


def test_partitions_no_longer_read_are_forgotten() -> None:
    watched, _ = look({}, 500, 600, 0.0)
    watched, stalls = observe(watched, {}, {}, 200.0, STALL_S)
    assert (watched, stalls) == ({}, [])
