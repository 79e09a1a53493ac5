"""Quota alerts under at-least-once delivery: late records, duplicates and restarts.

A history is what the quotas processor reads for two team wallets: budget settings from
the admin API and the wallets processor's projections of the month-to-date spend of each
team's wallet and of its keys' wallets,
over a few UTC months. Some records arrive late (after records made after them) and any
record may be delivered again later. Whatever the order, each (wallet, period, threshold)
alerts at most once, and after every record each threshold of the budget in force that
the current period's spend has reached has been alerted, by an alert telling the truth.
Late records of a period the quota has left are ignored by design (see the README).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

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
    threshold_reached,
)
from streams.wallets.logic import month_start_ms

USD = 1_000_000_000
MONTHS = tuple(int(datetime(2025, m, 1, tzinfo=UTC).timestamp()) * 1000 for m in (1, 2, 3, 4))
# wallet id -> (tenant, team)
WALLETS = {"acme/search": ("acme", "search"), "globex/research": ("globex", "research")}
MAX_STEPS = 30
MAX_LATE_RECORDS = 4

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)

thresholds = st.one_of(
    st.just(DEFAULT_THRESHOLDS_PERCENT),
    st.lists(
        st.one_of(st.integers(1, 150), st.integers(1, 1000)), min_size=1, max_size=10, unique=True
    ).map(lambda percents: tuple(sorted(percents))),
)
budgets_nanousd = st.one_of(
    st.just(0), st.integers(1, 200).map(lambda usd: usd * USD), st.integers(1, 10**12)
)


@st.composite
def histories(draw: st.DrawFn) -> list[QuotaEvent]:
    """Records in the order they were made, then a few of them moved later (late)."""
    month = 0
    spent_nanousd: dict[tuple[str, int], int] = defaultdict(int)
    events: list[QuotaEvent] = []
    for tick in range(1, draw(st.integers(0, MAX_STEPS)) + 1):
        kind = draw(st.sampled_from(("spend", "spend", "budget", "next_month")))
        wallet_id = draw(st.sampled_from(sorted(WALLETS)))
        tenant_id, team_id = WALLETS[wallet_id]
        if kind == "next_month":
            month = min(month + 1, len(MONTHS) - 1)
        elif kind == "spend":
            # The team spends from its own wallet or from one of its keys' wallets.
            member = wallet_id + draw(st.sampled_from(("", "/key_1", "/key_2")), label="member")
            spent_nanousd[member, month] += draw(st.integers(1, 60 * USD))
            total = spent_nanousd[member, month]
            events.append(
                SpendObserved(wallet_id, tenant_id, team_id, MONTHS[month], total, member)
            )
        else:
            events.append(
                budget_set(
                    wallet_id=wallet_id,
                    tenant_id=tenant_id,
                    team_id=team_id,
                    budget_nanousd=draw(budgets_nanousd),
                    # Settings are minutes apart: no two share a millisecond.
                    occurred_at=MONTHS[month] + tick * 60_000,
                    thresholds_percent=draw(thresholds),
                )
            )
    for _ in range(draw(st.integers(0, MAX_LATE_RECORDS))):
        if len(events) < 2:
            break
        late = draw(st.integers(0, len(events) - 2), label="late")
        arrives = draw(st.integers(late + 1, len(events) - 1), label="arrives")
        events.insert(arrives, events.pop(late))
    return events


@st.composite
def redelivered(draw: st.DrawFn, history: list[QuotaEvent]) -> list[QuotaEvent]:
    """The history with copies of records delivered again, each after its first delivery."""
    result = list(history)
    for event in history:
        for _ in range(draw(st.integers(0, 2), label="copies")):
            first = next(i for i, seen in enumerate(result) if seen is event)
            result.insert(draw(st.integers(first + 1, len(result)), label="position"), event)
    return result


def period_of(event: QuotaEvent) -> int:
    if isinstance(event, SpendObserved):
        return event.period_start_at
    return month_start_ms(event.occurred_at)


def check_every_step(history: list[QuotaEvent]) -> list[ThresholdCrossed]:
    """Fold record by record, checking each step against what the records say directly:
    the current period is the latest month any record of the wallet names, the budget in
    force is the one set last, the period's spend is the sum over its member wallets (the
    team's and its keys') of the highest projection of each."""
    quotas: dict[str, Quota] = {}
    read: dict[str, list[QuotaEvent]] = defaultdict(list)
    alerted: set[tuple[str, int, int]] = set()
    all_alerts: list[ThresholdCrossed] = []
    for event in history:
        wallet_id = event.wallet_id
        quotas[wallet_id], alerts = evolve(quotas.get(wallet_id), event)
        read[wallet_id].append(event)

        period = max(map(period_of, read[wallet_id]))
        settings_read = [e for e in read[wallet_id] if isinstance(e, BudgetSet)]
        in_force = max(settings_read, key=lambda e: e.occurred_at, default=None)
        budget_nanousd = in_force.budget_nanousd if in_force else 0
        percents = in_force.thresholds_percent if in_force else DEFAULT_THRESHOLDS_PERCENT
        highest: dict[str, int] = defaultdict(int)
        for e in read[wallet_id]:
            if isinstance(e, SpendObserved) and e.period_start_at == period:
                highest[e.member_id] = max(highest[e.member_id], e.period_spent_nanousd)
        spent_nanousd = sum(highest.values())

        crossed = [alert.threshold_percent for alert in alerts]
        assert crossed == sorted(set(crossed)), "one record's alerts ascend"
        for alert in alerts:
            key = (wallet_id, alert.period_start_at, alert.threshold_percent)
            assert key not in alerted, f"alerted twice: {key}"
            alerted.add(key)
            assert alert.period_start_at == period
            assert alert.threshold_percent in percents
            assert (alert.spent_nanousd, alert.budget_nanousd) == (spent_nanousd, budget_nanousd)
            assert threshold_reached(spent_nanousd, budget_nanousd, alert.threshold_percent)
        for percent in percents:
            if threshold_reached(spent_nanousd, budget_nanousd, percent):
                assert (wallet_id, period, percent) in alerted, f"missed {percent}% of {period}"
        all_alerts.extend(alerts)
    return all_alerts


@PROPERTY_SETTINGS
@given(history=histories(), data=st.data())
def test_each_threshold_alerts_once_per_period_and_none_is_missed(
    history: list[QuotaEvent], data: st.DataObject
) -> None:
    delivered = data.draw(redelivered(history))
    assert check_every_step(delivered) == fold(delivered)[1]


@PROPERTY_SETTINGS
@given(history=histories(), data=st.data())
def test_redelivered_records_change_nothing(history: list[QuotaEvent], data: st.DataObject) -> None:
    assert fold(data.draw(redelivered(history))) == fold(history)


@PROPERTY_SETTINGS
@given(history=histories())
def test_folding_the_same_history_twice_gives_the_same_alerts(history: list[QuotaEvent]) -> None:
    assert fold(history) == fold(list(history))


@PROPERTY_SETTINGS
@given(history=histories(), data=st.data())
def test_restart_from_a_snapshot_neither_repeats_nor_misses_alerts(
    history: list[QuotaEvent], data: st.DataObject
) -> None:
    snapshot_at = data.draw(st.integers(0, len(history)), label="snapshot_at")
    # The committed offset may lag the snapshot: records after it are read again.
    resume_at = data.draw(st.integers(0, snapshot_at), label="resume_at")
    before, alerts_before = fold(history[:snapshot_at])
    after, alerts_after = fold(history[resume_at:], before)
    assert (after, alerts_before + alerts_after) == fold(history)
