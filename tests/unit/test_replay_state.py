"""Replay to a moment: records after it are left out, the state at it is the logic's fold of
the records up to it, and the columnar fast path folds exactly what the record path does."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.audit import ledger_differences
from replay.sources import SettlementPage, paged, parse_moment
from replay.state import apply_settlement_page, rebuild_from_events, up_to
from schemas.records import Attempt, Event, LineageRecord
from streams.wallets import logic as wallets
from tests.unit import builders
from tests.unit.builders import T0, WALLET

MINUTE = 60_000
FAILED = Attempt("sim", "m", 503, 1.0, "http_5xx")


def _history() -> list[Event]:
    """A funding, three calls a minute apart, a budget and a refund after the third."""
    return [
        builders.funding(seq=1, occurred_at=T0 - MINUTE),
        builders.call(seq=1, occurred_at=T0),
        builders.call(seq=2, occurred_at=T0 + MINUTE),
        builders.budget_set(seq=2, occurred_at=T0 + MINUTE, budget_nanousd=1_000_000),
        builders.call(seq=3, occurred_at=T0 + 2 * MINUTE),
        builders.refund(seq=3, occurred_at=T0 + 3 * MINUTE, amount_nanousd=7),
    ]


def test_records_after_the_moment_are_left_out() -> None:
    history = _history()
    at = T0 + MINUTE
    kept = list(up_to(history, at))
    assert kept == [e for e in history if e.occurred_at <= at]
    assert all(e.occurred_at <= at for e in kept)
    rebuilt = rebuild_from_events(history, at)
    assert rebuilt.events == 4
    wallet = rebuilt.wallets[WALLET]
    assert wallet.entry_count == 3  # the funding and two calls; not the third, not the refund
    assert wallet.refunded_nanousd == 0


def test_a_wallet_at_a_moment_is_the_fold_of_the_records_up_to_it() -> None:
    history = _history()
    for at in (T0 - 2 * MINUTE, T0 - MINUTE, T0, T0 + 90_000, T0 + 10 * MINUTE):
        kept = [e for e in history if e.occurred_at <= at]
        rebuilt = rebuild_from_events(history, at).wallets
        in_time_order = wallets.fold(kept)
        assert not ledger_differences(rebuilt, in_time_order)
        assert {w: x.balance_nanousd for w, x in rebuilt.items()} == {
            w: x.balance_nanousd for w, x in in_time_order.items()
        }
        # Field for field, it is the fold in replay's order: the admin log, then settlements.
        control = [e for e in kept if not isinstance(e, LineageRecord)]
        settled = [e for e in kept if isinstance(e, LineageRecord)]
        assert rebuilt == wallets.fold(settled, wallets.fold(control))


def test_one_tenant_only() -> None:
    other = builders.call(tenant_id="globex", wallet_id="globex/search", seq=9, occurred_at=T0)
    rebuilt = rebuild_from_events([*_history(), other], T0 + 10 * MINUTE, tenant_id="acme")
    assert set(rebuilt.wallets) == {WALLET}


def test_quotas_and_breakers_are_rebuilt_with_their_logic() -> None:
    rebuilt = rebuild_from_events(_history(), T0 + 10 * MINUTE)
    quota = rebuilt.quotas[WALLET]
    assert quota.budget_nanousd == 1_000_000
    assert quota.crossed_percent == {50, 80, 100}  # three calls of ~390k nano-USD each
    failing = rebuilt.breakers[("openai", "gpt-4o")].breaker
    # Three failures a minute apart: only the last is within the 30 s window.
    assert failing.state == "closed" and failing.failures_ms == (T0 + 2 * MINUTE,)
    # Five failures within the window open the breaker, as live.
    calls = [builders.call(seq=i, occurred_at=T0 + i, attempts=(FAILED,)) for i in range(1, 6)]
    opened = rebuild_from_events(calls, T0 + 10).breakers[("sim", "m")].breaker
    assert opened.state == "open" and opened.opened_at_ms == T0 + 5


def test_escalations_are_rebuilt_up_to_the_moment() -> None:
    opened = builders.escalation_opened(occurred_at=T0)
    resolved = builders.escalation_resolved(occurred_at=T0 + MINUTE)
    before = rebuild_from_events([opened, resolved], T0 + 1).escalations
    after = rebuild_from_events([opened, resolved], T0 + MINUTE).escalations
    assert len(before.unresolved) == 1
    assert not after.unresolved


# --- the one rule of `evolve`, in bulk ---------------------------------------------------


def _evolve_as_written_before(
    wallet: wallets.Wallet | None, entry: wallets.Entry
) -> wallets.Wallet:
    """`evolve` as it was before `apply_entries` existed, kept here as the reference."""
    if wallet is None:
        wallet = wallets.new_wallet(entry.wallet_id, entry.team_id)
    if wallets.is_applied(wallet, entry):
        return wallet
    amount = entry.amount_nanousd
    changes: dict[str, Any] = {}
    if entry.kind == "fund":
        changes["funded_nanousd"] = wallet.funded_nanousd + amount
    elif entry.kind == "allocate" and amount >= 0:
        changes["allocated_in_nanousd"] = wallet.allocated_in_nanousd + amount
    elif entry.kind == "allocate":
        changes["allocated_out_nanousd"] = wallet.allocated_out_nanousd - amount
    elif entry.kind == "settle":
        changes["spent_nanousd"] = wallet.spent_nanousd - amount
        moment = datetime.fromtimestamp(entry.occurred_at / 1000, tz=UTC)
        period = int(moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
                     .timestamp()) * 1000  # fmt: skip
        if period > wallet.period_start_at:
            changes["period_start_at"], changes["period_spent_nanousd"] = period, -amount
        elif period == wallet.period_start_at:
            changes["period_spent_nanousd"] = wallet.period_spent_nanousd - amount
    elif entry.kind == "refund":
        changes["refunded_nanousd"] = wallet.refunded_nanousd + amount
    else:
        changes["corrected_nanousd"] = wallet.corrected_nanousd + amount
    return dataclasses.replace(
        wallet,
        balance_nanousd=wallet.balance_nanousd + amount,
        entry_count=wallet.entry_count + 1,
        last_event_id=entry.event_id,
        last_occurred_at=max(wallet.last_occurred_at, entry.occurred_at),
        applied_seqs=MappingProxyType({**wallet.applied_seqs, entry.producer_id: entry.seq}),
        revision=wallet.revision + 1,
        **changes,
    )


KINDS = st.sampled_from(["fund", "allocate", "settle", "refund", "correct"])
ENTRIES = st.lists(
    st.tuples(
        KINDS,
        st.integers(-(10**12), 10**12),
        st.sampled_from(["gw-a", "gw-b", "admin"]),
        st.integers(1, 30),
        st.integers(T0 - 90 * 86_400_000, T0 + 90 * 86_400_000),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ENTRIES)
def test_apply_entries_is_evolve_entry_by_entry(rows: list[tuple[Any, ...]]) -> None:
    entries = [
        wallets.Entry(WALLET, "acme", "search", kind, amount, f"e{i}", producer, seq, at)
        for i, (kind, amount, producer, seq, at) in enumerate(rows)
    ]
    reference: wallets.Wallet | None = None
    evolved: wallets.Wallet | None = None
    for entry in entries:
        reference = _evolve_as_written_before(reference, entry)
        evolved = wallets.evolve(evolved, entry)
    assert evolved == reference
    bulk = wallets.apply_entries(
        wallets.new_wallet(WALLET, "search"),
        [(e.kind, e.amount_nanousd, e.event_id, e.producer_id, e.seq, e.occurred_at)
         for e in entries],
    )  # fmt: skip
    assert bulk == (reference or wallets.new_wallet(WALLET, "search"))


@given(st.integers(-(10**13), 4 * 10**12))
def test_month_start_is_the_start_of_the_utc_month(at_ms: int) -> None:
    moment = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert wallets.month_start_ms(at_ms) == int(start.timestamp()) * 1000


def test_applying_nothing_new_returns_the_same_wallet() -> None:
    wallet = wallets.evolve(
        None, wallets.Entry(WALLET, "acme", "search", "fund", 5, "e", "p", 3, T0)
    )
    assert wallets.apply_entries(wallet, [("settle", -1, "x", "p", 2, T0)]) is wallet


# --- the columnar path --------------------------------------------------------------------


def test_settlements_from_columns_fold_like_the_records() -> None:
    calls = [
        builders.call(
            producer_id=p, seq=s, occurred_at=T0 + s, wallet_id=w, team_id=w.split("/")[1]
        )
        for p in ("gw-a", "gw-b")
        for s in range(1, 6)
        for w in ("acme/search", "acme/support")
    ]
    calls.append(calls[0])  # a duplicate row: the watermark skips it
    rows = sorted(calls, key=lambda c: (c.wallet_id, c.producer_id, c.seq))
    table = pa.table(
        {
            "wallet_id": [c.wallet_id for c in rows],
            "producer_id": [c.producer_id.encode() for c in rows],  # servers may send binary
            "seq": [c.seq for c in rows],
            "event_id": [c.event_id for c in rows],
            "amount": [-c.cost_nanousd for c in rows],
            "at": [c.occurred_at for c in rows],
        }
    )
    state: dict[str, wallets.Wallet] = {}
    apply_settlement_page(state, SettlementPage(table))
    expected = wallets.fold(rows)
    assert state == expected


def test_pages_follow_the_key_and_stop_at_a_short_page() -> None:
    data = [("a", 1), ("a", 2), ("b", 1), ("b", 5), ("c", 2)]
    asked: list[str] = []

    def read(sql: str) -> pa.Table:
        asked.append(sql)
        after = ("", 0)
        if "> (" in sql:
            tail = sql.split("> (", 1)[1].split(")", 1)[0]
            key, seq = tail.split(", ")
            after = (key.strip("'"), int(seq))
        rows = [r for r in data if r > after][: int(sql.rsplit("LIMIT ", 1)[1])]
        return pa.table({"k": [r[0] for r in rows], "seq": [r[1] for r in rows]})

    pages = list(paged(read, "k, seq FROM t", "1", ("k", "seq"), 2))
    assert [p.num_rows for p in pages] == [2, 2, 1]
    assert [r for p in pages for r in zip(p.column("k").to_pylist(), p.column("seq").to_pylist(),
                                          strict=True)] == data  # fmt: skip


def test_moments() -> None:
    assert parse_moment("now", 42) == 42
    assert parse_moment("1741010520000", 0) == 1741010520000
    assert parse_moment("2025-03-03T14:02:00Z", 0) == T0
    assert parse_moment("2025-03-03 14:02", 0) == T0
    assert parse_moment("2025-03-03T15:02:00+01:00", 0) == T0


def test_the_progress_bar_draws_on_its_stream_only_when_enabled() -> None:
    import io

    from replay.progress import Bar

    shown, hidden = io.StringIO(), io.StringIO()
    bar = Bar("wallets", 200, shown, enabled=True)
    bar.update(100)
    bar.close()
    assert "wallets" in shown.getvalue() and "100/200" in shown.getvalue()
    assert shown.getvalue().endswith("\n")
    quiet = Bar("wallets", 200, hidden)  # not a terminal: silent
    quiet.update(100)
    quiet.close()
    assert hidden.getvalue() == ""
