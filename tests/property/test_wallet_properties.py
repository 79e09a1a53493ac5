"""Wallet balances under at-least-once delivery: duplicates, interleavings and restarts.

A history is what the wallets processor reads: fundings from the admin API and call
settlements from two gateways, across several wallets; further down, the org → team → key
tree with allocations, refunds, corrections and overdraft limits. Each producer's records come in
its own seq order (one partition per tenant); how the producers interleave is arbitrary.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import (
    Event,
    LineageRecord,
    WalletAllocated,
    WalletCorrected,
    WalletFunded,
    WalletLimitSet,
    WalletRefunded,
)
from streams.wallets.logic import (
    Wallet,
    entry_of,
    fold,
    from_balance,
    outcome_of,
    parent_wallet_id,
    team_of,
    tenant_of,
    to_balance,
)
from tests.unit.builders import (
    T0,
    allocation,
    call,
    correction,
    funding,
    limit_set,
    refund,
    rejected_call,
)

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
def producer_streams(draw: st.DrawFn) -> dict[str, list[Event]]:
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
def interleavings(draw: st.DrawFn, streams: dict[str, list[Event]]) -> list[Event]:
    """Any merge of the producers' streams that keeps each producer's own order."""
    tags = [producer for producer, events in streams.items() for _ in events]
    return merge(streams, draw(st.permutations(tags)))


def balances(wallets: dict[str, Wallet]) -> dict[str, tuple[object, ...]]:
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
def test_balance_is_funded_minus_spent_and_the_sum_of_entries(
    streams: dict[str, list[Event]], data: st.DataObject
) -> None:
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
def test_redelivered_records_change_nothing(
    streams: dict[str, list[Event]], data: st.DataObject
) -> None:
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
def test_any_interleaving_of_the_producers_gives_the_same_balances(
    streams: dict[str, list[Event]], data: st.DataObject
) -> None:
    one = data.draw(interleavings(streams), label="one")
    other = data.draw(interleavings(streams), label="other")
    assert balances(fold(one)) == balances(fold(other))


@PROPERTY_SETTINGS
@given(streams=producer_streams(), data=st.data())
def test_restart_from_a_snapshot_gives_the_same_wallets(
    streams: dict[str, list[Event]], data: st.DataObject
) -> None:
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


# --- the tree: org → team → key, with transfers decided on the control partition ---------
#
# A tree history is what the processor reads from two topics keyed by tenant: each tenant's
# control partition (fundings, allocations, refunds, corrections, limits from two admin
# processes) and its lineage partition (settlements from two gateways). Kafka keeps each
# partition's order; how partitions interleave is arbitrary. Everything below must hold
# for every interleaving.

ADMINS = ("admin-7f3e9d", "admin-5c6d7e")
TREE: dict[str, tuple[str, ...]] = {
    tenant: (
        tenant,
        f"{tenant}/search",
        f"{tenant}/ads",
        f"{tenant}/search/key_a",
        f"{tenant}/search/key_b",
        f"{tenant}/ads/key_c",
    )
    for tenant in ("acme", "globex")
}
PARENT_CHILD = {
    tenant: tuple((parent_wallet_id(w), w) for w in wallets if parent_wallet_id(w))
    for tenant, wallets in TREE.items()
}
SPENDING = {tenant: wallets[1:] for tenant, wallets in TREE.items()}
MAX_TREE_EVENTS = 40
USD = 10**9
amounts = st.integers(1, 50).map(lambda n: n * USD // 10)
# Fundings are larger than transfers, so that most transfers are accepted and some not.
fundings = st.integers(1, 20).map(lambda n: n * USD)


@st.composite
def tree_partitions(draw: st.DrawFn) -> dict[tuple[str, str], list[Event]]:
    """Each (topic, tenant) partition's records in order; producers' seqs increase."""
    seqs = dict.fromkeys((*ADMINS, *GATEWAYS), 0)
    partitions: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for _ in range(draw(st.integers(0, MAX_TREE_EVENTS))):
        producer = draw(st.sampled_from((*ADMINS, *GATEWAYS)))
        tenant = draw(st.sampled_from(sorted(TREE)))
        seqs[producer] += draw(st.integers(1, 2))
        where = {
            "producer_id": producer,
            "seq": seqs[producer],
            "occurred_at": T0 + 1_000 * sum(seqs.values()),
            "tenant_id": tenant,
        }
        if producer in GATEWAYS:
            wallet_id = draw(st.sampled_from(SPENDING[tenant]))
            cost = draw(st.one_of(st.just(0), amounts))
            made = call if cost else rejected_call
            extra = {"cost_nanousd": cost} if cost else {}
            partitions[("lineage", tenant)].append(
                made(wallet_id=wallet_id, team_id=team_of(wallet_id), **extra, **where)
            )
            continue
        kind = draw(st.sampled_from(("fund", "allocate", "allocate", "refund", "correct", "limit")))
        wallet_id = draw(st.sampled_from(TREE[tenant]))
        team = {"team_id": team_of(wallet_id)}
        if kind == "fund":
            # Money mostly enters at the root, as FinOps funds the org.
            wallet_id = tenant if draw(st.integers(0, 2)) else wallet_id
            team = {"team_id": team_of(wallet_id)}
            event: Event = funding(
                wallet_id=wallet_id, amount_nanousd=draw(fundings), **team, **where
            )
        elif kind == "allocate":
            # Mostly parent → child; sometimes any pair, which must be rejected.
            if draw(st.integers(0, 4)):
                source, target = draw(st.sampled_from(PARENT_CHILD[tenant]))
            else:
                source, target = draw(st.sampled_from(TREE[tenant])), wallet_id
            event = allocation(
                from_wallet_id=source,
                to_wallet_id=target,
                team_id=team_of(target),
                amount_nanousd=draw(amounts),
                **where,
            )
        elif kind == "refund":
            event = refund(wallet_id=wallet_id, amount_nanousd=draw(amounts), **team, **where)
        elif kind == "correct":
            signed = draw(amounts) * draw(st.sampled_from((1, -1)))
            event = correction(wallet_id=wallet_id, amount_nanousd=signed, **team, **where)
        else:
            limit = draw(st.sampled_from((0, USD, 5 * USD)))
            event = limit_set(wallet_id=wallet_id, overdraft_limit_nanousd=limit, **team, **where)
        partitions[("control", tenant)].append(event)
    return dict(partitions)


@st.composite
def partition_interleavings(
    draw: st.DrawFn, partitions: dict[tuple[str, str], list[Event]]
) -> list[Event]:
    """Any merge of the partitions that keeps each partition's own order."""
    tags = [name for name, events in partitions.items() for _ in events]
    order = draw(st.permutations(tags))
    iterators = {name: iter(events) for name, events in partitions.items()}
    return [next(iterators[name]) for name in order]


@dataclass
class Reference:
    """The ledger's rules written out plainly, per tenant in control-partition order."""

    journal: list[tuple[str, str, int]]  # (wallet_id, kind, signed amount)
    rejected: dict[str, int]
    limits: dict[str, int]


def reference(partitions: dict[tuple[str, str], list[Event]]) -> Reference:
    journal: list[tuple[str, str, int]] = []
    transferable: dict[str, int] = defaultdict(int)
    limits: dict[str, int] = defaultdict(int)
    rejected: dict[str, int] = defaultdict(int)

    def transfer(source: str, amount: int) -> bool:
        return amount > 0 and transferable[source] - amount >= -limits[source]

    for (topic, _), events in sorted(partitions.items()):
        for e in events:
            if isinstance(e, LineageRecord):
                if e.cost_nanousd > 0:
                    journal.append((e.wallet_id, "settle", -e.cost_nanousd))
            elif isinstance(e, WalletFunded | WalletRefunded):
                kind = "fund" if isinstance(e, WalletFunded) else "refund"
                journal.append((e.wallet_id, kind, e.amount_nanousd))
                transferable[e.wallet_id] += e.amount_nanousd
            elif isinstance(e, WalletAllocated):
                child = parent_wallet_id(e.to_wallet_id) == e.from_wallet_id
                if child and transfer(e.from_wallet_id, e.amount_nanousd):
                    journal.append((e.from_wallet_id, "allocate", -e.amount_nanousd))
                    journal.append((e.to_wallet_id, "allocate", e.amount_nanousd))
                    transferable[e.from_wallet_id] -= e.amount_nanousd
                    transferable[e.to_wallet_id] += e.amount_nanousd
                else:
                    rejected[e.from_wallet_id] += 1
            elif isinstance(e, WalletCorrected):
                if e.amount_nanousd > 0 or transfer(e.wallet_id, -e.amount_nanousd):
                    journal.append((e.wallet_id, "correct", e.amount_nanousd))
                    transferable[e.wallet_id] += e.amount_nanousd
                else:
                    rejected[e.wallet_id] += 1
            elif isinstance(e, WalletLimitSet):
                limits[e.wallet_id] = e.overdraft_limit_nanousd
        assert topic in ("control", "lineage")
    return Reference(journal, dict(rejected), dict(limits))


def money(wallets: dict[str, Wallet]) -> dict[str, tuple[object, ...]]:
    """Every amount of every wallet that holds any (what an owner and FinOps check)."""
    return {
        wallet_id: (
            w.balance_nanousd,
            w.funded_nanousd,
            w.allocated_in_nanousd,
            w.allocated_out_nanousd,
            w.spent_nanousd,
            w.refunded_nanousd,
            w.corrected_nanousd,
            w.overdraft_limit_nanousd,
            w.entry_count,
            w.rejected_count,
            dict(w.applied_seqs),
        )
        for wallet_id, w in wallets.items()
    }


TREE_SETTINGS = settings(max_examples=150, deadline=None)


@TREE_SETTINGS
@given(partitions=tree_partitions(), data=st.data())
def test_tree_balances_are_the_sum_of_their_entries(
    partitions: dict[tuple[str, str], list[Event]], data: st.DataObject
) -> None:
    wallets = fold(data.draw(partition_interleavings(partitions)))
    expected = reference(partitions)
    for wallet_id, wallet in wallets.items():
        entries = [(k, a) for w, k, a in expected.journal if w == wallet_id]
        assert wallet.balance_nanousd == sum(a for _, a in entries)
        assert wallet.entry_count == len(entries)
        by_kind: defaultdict[tuple[str, bool], int] = defaultdict(int)
        for kind, amount in entries:
            by_kind[kind, amount > 0] += amount
        assert wallet.funded_nanousd == by_kind["fund", True]
        assert wallet.allocated_in_nanousd == by_kind["allocate", True]
        assert wallet.allocated_out_nanousd == -by_kind["allocate", False]
        assert wallet.spent_nanousd == -by_kind["settle", False]
        assert wallet.refunded_nanousd == by_kind["refund", True]
        assert wallet.corrected_nanousd == by_kind["correct", True] + by_kind["correct", False]
        assert wallet.balance_nanousd == (
            wallet.funded_nanousd
            + wallet.allocated_in_nanousd
            - wallet.allocated_out_nanousd
            - wallet.spent_nanousd
            + wallet.refunded_nanousd
            + wallet.corrected_nanousd
        )
        assert wallet.rejected_count == expected.rejected.get(wallet_id, 0)
        assert wallet.overdraft_limit_nanousd == expected.limits.get(wallet_id, 0)
        assert (wallet.tenant_id, wallet.team_id) == (tenant_of(wallet_id), team_of(wallet_id))
    assert {w for w, _, _ in expected.journal} <= set(wallets)


@TREE_SETTINGS
@given(partitions=tree_partitions(), data=st.data())
def test_no_transfer_takes_a_wallet_below_minus_its_limit(
    partitions: dict[tuple[str, str], list[Event]], data: st.DataObject
) -> None:
    wallets: dict[str, Wallet] = {}
    for event in data.draw(partition_interleavings(partitions)):
        outcome = outcome_of(event, wallets)
        wallets = fold([event], wallets)
        if outcome.decided is not None:
            source = wallets[outcome.decided]
            assert source.transfer_balance_nanousd >= -source.overdraft_limit_nanousd


@TREE_SETTINGS
@given(partitions=tree_partitions(), data=st.data())
def test_allocation_conserves_money_across_each_tree(
    partitions: dict[tuple[str, str], list[Event]], data: st.DataObject
) -> None:
    wallets = fold(data.draw(partition_interleavings(partitions)))
    for tenant, tree in TREE.items():
        mine = [wallets[w] for w in tree if w in wallets]
        assert sum(w.allocated_in_nanousd for w in mine) == sum(
            w.allocated_out_nanousd for w in mine
        )
        assert sum(w.balance_nanousd for w in mine) == sum(
            w.funded_nanousd - w.spent_nanousd + w.refunded_nanousd + w.corrected_nanousd
            for w in mine
        )
        for w in mine:  # a child holds no more than its parent gave it
            parent = parent_wallet_id(w.wallet_id)
            children = [c for c in mine if parent_wallet_id(c.wallet_id) == w.wallet_id]
            assert w.allocated_out_nanousd == sum(c.allocated_in_nanousd for c in children)
            assert parent is not None or w.allocated_in_nanousd == 0
        assert tenant in {w.tenant_id for w in mine} or not mine


@TREE_SETTINGS
@given(partitions=tree_partitions(), data=st.data())
def test_the_tree_is_the_same_for_every_interleaving_of_partitions(
    partitions: dict[tuple[str, str], list[Event]], data: st.DataObject
) -> None:
    one = data.draw(partition_interleavings(partitions), label="one")
    other = data.draw(partition_interleavings(partitions), label="other")
    assert money(fold(one)) == money(fold(other))


@TREE_SETTINGS
@given(partitions=tree_partitions(), data=st.data())
def test_redelivered_tree_records_change_nothing(
    partitions: dict[tuple[str, str], list[Event]], data: st.DataObject
) -> None:
    history = data.draw(partition_interleavings(partitions))
    redelivered = list(history)
    for event in history:
        for _ in range(data.draw(st.integers(0, 2), label="copies")):
            first = next(i for i, seen in enumerate(redelivered) if seen is event)
            position = data.draw(st.integers(first + 1, len(redelivered)), label="position")
            redelivered.insert(position, event)
    assert fold(redelivered) == fold(history)


@TREE_SETTINGS
@given(partitions=tree_partitions(), data=st.data())
def test_rejected_transfers_change_no_money(
    partitions: dict[tuple[str, str], list[Event]], data: st.DataObject
) -> None:
    history = data.draw(partition_interleavings(partitions))
    wallets: dict[str, Wallet] = {}
    kept: list[Event] = []
    for event in history:
        if outcome_of(event, wallets).rejection is None:
            kept.append(event)
        wallets = fold([event], wallets)

    def amounts_only(folded: dict[str, Wallet]) -> dict[str, tuple[object, ...]]:
        return {w: m[:9] for w, m in money(folded).items() if m[8]}  # wallets with entries

    assert amounts_only(fold(kept)) == amounts_only(wallets)


@TREE_SETTINGS
@given(partitions=tree_partitions(), data=st.data())
def test_a_tree_restarted_from_published_balances_is_the_same(
    partitions: dict[tuple[str, str], list[Event]], data: st.DataObject
) -> None:
    history = data.draw(partition_interleavings(partitions))
    snapshot_at = data.draw(st.integers(0, len(history)), label="snapshot_at")
    resume_at = data.draw(st.integers(0, snapshot_at), label="resume_at")
    restored = {
        wallet_id: from_balance(
            to_balance(wallet, event_id="e", occurred_at=T0, producer_id="s", seq=1)
        )
        for wallet_id, wallet in fold(history[:snapshot_at]).items()
    }
    assert fold(history[resume_at:], restored) == fold(history)
