"""The stored notices' ranges (sinks.stored.StoredSeqs): each producer's seqs told as
maximal runs, none missed, none added, whatever order they were noted in."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from sinks.stored import StoredSeqs

PRODUCERS = st.sampled_from(["gateway-a", "gateway-b", "admin-c"])


@given(st.lists(st.tuples(PRODUCERS, st.integers(1, 200)), max_size=300))
def test_ranges_are_the_maximal_runs_of_the_seqs_noted(noted: list[tuple[str, int]]) -> None:
    seqs = StoredSeqs()
    for producer, seq in noted:
        seqs.note("gateway", producer, seq)
    ranges = seqs.ranges()
    told = [(r.stored_producer_id, s) for r in ranges for s in range(r.first_seq, r.last_seq + 1)]
    assert sorted(told) == sorted(set(noted))  # every seq once, nothing else
    for producer in {p for p, _ in noted}:
        runs = [r for r in ranges if r.stored_producer_id == producer]
        # Maximal: between two runs of one producer at least one seq is missing.
        assert all(b.first_seq > a.last_seq + 1 for a, b in itertools.pairwise(runs))


def test_only_outbox_keepers_are_told() -> None:
    seqs = StoredSeqs()
    seqs.note("worker", "streams-wallets-x", 1)
    seqs.note("admin", "admin-y", 3)
    assert [(r.stored_producer_id, r.first_seq, r.last_seq) for r in seqs.ranges()] == [
        ("admin-y", 3, 3)
    ]
