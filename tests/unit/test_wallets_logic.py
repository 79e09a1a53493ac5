"""Wallets: given events, then balances."""

from __future__ import annotations

from schemas import codec
from schemas.ids import uuid7
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


def test_team_wallet_id_is_tenant_then_team() -> None:
    assert team_wallet_id(TENANT, TEAM) == WALLET


def test_funding_credits_the_wallet() -> None:
    event = funding(amount_nanousd=HUNDRED_USD)
    wallet = fold([event])[WALLET]
    assert (wallet.tenant_id, wallet.team_id) == (TENANT, TEAM)
    assert wallet.balance_nanousd == HUNDRED_USD
    assert wallet.funded_nanousd == HUNDRED_USD
    assert wallet.spent_nanousd == 0
    assert wallet.entry_count == 1
    assert wallet.last_event_id == event.event_id
    assert dict(wallet.applied_seqs) == {event.producer_id: event.seq}


def test_settlement_debits_the_cost_of_the_call() -> None:
    settled = call(producer_id=GATEWAY_A, seq=1, prompt_tokens=1_200, completion_tokens=350)
    cost = 1_200 * MINI_PROMPT_NANOUSD + 350 * MINI_COMPLETION_NANOUSD
    wallet = fold([funding(amount_nanousd=HUNDRED_USD), settled])[WALLET]
    assert wallet.spent_nanousd == cost
    assert wallet.balance_nanousd == HUNDRED_USD - cost
    assert wallet.funded_nanousd == HUNDRED_USD
    assert wallet.entry_count == 2
    assert wallet.last_event_id == settled.event_id


def test_a_call_may_overdraw_a_wallet() -> None:
    # Settlement records what happened; enforcement is the gateway's job, before the call.
    wallet = fold([call(seq=1, cost_nanousd=5)])[WALLET]
    assert wallet.balance_nanousd == -5
    assert wallet.spent_nanousd == 5


def test_rejected_calls_make_no_entry() -> None:
    assert entry_of(rejected_call()) is None
    assert fold([rejected_call()]) == {}
    funded = fold([funding()])
    assert fold([rejected_call(seq=1)], funded) == funded


def test_calls_without_a_wallet_and_other_events_make_no_entry() -> None:
    unauthenticated = call(wallet_id="", key_id="", team_id="", cost_nanousd=390_000)
    assert entry_of(unauthenticated) is None
    assert entry_of(key_issued()) is None
    assert fold([unauthenticated, key_issued()]) == {}


def test_entries_are_signed_credit_and_debit() -> None:
    credit, debit = entry_of(funding(amount_nanousd=7)), entry_of(call(cost_nanousd=7))
    assert credit is not None and debit is not None
    assert credit.amount_nanousd == 7
    assert debit.amount_nanousd == -7


def test_the_same_event_twice_changes_nothing() -> None:
    fund, spend = funding(), call(producer_id=GATEWAY_A, seq=1)
    once = fold([fund, spend])
    assert fold([fund, spend, spend, fund]) == once
    assert fold([fund, fund, spend, spend]) == once


def test_evolve_returns_the_same_wallet_for_an_applied_entry() -> None:
    entry = entry_of(funding())
    assert entry is not None
    wallet = evolve(None, entry)
    assert evolve(wallet, entry) is wallet


def test_an_older_seq_after_a_newer_one_from_the_same_producer_changes_nothing() -> None:
    newer = call(producer_id=GATEWAY_A, seq=5, cost_nanousd=1_000)
    older = call(producer_id=GATEWAY_A, seq=4, cost_nanousd=300)
    after_newer = fold([funding(), newer])
    assert fold([older], after_newer) == after_newer
    assert after_newer[WALLET].spent_nanousd == 1_000


def test_different_producers_are_independent() -> None:
    a = call(producer_id=GATEWAY_A, seq=9, cost_nanousd=1_000)
    b = call(producer_id=GATEWAY_B, seq=1, cost_nanousd=300)
    wallet = fold([funding(), a, b])[WALLET]
    assert wallet.spent_nanousd == 1_300
    assert wallet.entry_count == 3
    assert dict(wallet.applied_seqs) == {"admin-7f3e9d": 1, GATEWAY_A: 9, GATEWAY_B: 1}


def test_watermarks_are_per_wallet() -> None:
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


def test_last_occurred_at_never_goes_back() -> None:
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


def test_balance_record_describes_the_wallet() -> None:
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


def test_to_balance_then_from_balance_round_trips() -> None:
    wallet = _some_wallet()
    record = to_balance(
        wallet,
        event_id="0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b",
        occurred_at=T0,
        producer_id="",
        seq=0,
    )
    assert from_balance(record) == wallet


def test_a_restored_wallet_still_skips_what_it_applied() -> None:
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


def test_period_spend_counts_the_current_utc_month_and_a_new_month_starts_clean() -> None:
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


def test_period_spend_survives_the_published_balance_round_trip() -> None:
    wallet = logic.fold([builders.funding(), builders.call(seq=10)])[builders.WALLET]
    published = logic.to_balance(wallet, event_id="e", occurred_at=1, producer_id="p", seq=1)
    assert logic.from_balance(published) == wallet


# --- the tree: org → team → key -----------------------------------------------------------

ORG = builders.ORG_WALLET
KEY = builders.KEY_WALLET
ADMIN = "admin-7f3e9d"
ADMIN_2 = "admin-5c6d7e"
TEN_USD = usd_to_nanousd("10")


def _funded_org(amount: int = HUNDRED_USD) -> dict[str, Wallet]:
    event_id = "0193a1b2-0000-7000-8000-00000000f0d0"
    return fold(
        [funding(wallet_id=ORG, team_id="", amount_nanousd=amount, seq=1, event_id=event_id)]
    )


def _money(wallet: Wallet) -> tuple[int, ...]:
    return (
        wallet.balance_nanousd,
        wallet.funded_nanousd,
        wallet.allocated_in_nanousd,
        wallet.allocated_out_nanousd,
        wallet.spent_nanousd,
        wallet.refunded_nanousd,
        wallet.corrected_nanousd,
        wallet.entry_count,
    )


def test_wallet_ids_name_one_level_of_the_tree_each() -> None:
    assert logic.org_wallet_id(TENANT) == ORG == "acme"
    assert logic.key_wallet_id(TENANT, TEAM, "key_0193a1b2") == KEY
    assert logic.parent_wallet_id(KEY) == WALLET
    assert logic.parent_wallet_id(WALLET) == ORG
    assert logic.parent_wallet_id(ORG) is None
    assert logic.path_of(KEY) == (TENANT, TEAM, "key_0193a1b2")
    assert (logic.tenant_of(KEY), logic.team_of(KEY), logic.team_of(ORG)) == (TENANT, TEAM, "")
    assert all(logic.is_wallet_id(w) for w in (ORG, WALLET, KEY))
    assert not any(logic.is_wallet_id(w) for w in ("", "a//b", "a/b/c/d", "/a", "a/"))


def test_an_org_wallet_is_funded_and_belongs_to_no_team() -> None:
    org = _funded_org()[ORG]
    assert (org.tenant_id, org.team_id, org.balance_nanousd) == (TENANT, "", HUNDRED_USD)


def test_allocation_debits_the_parent_and_credits_the_child() -> None:
    moved = builders.allocation(amount_nanousd=TEN_USD)
    wallets = fold([moved], _funded_org())
    org, team = wallets[ORG], wallets[WALLET]
    assert (org.balance_nanousd, org.allocated_out_nanousd) == (HUNDRED_USD - TEN_USD, TEN_USD)
    assert (team.balance_nanousd, team.allocated_in_nanousd) == (TEN_USD, TEN_USD)
    assert (team.tenant_id, team.team_id) == (TENANT, TEAM)
    assert org.last_decided_event_id == moved.event_id and org.last_decision == "accepted"
    assert logic.entries_of(moved, _funded_org()) == (
        logic.Entry(ORG, TENANT, "", "allocate", -TEN_USD, moved.event_id, ADMIN, 2, T0),
        logic.Entry(WALLET, TENANT, TEAM, "allocate", TEN_USD, moved.event_id, ADMIN, 2, T0),
    )


def test_allocation_goes_down_the_tree_to_the_key() -> None:
    wallets = fold(
        [
            builders.allocation(amount_nanousd=TEN_USD, seq=2),
            builders.allocation(
                from_wallet_id=WALLET, to_wallet_id=KEY, amount_nanousd=4 * 10**9, seq=3
            ),
        ],
        _funded_org(),
    )
    assert wallets[WALLET].balance_nanousd == 6 * 10**9
    assert wallets[KEY].balance_nanousd == 4 * 10**9
    assert sum(w.balance_nanousd for w in wallets.values()) == HUNDRED_USD


def test_money_moves_only_from_a_wallet_to_its_own_child() -> None:
    start = fold([funding(amount_nanousd=HUNDRED_USD, seq=1)], _funded_org())
    wrong = [
        builders.allocation(from_wallet_id=ORG, to_wallet_id=KEY, seq=5),  # skips a level
        builders.allocation(from_wallet_id=WALLET, to_wallet_id=ORG, seq=6),  # upwards
        builders.allocation(from_wallet_id=WALLET, to_wallet_id="acme/ads/k", seq=7),
        builders.allocation(from_wallet_id=ORG, to_wallet_id=ORG, seq=8),
        builders.allocation(amount_nanousd=0, seq=9),
        builders.allocation(amount_nanousd=-5, seq=10),
    ]
    after = fold(wrong, start)
    assert {w: _money(after[w]) for w in start} == {w: _money(start[w]) for w in start}
    assert set(after) == set(start)
    rejected = after[ORG].rejected_count + after[WALLET].rejected_count
    assert rejected == len(wrong)


def test_another_tenants_wallet_is_not_in_this_partition_and_changes_nothing() -> None:
    stray = builders.allocation(from_wallet_id="globex", to_wallet_id="globex/research")
    start = _funded_org()
    assert fold([stray], start) == start


def test_a_transfer_may_take_the_source_exactly_to_minus_its_limit_and_no_further() -> None:
    limited = fold([builders.limit_set(wallet_id=ORG, team_id="", overdraft_limit_nanousd=5)])
    org = limited[ORG]
    assert (org.overdraft_limit_nanousd, org.entry_count, org.balance_nanousd) == (5, 0, 0)
    over = builders.allocation(amount_nanousd=6, seq=7)
    at_limit = builders.allocation(amount_nanousd=5, seq=8)
    after_over = fold([over], limited)
    assert after_over[ORG].rejected_count == 1
    assert after_over[ORG].last_decision == "rejected"
    assert after_over[ORG].last_decided_event_id == over.event_id
    assert WALLET not in after_over
    after = fold([at_limit], after_over)
    assert after[ORG].balance_nanousd == -5
    assert after[WALLET].balance_nanousd == 5
    assert fold([builders.allocation(amount_nanousd=1, seq=9)], after)[ORG].rejected_count == 2


def test_a_rejected_transfer_is_not_decided_again_when_redelivered() -> None:
    over = builders.allocation(amount_nanousd=TEN_USD, seq=2)
    rejected = fold([over])
    # Money arrives from another admin process; the old transfer is read again.
    funded = fold([funding(wallet_id=ORG, team_id="", producer_id=ADMIN_2, seq=1)], rejected)
    assert fold([over], funded) == funded
    assert WALLET not in funded


def test_transfers_are_decided_without_settlements_which_are_never_refused() -> None:
    # A settlement can arrive before or after an allocation (another topic): the decision
    # must not depend on where it lands, so it reads the balance without settlements.
    team_funded = fold([funding(amount_nanousd=TEN_USD, seq=1)])
    spend = call(producer_id=GATEWAY_A, seq=1, cost_nanousd=TEN_USD)
    to_key = builders.allocation(
        from_wallet_id=WALLET, to_wallet_id=KEY, amount_nanousd=TEN_USD, seq=2
    )
    one = fold([spend, to_key], team_funded)
    other = fold([to_key, spend], team_funded)
    assert {w: _money(one[w]) for w in one} == {w: _money(other[w]) for w in other}
    assert one[WALLET].balance_nanousd == -TEN_USD
    assert one[KEY].balance_nanousd == TEN_USD
    assert one[WALLET].transfer_balance_nanousd == 0


def test_a_settlement_may_overdraw_a_wallet_past_its_limit() -> None:
    wallets = fold([call(wallet_id=KEY, producer_id=GATEWAY_A, seq=1, cost_nanousd=7)])
    assert wallets[KEY].balance_nanousd == -7 and wallets[KEY].spent_nanousd == 7
    assert wallets[KEY].team_id == TEAM


def test_refund_and_correction_are_entries_of_their_own() -> None:
    refund = builders.refund(amount_nanousd=300)
    credit = builders.correction(amount_nanousd=20, seq=4)
    debit = builders.correction(amount_nanousd=-50, seq=5)
    wallet = fold([funding(seq=1), call(producer_id=GATEWAY_A, seq=1), refund, credit, debit])[
        WALLET
    ]
    assert wallet.refunded_nanousd == 300
    assert wallet.corrected_nanousd == -30
    assert wallet.entry_count == 5
    assert wallet.balance_nanousd == (
        wallet.funded_nanousd - wallet.spent_nanousd + wallet.refunded_nanousd - 30
    )
    # Spend stays what the calls cost: a refund is an entry of its own, not an edit.
    assert wallet.spent_nanousd == call().cost_nanousd
    assert logic.entry_of(refund) == logic.Entry(
        WALLET, TENANT, TEAM, "refund", 300, refund.event_id, ADMIN, 3, T0
    )


def test_a_debit_correction_is_decided_like_a_transfer() -> None:
    funded = fold([funding(amount_nanousd=100, seq=1)])
    too_much = builders.correction(amount_nanousd=-101, seq=4)
    after = fold([too_much], funded)
    assert after[WALLET].balance_nanousd == 100
    assert after[WALLET].rejected_count == 1
    assert logic.entries_of(too_much, funded) == ()
    assert (
        fold([builders.correction(amount_nanousd=-100, seq=5)], after)[WALLET].balance_nanousd == 0
    )


def test_malformed_control_records_make_no_entry() -> None:
    assert logic.entry_of(builders.refund(amount_nanousd=0)) is None
    assert logic.entry_of(builders.correction(amount_nanousd=0)) is None
    assert fold([builders.refund(amount_nanousd=-3), builders.correction(amount_nanousd=0)]) == {}
    assert fold([builders.limit_set(overdraft_limit_nanousd=-1)]) == {}


def test_a_limit_is_set_once_per_event_and_an_older_one_never_wins() -> None:
    newer = builders.limit_set(overdraft_limit_nanousd=9, seq=7)
    older = builders.limit_set(overdraft_limit_nanousd=3, seq=6)
    wallets = fold([newer, older, newer])
    assert wallets[WALLET].overdraft_limit_nanousd == 9
    assert wallets[WALLET].revision == 1


def test_a_redelivered_allocation_moves_money_once() -> None:
    moved = builders.allocation(amount_nanousd=TEN_USD)
    once = fold([moved], _funded_org())
    assert fold([moved, moved], _funded_org()) == once


def test_a_child_missed_after_its_parent_applied_gets_its_credit_on_redelivery() -> None:
    # A worker killed between publishing the parent's balance and the child's.
    moved = builders.allocation(amount_nanousd=TEN_USD)
    once = fold([moved], _funded_org())
    parent_only = {ORG: once[ORG]}
    assert fold([moved], parent_only) == once


def test_a_rejected_transfer_never_credits_the_child_on_redelivery() -> None:
    over = builders.allocation(amount_nanousd=HUNDRED_USD + 1)
    once = fold([over], _funded_org())
    assert WALLET not in fold([over, over], once)


def test_fold_keeps_unchanged_wallets_as_the_same_objects() -> None:
    start = fold([funding(seq=1), funding(wallet_id=ORG, team_id="", seq=2)])
    after = fold([call(producer_id=GATEWAY_A, seq=1)], start)
    assert after[ORG] is start[ORG]
    assert after[WALLET] is not start[WALLET]
    assert fold([funding(seq=1)], start)[WALLET] is start[WALLET]


def test_the_tree_fields_survive_the_published_balance_round_trip() -> None:
    wallets = fold(
        [
            builders.limit_set(wallet_id=ORG, team_id="", overdraft_limit_nanousd=7, seq=2),
            builders.allocation(amount_nanousd=TEN_USD, seq=3),
            builders.allocation(amount_nanousd=HUNDRED_USD, seq=4),  # rejected
            builders.refund(seq=5),
            builders.correction(seq=6, amount_nanousd=-3),
        ],
        _funded_org(),
    )
    for wallet in wallets.values():
        record = to_balance(wallet, event_id=uuid7(T0), occurred_at=T0, producer_id="p", seq=1)
        assert from_balance(codec.decode_as(codec.encode(record), WalletBalance)) == wallet
    assert wallets[ORG].rejected_count == 1
    assert wallets[ORG].revision == wallets[ORG].entry_count + 2  # a rejection and a limit


def test_a_balance_published_with_the_v2_schema_still_reads() -> None:
    import copy
    import io
    import json
    from importlib import resources

    import fastavro
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    source = json.loads(
        (resources.files("schemas") / "avro" / "wallet_balance.v2.avsc").read_text()
    )
    parsed = fastavro.parse_schema(codec._strip_logical_types(copy.deepcopy(source)))
    old = builders.balance()
    body = io.BytesIO()
    names = [f["name"] for f in source["fields"]]
    fastavro.schemaless_writer(body, parsed, {n: old.to_avro()[n] for n in names})
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(source), "CRC-64-AVRO"))
    decoded = codec.decode_as(codec.MAGIC + fp + body.getvalue(), WalletBalance)
    assert decoded == old
    wallet = from_balance(decoded)
    assert (wallet.overdraft_limit_nanousd, wallet.allocated_in_nanousd) == (0, 0)
    assert wallet.revision == wallet.entry_count == 3


def test_latest_prefers_more_changes_when_entry_counts_are_equal() -> None:
    wallet = fold([funding(seq=1)])[WALLET]
    limited = fold([builders.limit_set(seq=2)], {WALLET: wallet})[WALLET]
    published = to_balance(wallet, event_id="e", occurred_at=T0, producer_id="p", seq=1)
    assert logic.latest(limited, published) is limited
    newer = to_balance(limited, event_id="e", occurred_at=T0, producer_id="p", seq=2)
    assert logic.latest(wallet, newer) == limited


def test_a_gateway_may_commit_the_overdraft_limit_too() -> None:
    wallet = fold([funding(amount_nanousd=100, seq=1), builders.limit_set(seq=2)])[WALLET]
    limit = wallet.overdraft_limit_nanousd
    assert logic.available_nanousd(wallet, GATEWAY_A, {}, 30) == 100 + limit - 30
