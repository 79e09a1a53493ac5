"""Wallet balances under at-least-once delivery: duplicates, interleavings and restarts.

A history is what the wallets processor reads: fundings from the admin API and call
settlements from two gateways, across several wallets. Each producer's records come in
its own seq order (one partition per tenant); how the producers interleave is arbitrary.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import Event, LineageRecord, WalletFunded
from streams.wallets.logic import Wallet, entry_of, fold, from_balance, to_balance
from tests.unit.builders import T0, call, funding, rejected_call

ADMIN = "admin-7f3e9d"
GATEWAYS = ("gateway-eu1-0a1b2c", "gateway-us1-9f8e7d")
PRODUCERS = (ADMIN, *GATEWAYS)
# wallet id -> (tenant, team)
WALLETS = {
    "acme/search": ("acme", "search"),
    "acme/ads": ("acme", "ads"),
    "globex/research": ("globex", "research"),
}
MAX_EVENTS_PER_PRODUCER = 15

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)


@st.composite
def producer_streams(draw) -> dict[str, list[Event]]:
    """Each producer's records in its own order, seq increasing (gaps are records for
    other topics or partitions)."""
    streams: dict[str, list[Event]] = {}
    for producer in PRODUCERS:
        events: list[Event] = []
        seq = 0
        for _ in range(draw(st.integers(0, MAX_EVENTS_PER_PRODUCER))):
            seq += draw(st.integers(1, 3))
            wallet_id = draw(st.sampled_from(sorted(WALLETS)))
            tenant_id, team_id = WALLETS[wallet_id]
            where = {
                "producer_id": producer,
                "seq": seq,
                "occurred_at": T0 + 1_000 * seq,
                "tenant_id": tenant_id,
                "team_id": team_id,
                "wallet_id": wallet_id,
            }
            if producer == ADMIN:
                events.append(funding(amount_nanousd=draw(st.integers(1, 10**12)), **where))
            else:
                cost = draw(st.one_of(st.just(0), st.integers(1, 10**9)))
                events.append(call(cost_nanousd=cost, **where) if cost else rejected_call(**where))
        streams[producer] = events
    return streams


def merge(streams: dict[str, list[Event]], order: Sequence[str]) -> list[Event]:
    """One interleaving: `order` names, for each position, whose next record comes."""
    iterators = {producer: iter(events) for producer, events in streams.items()}
    return [next(iterators[producer]) for producer in order]


@st.composite
def interleavings(draw, streams: dict[str, list[Event]]) -> list[Event]:
    """Any merge of the producers' streams that keeps each producer's own order."""
    tags = [producer for producer, events in streams.items() for _ in events]
    return merge(streams, draw(st.permutations(tags)))


def balances(wallets: dict[str, Wallet]) -> dict[str, tuple]:
    """What a wallet's owner checks; `last_event_id` depends on the interleaving by design."""
    return {
        wallet_id: (
            w.balance_nanousd,
            w.funded_nanousd,
            w.spent_nanousd,
            w.entry_count,
            w.last_occurred_at,
            dict(w.applied_seqs),
        )
        for wallet_id, w in wallets.items()
    }


def expected_totals(history: Iterable[Event]) -> dict[str, tuple[int, int, int]]:
    """(funded, spent, entries) per wallet, straight from the records."""
    funded: dict[str, int] = defaultdict(int)
    spent: dict[str, int] = defaultdict(int)
    entries: dict[str, int] = defaultdict(int)
    for event in history:
        if isinstance(event, WalletFunded):
            funded[event.wallet_id] += event.amount_nanousd
            entries[event.wallet_id] += 1
        elif isinstance(event, LineageRecord) and event.cost_nanousd > 0:
            spent[event.wallet_id] += event.cost_nanousd
            entries[event.wallet_id] += 1
    return {w: (funded[w], spent[w], entries[w]) for w in entries}


@PROPERTY_SETTINGS
@given(streams=producer_streams(), data=st.data())
def test_balance_is_funded_minus_spent_and_the_sum_of_entries(streams, data):
    history = data.draw(interleavings(streams))
    wallets = fold(history)
    expected = expected_totals(history)
    journal = [entry for entry in map(entry_of, history) if entry is not None]
    assert set(wallets) == set(expected)
    for wallet_id, wallet in wallets.items():
        funded, spent, entries = expected[wallet_id]
        assert (wallet.funded_nanousd, wallet.spent_nanousd) == (funded, spent)
        assert wallet.balance_nanousd == funded - spent
        assert wallet.entry_count == entries
        amounts = [e.amount_nanousd for e in journal if e.wallet_id == wallet_id]
        assert wallet.balance_nanousd == sum(amounts)
        assert (wallet.tenant_id, wallet.team_id) == WALLETS[wallet_id]


@PROPERTY_SETTINGS
@given(streams=producer_streams(), data=st.data())
def test_redelivered_records_change_nothing(streams, data):
    history = data.draw(interleavings(streams))
    redelivered = list(history)
    for event in history:
        for _ in range(data.draw(st.integers(0, 2), label="copies")):
            first = next(i for i, seen in enumerate(redelivered) if seen is event)
            position = data.draw(st.integers(first + 1, len(redelivered)), label="position")
            redelivered.insert(position, event)
    assert fold(redelivered) == fold(history)


@PROPERTY_SETTINGS
@given(streams=producer_streams(), data=st.data())
def test_any_interleaving_of_the_producers_gives_the_same_balances(streams, data):
    one = data.draw(interleavings(streams), label="one")
    other = data.draw(interleavings(streams), label="other")
    assert balances(fold(one)) == balances(fold(other))


@PROPERTY_SETTINGS
@given(streams=producer_streams(), data=st.data())
def test_restart_from_a_snapshot_gives_the_same_wallets(streams, data):
    history = data.draw(interleavings(streams))
    snapshot_at = data.draw(st.integers(0, len(history)), label="snapshot_at")
    # The committed offset may lag the snapshot: records after it are read again.
    resume_at = data.draw(st.integers(0, snapshot_at), label="resume_at")
    before = fold(history[:snapshot_at])
    restored = {
        wallet_id: from_balance(
            to_balance(
                wallet,
                event_id="0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b",
                occurred_at=T0,
                producer_id="streams-wallets-1c2d3e",
                seq=1,
            )
        )
        for wallet_id, wallet in before.items()
    }
    assert fold(history[resume_at:], restored) == fold(history)
