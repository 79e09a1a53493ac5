"""The quotas adapter's pure parts (in `logic`): the table encoding, budgets from records,
alert records and their derived ids."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from schemas import codec
from schemas.records import QuotaThresholdCrossed
from streams.quotas.logic import (
    Quota,
    ThresholdCrossed,
    alert_id,
    budget_of,
    decode_quota,
    encode_quota,
    evolve,
    spend_observed,
    to_alert,
)
from streams.wallets.logic import from_balance, month_start_ms
from tests.unit import builders
from tests.unit.builders import T0, TEAM, TENANT, WALLET


def test_a_quota_survives_the_table_encoding_exactly() -> None:
    quota = Quota(
        WALLET,
        TENANT,
        TEAM,
        budget_nanousd=100_000_000_000,
        thresholds_percent=(25, 50, 100, 150),
        budget_set_at=T0,
        period_start_at=month_start_ms(T0),
        crossed_percent=frozenset({50, 25}),
        last_spent_nanousd=60_000_000_000,
        member_spent=((WALLET, 45_000_000_000), (f"{WALLET}/key_1", 15_000_000_000)),
    )
    data = encode_quota(quota)
    assert decode_quota(data) == quota
    assert b'"crossed_percent":[25,50]' in data  # sets are stored sorted: stable bytes
    assert decode_quota(encode_quota(Quota(WALLET, TENANT, TEAM))) == Quota(WALLET, TENANT, TEAM)


def test_a_quota_stored_before_key_wallets_counted_is_the_wallets_own_spend() -> None:
    stored = orjson.dumps(
        {
            "wallet_id": WALLET, "tenant_id": TENANT, "team_id": TEAM,
            "budget_nanousd": 100, "thresholds_percent": [50, 80, 100], "budget_set_at": T0,
            "period_start_at": month_start_ms(T0), "crossed_percent": [50],
            "last_spent_nanousd": 60,
        }
    )  # fmt: skip
    assert decode_quota(stored).member_spent == ((WALLET, 60),)


def test_a_budget_record_becomes_the_budget_it_sets() -> None:
    record = builders.budget_set(occurred_at=T0, thresholds_percent=(50, 90))
    budget = budget_of(record)
    assert (budget.wallet_id, budget.tenant_id, budget.team_id) == (WALLET, TENANT, TEAM)
    assert budget.budget_nanousd == 100_000_000_000
    assert budget.thresholds_percent == (50, 90)
    assert budget.occurred_at == T0


@pytest.mark.parametrize(
    "overrides",
    [{"thresholds_percent": (80, 50)}, {"thresholds_percent": ()}, {"budget_nanousd": -1}],
)
def test_a_budget_record_breaking_the_rules_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is budget_set's, tested there
        budget_of(builders.budget_set(**overrides))


def test_a_crossing_becomes_a_quota_threshold_record_that_encodes() -> None:
    crossed = ThresholdCrossed(WALLET, TENANT, TEAM, month_start_ms(T0), 80, 81, 100)
    record = to_alert(crossed, occurred_at=T0)
    assert record.event_type == "quota.threshold"
    assert record.event_id == alert_id(crossed)
    assert (record.tenant_id, record.wallet_id, record.team_id) == (TENANT, WALLET, TEAM)
    assert (record.threshold_percent, record.spent_nanousd, record.budget_nanousd) == (80, 81, 100)
    assert record.period_start_at == month_start_ms(T0)
    sealed = codec.HashChain("streams-quotas-1").seal(record)
    assert codec.decode_as(codec.encode(sealed), QuotaThresholdCrossed) == sealed


def test_a_balance_and_a_budget_fold_to_the_alerts_the_agent_publishes() -> None:
    spent = 2 * (1_200 * 150 + 350 * 600)
    balance = builders.balance(period_start_at=month_start_ms(T0), period_spent_nanousd=spent)
    quota, alerts = evolve(None, spend_observed(from_balance(balance)))
    assert alerts == ()
    budget = builders.budget_set(occurred_at=T0 + 1, budget_nanousd=spent)  # spend = 100 %
    quota, alerts = evolve(decode_quota(encode_quota(quota)), budget_of(budget))
    assert [a.threshold_percent for a in alerts] == [50, 80, 100]
    assert decode_quota(encode_quota(quota)).crossed_percent == {50, 80, 100}


def _crossing(**overrides: int) -> ThresholdCrossed:
    fields = {
        "period_start_at": month_start_ms(T0),
        "threshold_percent": 80,
        "spent_nanousd": 81,
        "budget_nanousd": 100,
    }
    fields.update(overrides)
    return ThresholdCrossed(WALLET, TENANT, TEAM, **fields)


def test_the_same_crossing_gets_the_same_alert_id_whenever_it_is_emitted() -> None:
    first = to_alert(_crossing(), occurred_at=T0)
    # A redelivered record crosses again later, perhaps seen with more spend: same crossing.
    again = to_alert(_crossing(spent_nanousd=95), occurred_at=T0 + 60_000)
    assert first.event_id == again.event_id
    assert str(uuid.UUID(first.event_id)) == first.event_id  # a canonical UUID string
    sealed = codec.HashChain("streams-quotas-2").seal(again)
    assert codec.decode_as(codec.encode(sealed), QuotaThresholdCrossed).event_id == first.event_id


def test_a_different_period_threshold_or_wallet_is_a_different_alert_id() -> None:
    april = month_start_ms(T0 + 31 * 86_400_000)
    ids = {
        alert_id(_crossing()),
        alert_id(_crossing(period_start_at=april)),
        alert_id(_crossing(threshold_percent=100)),
        alert_id(
            ThresholdCrossed(f"{TENANT}/other", TENANT, "other", month_start_ms(T0), 80, 81, 100)
        ),
    }
    assert len(ids) == 4


def test_a_redelivered_record_after_a_crash_repeats_the_alert_with_the_same_id() -> None:
    # The worker sent the alert, then died before writing the table: the redelivered
    # record is folded from the same stored quota and crosses the same threshold again.
    budget = budget_of(builders.budget_set(occurred_at=T0, budget_nanousd=1_000))
    stored, _ = evolve(None, budget)
    balance = builders.balance(period_start_at=month_start_ms(T0), period_spent_nanousd=850)
    observed = spend_observed(from_balance(balance))
    _, first = evolve(decode_quota(encode_quota(stored)), observed)
    _, again = evolve(decode_quota(encode_quota(stored)), observed)
    assert [a.threshold_percent for a in first] == [50, 80]
    assert [to_alert(a, occurred_at=T0).event_id for a in first] == [
        to_alert(a, occurred_at=T0 + 5).event_id for a in again
    ]
