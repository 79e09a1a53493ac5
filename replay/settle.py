"""Telling a seq gap from records still in flight, for `audit verify` on a running stack.

The sink stores each topic as it reads it, so a producer's chain, which spans topics (a
worker seals SLA windows, balances and its checkpoints in one chain), can be stored out of
step: a checkpoint on its topic may be stored a moment before the record of another topic
it vouches for. A walk at that moment sees a gap. So a gap is a finding only if it is
still there a settle interval later: the producers with gaps are walked again, and a gap
of the second walk counts when it shares a missing seq with a gap of the first. A record
deleted stays missing and is reported; one in flight is stored by then and checked like any other
(hash, link, checkpoint), and the gap it filled is counted as `in_flight`.

What this cannot tell apart: a sink further behind on one topic than the settle interval
still leaves a gap, reported as a finding; the next run, once the sink has caught up,
finds it gone. The store's ingestion report shows the sink's lag."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for types only: the command line reads SETTLE_S without the codec
    from replay.verify import Finding, Report

GAP_KINDS = frozenset({"deleted", "truncated"})
SETTLE_S = 5.0
"""How long a gap may be records in flight: far above the sink's lag between its topics
(one fetch, under a second here), and short enough for an interactive command."""
MAX_SETTLE_S = 600.0


def _overlaps(gap: Finding, gaps: list[Finding]) -> bool:
    """Whether the gap shares a missing seq with one of the gaps."""
    last = max(gap.seq, gap.through_seq)
    return any(
        g.producer_id == gap.producer_id and g.seq <= last and gap.seq <= max(g.seq, g.through_seq)
        for g in gaps
    )


def settle_gaps(
    report: Report,
    walk_again: Callable[[frozenset[str]], Report],
    wait: Callable[[float], None],
    settle_s: float = SETTLE_S,
) -> Report:
    """The report with each gap confirmed or dropped; `walk_again` verifies the given
    producers' chains anew, `wait` sleeps (or ends a job that must stop)."""
    assert settle_s >= 0, settle_s
    gaps = [f for f in report.findings if f.kind in GAP_KINDS]
    if not gaps or settle_s == 0:
        return report
    wait(settle_s)
    producers = frozenset(g.producer_id for g in gaps)
    again = walk_again(producers)
    # A gap first seen in the second walk may itself be in flight: only the first's count.
    kept = [f for f in again.findings if f.kind not in GAP_KINDS or _overlaps(f, gaps)]
    still = [f for f in kept if f.kind in GAP_KINDS]
    report.in_flight += sum(not _overlaps(g, still) for g in gaps)
    report.findings = [f for f in report.findings if f.producer_id not in producers] + kept
    assert all(f.kind not in GAP_KINDS or _overlaps(f, gaps) for f in report.findings)
    return report
