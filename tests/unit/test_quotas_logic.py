"""Quotas: given budgets and spend, then the threshold alerts, each once."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.money import MAX_NANOUSD, usd_to_nanousd
from streams.quotas.logic import (
    DEFAULT_THRESHOLDS_PERCENT,
    BudgetSet,
    Quota,
    QuotaEvent,
    SpendObserved,
    ThresholdCrossed,
    budget_set,
    evolve,
    fold,
    observations_of,
    spend_observed,
    threshold_reached,
)
from streams.wallets import logic as wallets
from streams.wallets.logic import month_start_ms
from tests.unit import builders
from tests.unit.builders import T0, TEAM, TENANT, WALLET

HUNDRED_USD = usd_to_nanousd("100")
MARCH = month_start_ms(T0)
APRIL = int(datetime(2025, 4, 1, tzinfo=UTC).timestamp()) * 1000
MID_MARCH = int(datetime(2025, 3, 15, 9, 30, tzinfo=UTC).timestamp()) * 1000
MID_APRIL = int(datetime(2025, 4, 15, 9, 30, tzinfo=UTC).timestamp()) * 1000


def budget(
    usd: str = "100", *, at: int = T0, thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS_PERCENT
) -> BudgetSet:
    return budget_set(
        wallet_id=WALLET,
        tenant_id=TENANT,
        team_id=TEAM,
        budget_nanousd=usd_to_nanousd(usd),
        occurred_at=at,
        thresholds_percent=thresholds,
    )


def spent(usd: str, *, period: int = MARCH) -> SpendObserved:
    return SpendObserved(WALLET, TENANT, TEAM, period, usd_to_nanousd(usd))


def alerted(alerts: list[ThresholdCrossed] | tuple[ThresholdCrossed, ...]) -> list[int]:
    return [alert.threshold_percent for alert in alerts]


def test_reaching_half_the_budget_alerts_50_percent_with_the_numbers() -> None:
    _, alerts = fold([budget("100"), spent("30"), spent("50")])
    assert alerts == [
        ThresholdCrossed(
            wallet_id=WALLET,
            tenant_id=TENANT,
            team_id=TEAM,
            period_start_at=MARCH,
            threshold_percent=50,
            spent_nanousd=usd_to_nanousd("50"),
            budget_nanousd=HUNDRED_USD,
        )
    ]


def test_threshold_boundary_is_exact_to_the_nano_dollar() -> None:
    assert threshold_reached(usd_to_nanousd("50"), HUNDRED_USD, 50)
    assert not threshold_reached(usd_to_nanousd("49.999999999"), HUNDRED_USD, 50)
    # 1/3 of a 10-nano-dollar budget: 3.33 nano-dollars are not 4.
    assert threshold_reached(4, 10, 33)
    assert not threshold_reached(3, 10, 33)
    # Integers at any size: a float would call these equal.
    assert not threshold_reached(MAX_NANOUSD - 1, MAX_NANOUSD, 100)
    assert threshold_reached(MAX_NANOUSD, MAX_NANOUSD, 100)


def test_no_budget_means_no_alerts() -> None:
    assert not threshold_reached(usd_to_nanousd("1000"), 0, 1)
    quotas, alerts = fold([spent("20"), spent("5000")])
    assert alerts == []
    assert quotas[WALLET].budget_nanousd == 0
    _, alerts = fold([budget("100"), spent("90"), budget("0"), spent("500")])
    assert alerted(alerts) == [50, 80]


def test_one_observation_past_several_thresholds_alerts_them_all_in_ascending_order() -> None:
    _, alerts = fold([budget("100"), spent("10"), spent("104.50")])
    assert alerted(alerts) == [50, 80, 100]
    assert {a.spent_nanousd for a in alerts} == {usd_to_nanousd("104.50")}


def test_each_threshold_alerts_once_per_period_as_spend_grows() -> None:
    history: list[QuotaEvent] = [
        budget("100"),
        spent("55"),
        spent("60"),
        spent("81"),
        spent("95"),
        spent("130"),
    ]
    _, alerts = fold(history)
    assert alerted(alerts) == [50, 80, 100]
    assert [a.spent_nanousd for a in alerts] == [usd_to_nanousd(x) for x in ("55", "81", "130")]


def test_the_same_observation_twice_emits_nothing_the_second_time() -> None:
    quota, first = evolve(evolve(None, budget("100"))[0], spent("85"))
    assert alerted(first) == [50, 80]
    again, second = evolve(quota, spent("85"))
    assert second == ()
    assert again is quota


def test_an_older_projection_of_the_period_changes_nothing() -> None:
    quotas, _ = fold([budget("100"), spent("85")])
    quota = quotas[WALLET]
    assert evolve(quota, spent("40")) == (quota, ())
    assert quota.last_spent_nanousd == usd_to_nanousd("85")


def test_a_newer_period_starts_clean_and_may_alert_at_once() -> None:
    quotas, alerts = fold([budget("100"), spent("85"), spent("60", period=APRIL)])
    assert [(a.period_start_at, a.threshold_percent) for a in alerts] == [
        (MARCH, 50),
        (MARCH, 80),
        (APRIL, 50),
    ]
    quota = quotas[WALLET]
    assert (quota.period_start_at, quota.crossed_percent) == (APRIL, frozenset({50}))
    assert quota.last_spent_nanousd == usd_to_nanousd("60")


def test_a_late_observation_of_an_older_period_changes_nothing() -> None:
    quotas, _ = fold([budget("100"), spent("20", period=APRIL)])
    quota = quotas[WALLET]
    # March's last settlements reach the quota after April's first: March is closed.
    assert evolve(quota, spent("99", period=MARCH)) == (quota, ())


def test_lowering_the_budget_mid_period_alerts_what_it_puts_the_spend_past_and_no_more() -> None:
    quotas, alerts = fold([budget("100", at=T0), spent("60"), budget("70", at=MID_MARCH)])
    # $60 of $70 is 85.7 %: 80 alerts at once; 50 alerted already at $60 of $100.
    assert [(a.threshold_percent, a.budget_nanousd) for a in alerts] == [
        (50, HUNDRED_USD),
        (80, usd_to_nanousd("70")),
    ]
    assert alerts[-1].spent_nanousd == usd_to_nanousd("60")
    assert quotas[WALLET].crossed_percent == {50, 80}


def test_raising_the_budget_mid_period_un_alerts_nothing() -> None:
    history: list[QuotaEvent] = [
        budget("100", at=T0),
        spent("85"),
        budget("200", at=MID_MARCH),
        spent("150"),
    ]
    quotas, alerts = fold(history)
    # $150 of $200 is 75 %: below 80, but 50 and 80 were alerted this period and stay so.
    assert alerted(alerts) == [50, 80]
    assert quotas[WALLET].crossed_percent == {50, 80}
    # Back to $100: 50 and 80 are not alerted again; 100 is, at once.
    _, more = fold([budget("100", at=MID_MARCH + 1)], quotas)
    assert alerted(more) == [100]


def test_changing_the_thresholds_mid_period_alerts_only_new_ones() -> None:
    history: list[QuotaEvent] = [
        budget("100", at=T0),
        spent("85"),
        budget("100", at=MID_MARCH, thresholds=(25, 50, 75, 90)),
        spent("91"),
        budget("100", at=MID_MARCH + 1, thresholds=(50, 80, 100)),
    ]
    quotas, alerts = fold(history)
    assert alerted(alerts) == [50, 80, 25, 75, 90]
    assert quotas[WALLET].crossed_percent == {25, 50, 75, 80, 90}


def test_setting_a_budget_on_spend_already_past_it_alerts_at_once() -> None:
    _, alerts = fold([spent("85"), budget("100", at=MID_MARCH)])
    assert alerted(alerts) == [50, 80]
    assert {a.spent_nanousd for a in alerts} == {usd_to_nanousd("85")}


def test_a_redelivered_older_budget_changes_nothing() -> None:
    quotas, _ = fold([budget("100", at=T0), budget("500", at=MID_MARCH), spent("300")])
    quota = quotas[WALLET]
    assert evolve(quota, budget("100", at=T0)) == (quota, ())
    assert quota.budget_nanousd == usd_to_nanousd("500")
    assert evolve(quota, budget("500", at=MID_MARCH)) == (quota, ())


def test_a_budget_set_in_a_later_month_opens_that_month_clean() -> None:
    quotas, alerts = fold([budget("100", at=T0), spent("60"), budget("50", at=MID_APRIL)])
    # March's $60 is not judged against a budget set in April.
    assert alerted(alerts) == [50]
    quota = quotas[WALLET]
    assert (quota.period_start_at, quota.crossed_percent, quota.last_spent_nanousd) == (
        APRIL,
        frozenset(),
        0,
    )
    assert evolve(quota, spent("70", period=MARCH)) == (quota, ())
    _, april = evolve(quota, spent("30", period=APRIL))
    assert [(a.period_start_at, a.threshold_percent) for a in april] == [(APRIL, 50)]


def test_wallets_are_independent() -> None:
    other = SpendObserved("globex/research", "globex", "research", MARCH, usd_to_nanousd("90"))
    quotas, alerts = fold([budget("100"), other, spent("90")])
    assert [(a.wallet_id, a.threshold_percent) for a in alerts] == [(WALLET, 50), (WALLET, 80)]
    assert quotas["globex/research"].budget_nanousd == 0


def test_the_quota_follows_the_wallets_projection() -> None:
    history = [
        builders.funding(amount_nanousd=HUNDRED_USD),
        builders.call(seq=10, occurred_at=T0, cost_nanousd=usd_to_nanousd("45")),
        builders.call(seq=11, occurred_at=T0 + 60_000, cost_nanousd=usd_to_nanousd("40")),
    ]
    wallet = wallets.fold(history)[WALLET]
    observed = spend_observed(wallet)
    assert observed == SpendObserved(WALLET, TENANT, TEAM, MARCH, usd_to_nanousd("85"), WALLET)
    _, alerts = fold([budget("100"), observed])
    assert alerted(alerts) == [50, 80]


def test_a_wallet_that_never_spent_is_observed_as_nothing() -> None:
    never_spent = wallets.fold([builders.funding()])[WALLET]
    quota, alerts = evolve(None, spend_observed(never_spent))
    assert alerts == ()
    assert quota == Quota(WALLET, TENANT, TEAM)


def test_budget_set_takes_the_default_thresholds() -> None:
    setting = budget_set(
        wallet_id=WALLET, tenant_id=TENANT, team_id=TEAM, budget_nanousd=1, occurred_at=T0
    )
    assert setting.thresholds_percent == (50, 80, 100)
    assert budget_set(
        wallet_id=WALLET,
        tenant_id=TENANT,
        team_id=TEAM,
        budget_nanousd=0,
        occurred_at=T0,
        thresholds_percent=[1, 2, 3, 4, 5, 6, 7, 8, 9, 1000],
    ).thresholds_percent == (1, 2, 3, 4, 5, 6, 7, 8, 9, 1000)


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ((), "at least one"),
        ((0, 50), "outside 1..1000%"),
        ((50, 1001), "outside 1..1000%"),
        ((-5,), "outside"),
        ((80, 50), "strictly increasing"),
        ((50, 50, 100), "strictly increasing"),
        (tuple(range(10, 120, 10)), "at most 10"),
        ((50.0, 100), "not a whole percentage"),
        ((True, 100), "not a whole percentage"),
    ],
)
def test_budget_set_rejects_bad_thresholds(thresholds: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        budget_set(
            wallet_id=WALLET,
            tenant_id=TENANT,
            team_id=TEAM,
            budget_nanousd=HUNDRED_USD,
            occurred_at=T0,
            thresholds_percent=thresholds,
        )


@pytest.mark.parametrize(
    ("ids", "budget_nanousd"),
    [
        ((WALLET, TENANT, TEAM), -1),
        ((WALLET, TENANT, TEAM), MAX_NANOUSD + 1),
        ((WALLET, TENANT, TEAM), 1.5),
        (("", TENANT, TEAM), HUNDRED_USD),
        ((WALLET, "", TEAM), HUNDRED_USD),
        ((WALLET, TENANT, ""), HUNDRED_USD),
    ],
)
def test_budget_set_rejects_bad_budgets_and_missing_ids(
    ids: tuple[str, str, str], budget_nanousd: Any
) -> None:
    wallet_id, tenant_id, team_id = ids
    with pytest.raises(ValueError, match="budget"):
        budget_set(
            wallet_id=wallet_id,
            tenant_id=tenant_id,
            team_id=team_id,
            budget_nanousd=budget_nanousd,
            occurred_at=T0,
        )


def test_records_built_around_the_validation_are_programmer_errors() -> None:
    with pytest.raises(AssertionError):
        BudgetSet(WALLET, TENANT, TEAM, HUNDRED_USD, (80, 50), T0)
    with pytest.raises(AssertionError):
        SpendObserved(WALLET, TENANT, TEAM, MARCH + 1, 0)
    with pytest.raises(AssertionError):
        evolve(Quota("globex/research", "globex", "research"), spent("1"))


KEY_WALLET = f"{WALLET}/key_0193a1b2"


def key_spent(usd: str, *, key: str = KEY_WALLET, period: int = MARCH) -> SpendObserved:
    """A key wallet's projection, counted towards its team's quota."""
    return SpendObserved(WALLET, TENANT, TEAM, period, usd_to_nanousd(usd), key)


def test_a_teams_budget_counts_what_its_keys_spend_from_their_own_wallets() -> None:
    other_key = f"{WALLET}/key_2"
    _, alerts = fold([budget("100"), spent("30"), key_spent("15"), key_spent("35", key=other_key)])
    assert [(a.threshold_percent, a.spent_nanousd) for a in alerts] == [
        (50, usd_to_nanousd("80")),
        (80, usd_to_nanousd("80")),
    ]


def test_each_wallet_counts_once_however_often_its_projection_comes() -> None:
    quota, alerts = fold([budget("100"), key_spent("40"), key_spent("40"), key_spent("45")])
    assert alerted(alerts) == [] and quota[WALLET].last_spent_nanousd == usd_to_nanousd("45")
    quota, alerts = fold([key_spent("10")], quota)  # an older projection of the same key
    assert alerts == [] and quota[WALLET].last_spent_nanousd == usd_to_nanousd("45")
    quota, alerts = fold([spent("5")], quota)
    assert alerted(alerts) == [50]


def test_a_new_month_of_one_member_starts_the_team_clean() -> None:
    quota, _ = fold([budget("100"), spent("60"), key_spent("30")])
    quota, alerts = fold([key_spent("10", period=APRIL)], quota)
    assert quota[WALLET].member_spent == ((KEY_WALLET, usd_to_nanousd("10")),)
    quota, alerts = fold([key_spent("25", period=MARCH)], quota)  # the old month, late
    assert alerts == [] and quota[WALLET].last_spent_nanousd == usd_to_nanousd("10")


def test_a_key_wallets_projection_counts_towards_itself_and_its_team() -> None:
    history = [
        builders.funding(amount_nanousd=HUNDRED_USD),
        builders.call(seq=10, occurred_at=T0, cost_nanousd=usd_to_nanousd("45")),
    ]
    team = wallets.fold(history)[WALLET]
    key = dataclasses.replace(team, wallet_id=KEY_WALLET)
    assert observations_of(team) == (spend_observed(team),)
    own, up = observations_of(key)
    assert (own.wallet_id, own.member_id) == (KEY_WALLET, KEY_WALLET)
    assert (up.wallet_id, up.member_id) == (WALLET, KEY_WALLET)
    assert up.period_spent_nanousd == usd_to_nanousd("45")
