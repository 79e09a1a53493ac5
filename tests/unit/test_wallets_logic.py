"""Wallets: given events, then balances."""

from __future__ import annotations

from schemas import codec
from schemas.money import usd_to_nanousd
from schemas.records import WalletBalance
from streams.wallets import logic
from streams.wallets.logic import (
    Wallet,
    entry_of,
    evolve,
    fold,
    from_balance,
    team_wallet_id,
    to_balance,
)
from tests.unit import builders
from tests.unit.builders import (
    MINI_COMPLETION_NANOUSD,
    MINI_PROMPT_NANOUSD,
    T0,
    TEAM,
    TENANT,
    WALLET,
    call,
    funding,
    key_issued,
    rejected_call,
)

HUNDRED_USD = usd_to_nanousd("100")
GATEWAY_A = "gateway-eu1-0a1b2c"
GATEWAY_B = "gateway-us1-9f8e7d"


def test_team_wallet_id_is_tenant_then_team():
    assert team_wallet_id(TENANT, TEAM) == WALLET


def test_funding_credits_the_wallet():
    event = funding(amount_nanousd=HUNDRED_USD)
    wallet = fold([event])[WALLET]
    assert (wallet.tenant_id, wallet.team_id) == (TENANT, TEAM)
    assert wallet.balance_nanousd == HUNDRED_USD
    assert wallet.funded_nanousd == HUNDRED_USD
    assert wallet.spent_nanousd == 0
    assert wallet.entry_count == 1
    assert wallet.last_event_id == event.event_id
    assert dict(wallet.applied_seqs) == {event.producer_id: event.seq}


def test_settlement_debits_the_cost_of_the_call():
    settled = call(producer_id=GATEWAY_A, seq=1, prompt_tokens=1_200, completion_tokens=350)
    cost = 1_200 * MINI_PROMPT_NANOUSD + 350 * MINI_COMPLETION_NANOUSD
    wallet = fold([funding(amount_nanousd=HUNDRED_USD), settled])[WALLET]
    assert wallet.spent_nanousd == cost
    assert wallet.balance_nanousd == HUNDRED_USD - cost
    assert wallet.funded_nanousd == HUNDRED_USD
    assert wallet.entry_count == 2
    assert wallet.last_event_id == settled.event_id


def test_a_call_may_overdraw_a_wallet():
    # Settlement records what happened; enforcement is the gateway's job, before the call.
    wallet = fold([call(seq=1, cost_nanousd=5)])[WALLET]
    assert wallet.balance_nanousd == -5
    assert wallet.spent_nanousd == 5


def test_rejected_calls_make_no_entry():
    assert entry_of(rejected_call()) is None
    assert fold([rejected_call()]) == {}
    funded = fold([funding()])
    assert fold([rejected_call(seq=1)], funded) == funded


def test_calls_without_a_wallet_and_other_events_make_no_entry():
    unauthenticated = call(wallet_id="", key_id="", team_id="", cost_nanousd=390_000)
    assert entry_of(unauthenticated) is None
    assert entry_of(key_issued()) is None
    assert fold([unauthenticated, key_issued()]) == {}


def test_entries_are_signed_credit_and_debit():
    assert entry_of(funding(amount_nanousd=7)).amount_nanousd == 7
    assert entry_of(call(cost_nanousd=7)).amount_nanousd == -7


def test_the_same_event_twice_changes_nothing():
    fund, spend = funding(), call(producer_id=GATEWAY_A, seq=1)
    once = fold([fund, spend])
    assert fold([fund, spend, spend, fund]) == once
    assert fold([fund, fund, spend, spend]) == once


def test_evolve_returns_the_same_wallet_for_an_applied_entry():
    entry = entry_of(funding())
    wallet = evolve(None, entry)
    assert evolve(wallet, entry) is wallet


def test_an_older_seq_after_a_newer_one_from_the_same_producer_changes_nothing():
    newer = call(producer_id=GATEWAY_A, seq=5, cost_nanousd=1_000)
    older = call(producer_id=GATEWAY_A, seq=4, cost_nanousd=300)
    after_newer = fold([funding(), newer])
    assert fold([older], after_newer) == after_newer
    assert after_newer[WALLET].spent_nanousd == 1_000


def test_different_producers_are_independent():
    a = call(producer_id=GATEWAY_A, seq=9, cost_nanousd=1_000)
    b = call(producer_id=GATEWAY_B, seq=1, cost_nanousd=300)
    wallet = fold([funding(), a, b])[WALLET]
    assert wallet.spent_nanousd == 1_300
    assert wallet.entry_count == 3
    assert dict(wallet.applied_seqs) == {"admin-7f3e9d": 1, GATEWAY_A: 9, GATEWAY_B: 1}


def test_watermarks_are_per_wallet():
    # One gateway serves two tenants; their topics' partitions may be read in any order.
    other = team_wallet_id("globex", "research")
    to_other = call(
        producer_id=GATEWAY_A, seq=2, tenant_id="globex", team_id="research", wallet_id=other
    )
    to_acme = call(producer_id=GATEWAY_A, seq=1, cost_nanousd=500)
    wallets = fold([to_other, to_acme])
    assert wallets[WALLET].spent_nanousd == 500
    assert wallets[other].spent_nanousd == to_other.cost_nanousd
    assert wallets[other].tenant_id == "globex"


def test_last_occurred_at_never_goes_back():
    wallet = fold(
        [
            funding(seq=1, occurred_at=T0 + 10_000),
            call(producer_id=GATEWAY_A, seq=1, occurred_at=T0),
        ]
    )[WALLET]
    assert wallet.last_occurred_at == T0 + 10_000


def _some_wallet() -> Wallet:
    return fold(
        [
            funding(amount_nanousd=HUNDRED_USD),
            call(producer_id=GATEWAY_A, seq=3),
            call(producer_id=GATEWAY_B, seq=8, cost_nanousd=42),
        ]
    )[WALLET]


def test_balance_record_describes_the_wallet():
    wallet = _some_wallet()
    record = to_balance(
        wallet,
        event_id="0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b",
        occurred_at=T0,
        producer_id="",
        seq=0,
    )
    assert record.event_type == WalletBalance.event_type_name
    assert record.tenant_id == TENANT
    assert record.wallet_id == WALLET
    assert record.balance_nanousd == record.funded_nanousd - record.spent_nanousd
    assert record.applied_seqs == {"admin-7f3e9d": 1, GATEWAY_A: 3, GATEWAY_B: 8}


def test_to_balance_then_from_balance_round_trips():
    wallet = _some_wallet()
    record = to_balance(
        wallet,
        event_id="0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b",
        occurred_at=T0,
        producer_id="",
        seq=0,
    )
    assert from_balance(record) == wallet


def test_a_restored_wallet_still_skips_what_it_applied():
    # What the agent does after a restart: the wallet comes back from its encoded snapshot.
    wallet = _some_wallet()
    record = to_balance(
        wallet,
        event_id="0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b",
        occurred_at=T0,
        producer_id="p",
        seq=1,
    )
    restored = from_balance(codec.decode_as(codec.encode(record), WalletBalance))
    assert restored == wallet
    redelivered = call(producer_id=GATEWAY_A, seq=3)
    assert fold([redelivered], {WALLET: restored}) == {WALLET: wallet}
    fresh = call(producer_id=GATEWAY_A, seq=4, cost_nanousd=8)
    assert fold([fresh], {WALLET: restored})[WALLET].spent_nanousd == wallet.spent_nanousd + 8


def test_latest_keeps_the_balance_with_more_entries_whatever_the_reading_order() -> None:
    from schemas.records import WalletBalance
    from streams.wallets.logic import latest

    def published(entries: int, balance: int) -> WalletBalance:
        return WalletBalance(
            event_id="01900000-0000-7000-8000-000000000001",
            event_type="wallet.balance",
            occurred_at=0,
            tenant_id="acme",
            producer_id="streams-1",
            seq=entries,
            wallet_id="acme/search",
            team_id="search",
            balance_nanousd=balance,
            funded_nanousd=100,
            spent_nanousd=100 - balance,
            entry_count=entries,
            last_event_id="x",
            last_occurred_at=0,
            applied_seqs={},
        )

    newer = latest(None, published(3, 70))
    assert latest(newer, published(2, 90)).balance_nanousd == 70
    assert latest(newer, published(4, 60)).balance_nanousd == 60


# --- period spend (UTC months) --------------------------------------------------------


def test_period_spend_counts_the_current_utc_month_and_a_new_month_starts_clean():
    from datetime import UTC, datetime

    from streams.wallets.logic import month_start_ms, spent_in_month_nanousd

    nov = int(datetime(2026, 11, 30, 23, 59, tzinfo=UTC).timestamp()) * 1000
    dec = int(datetime(2026, 12, 1, 0, 1, tzinfo=UTC).timestamp()) * 1000
    wallet = logic.fold(
        [
            builders.funding(amount_nanousd=10_000_000),
            builders.call(seq=10, occurred_at=nov, cost_nanousd=300),
            builders.call(seq=11, occurred_at=nov + 1, cost_nanousd=200),
        ]
    )[builders.WALLET]
    assert wallet.period_start_at == month_start_ms(nov)
    assert spent_in_month_nanousd(wallet, nov) == 500
    assert spent_in_month_nanousd(wallet, dec) == 0

    wallet = logic.fold(
        [builders.call(seq=12, occurred_at=dec, cost_nanousd=70)], {wallet.wallet_id: wallet}
    )[builders.WALLET]
    assert spent_in_month_nanousd(wallet, dec) == 70
    # A late record of November counts toward all-time spend, not December's.
    wallet = logic.fold(
        [builders.call(seq=13, occurred_at=nov, cost_nanousd=5)], {wallet.wallet_id: wallet}
    )[builders.WALLET]
    assert spent_in_month_nanousd(wallet, dec) == 70
    assert wallet.spent_nanousd == 575


def test_period_spend_survives_the_published_balance_round_trip():
    wallet = logic.fold([builders.funding(), builders.call(seq=10)])[builders.WALLET]
    published = logic.to_balance(wallet, event_id="e", occurred_at=1, producer_id="p", seq=1)
    assert logic.from_balance(published) == wallet
