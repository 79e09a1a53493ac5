"""Quota thresholds per wallet. Pure: no I/O, no clock, no ids.

A wallet may have a monthly budget. Its owner wants to hear, once, when the month's spend
reaches each of a few shares of it (by default 50, 80 and 100 percent), in time to act and
without being paged again for the same news. Two kinds of record are folded: `BudgetSet`,
a control event giving a wallet its budget and thresholds from a moment on, and
`SpendObserved`, the wallets processor's projection of the same wallet (spend in its
current UTC month). `evolve` returns the quota after a record and the `quota.threshold`
alerts the record causes; the processor publishes them, and replay folds the same records
into the same alerts.

Records arrive at least once, and the two sources interleave in any order, so every
repeat must be a no-op. The quota remembers which thresholds it has alerted in its period,
and only a newer period starts clean:
- spend within a period only grows, so a projection at or below the spend seen adds nothing;
- a projection of an older period than the quota's (a late record) changes nothing;
- a budget record is applied once: the quota keeps, per producer, the highest `seq` of
  a budget it applied (`budget_seqs`), and a budget at or below it (a redelivery, or a
  resend from the admin API's outbox however late) changes nothing. One producer's
  records for one tenant stay in `seq` order (one partition, forwarded in order);
- a budget set earlier than the one in force changes nothing either.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

import orjson

from schemas.money import MAX_NANOUSD
from schemas.records import QuotaThresholdCrossed, WalletBudgetSet
from streams.wallets.logic import MAX_DEPTH as KEY_DEPTH
from streams.wallets.logic import Wallet, month_start_ms, parent_wallet_id, path_of

DEFAULT_THRESHOLDS_PERCENT: tuple[int, ...] = (50, 80, 100)
# Alerting past the budget is useful (overspend is allowed, see the wallets); past ten
# times the budget it is a typo. Ten thresholds are more than anyone reads.
MIN_THRESHOLD_PERCENT = 1
MAX_THRESHOLD_PERCENT = 1_000
MAX_THRESHOLDS = 10
# Admin producers whose budget watermark a quota keeps (a producer id is new at each admin
# API start). Past it one is forgotten: a late copy of its records is then judged by
# `occurred_at` alone, which only misjudges a copy of a setting made in the same
# millisecond as a newer one.
MAX_BUDGET_PRODUCERS = 64


def _thresholds_problem(thresholds_percent: Sequence[int]) -> str | None:
    """Why thresholds are unusable, or None. Strictly increasing, so alerts come out in
    ascending order and no threshold is listed twice."""
    if not thresholds_percent:
        return "at least one threshold is needed (a budget of 0 means no alerts)"
    if len(thresholds_percent) > MAX_THRESHOLDS:
        return f"at most {MAX_THRESHOLDS} thresholds, got {len(thresholds_percent)}"
    for threshold in thresholds_percent:
        if type(threshold) is not int:
            return f"threshold {threshold!r} is not a whole percentage"
        if not MIN_THRESHOLD_PERCENT <= threshold <= MAX_THRESHOLD_PERCENT:
            return (
                f"threshold {threshold}% is outside "
                f"{MIN_THRESHOLD_PERCENT}..{MAX_THRESHOLD_PERCENT}%"
            )
    if any(lower >= higher for lower, higher in pairwise(thresholds_percent)):
        return f"thresholds must be strictly increasing, got {list(thresholds_percent)}"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class BudgetSet:
    """A wallet's monthly budget and thresholds from `occurred_at` on; 0 means no budget.
    It carries the whole setting, thresholds included, so each record stands on its own
    in replay and in a compacted topic. Build one from input with `budget_set`."""

    wallet_id: str
    tenant_id: str
    team_id: str
    budget_nanousd: int
    thresholds_percent: tuple[int, ...]
    occurred_at: int
    producer_id: str = ""
    seq: int = 0
    """The record's producer and seq (0: unsealed, no watermark), to apply it once."""

    def __post_init__(self) -> None:
        assert self.wallet_id and self.tenant_id and self.team_id, "a budget names its wallet"
        assert self.seq >= 0, "seqs count from 1; 0 is unsealed"
        assert 0 <= self.budget_nanousd <= MAX_NANOUSD, "budgets are validated by budget_set"
        assert _thresholds_problem(self.thresholds_percent) is None, (
            "thresholds are validated by budget_set"
        )
        assert self.occurred_at >= 0, "occurred_at is epoch ms"


@dataclasses.dataclass(frozen=True, slots=True)
class SpendObserved:
    """A wallet's spend in its current period, as the wallets processor projects it,
    counted towards the quota of `wallet_id`: the wallet's own (`member_id` is the same
    wallet) or its team's, for a key wallet's spend (see `observations_of`)."""

    wallet_id: str
    tenant_id: str
    team_id: str
    period_start_at: int
    period_spent_nanousd: int
    member_id: str = ""

    def __post_init__(self) -> None:
        assert self.wallet_id, "a projection names its wallet"
        assert self.member_id in ("", self.wallet_id) or (
            parent_wallet_id(self.member_id) == self.wallet_id
        ), "spend counts towards the wallet itself or its parent"
        assert self.period_spent_nanousd >= 0, "period spend is a sum of debits"
        assert month_start_ms(self.period_start_at) == self.period_start_at, (
            "a period starts a UTC month"
        )


QuotaEvent = BudgetSet | SpendObserved


@dataclasses.dataclass(frozen=True, slots=True)
class ThresholdCrossed:
    """The `quota.threshold` alert: the period's spend reached `threshold_percent` of the
    budget. Emitted at most once per (wallet, period, threshold)."""

    wallet_id: str
    tenant_id: str
    team_id: str
    period_start_at: int
    threshold_percent: int
    spent_nanousd: int
    budget_nanousd: int


@dataclasses.dataclass(frozen=True, slots=True)
class Quota:
    """One wallet's budget in force and what its current period has alerted.

    `period_start_at` is the latest UTC month the quota has heard of, from a projection or
    from a budget set in that month; `member_spent` is, per wallet counted towards it (the
    wallet itself and, for a team, its key wallets), the highest spend seen in that period,
    sorted by wallet; `last_spent_nanousd` is their sum, and `crossed_percent` the
    thresholds alerted in the period, kept across budget and threshold changes so none
    alerts twice. `budget_set_at` is when the budget in force was set (0: never).
    Bounded: at most the 1000 possible thresholds are remembered, and one spend per wallet
    of the team that spent this period.
    """

    wallet_id: str
    tenant_id: str
    team_id: str
    budget_nanousd: int = 0
    thresholds_percent: tuple[int, ...] = DEFAULT_THRESHOLDS_PERCENT
    budget_set_at: int = 0
    period_start_at: int = 0
    crossed_percent: frozenset[int] = frozenset()
    last_spent_nanousd: int = 0
    member_spent: tuple[tuple[str, int], ...] = ()
    budget_seqs: tuple[tuple[str, int], ...] = ()
    """Per producer, the highest `seq` of a budget record applied, sorted by producer."""

    def __post_init__(self) -> None:
        assert self.wallet_id, "a quota belongs to a wallet"
        assert list(self.budget_seqs) == sorted(dict(self.budget_seqs).items()), (
            "one watermark per producer, sorted"
        )
        assert len(self.budget_seqs) <= MAX_BUDGET_PRODUCERS, "watermarks are bounded"
        assert 0 <= self.budget_nanousd <= MAX_NANOUSD, "budgets are validated by budget_set"
        assert _thresholds_problem(self.thresholds_percent) is None, "thresholds are validated"
        assert all(
            MIN_THRESHOLD_PERCENT <= t <= MAX_THRESHOLD_PERCENT for t in self.crossed_percent
        ), "only valid thresholds are ever crossed"
        assert self.last_spent_nanousd >= 0, "period spend is a sum of debits"
        assert not self.member_spent or self.last_spent_nanousd == sum(
            spent for _, spent in self.member_spent
        ), "the period spend is the sum of the members' spend"
        assert month_start_ms(self.budget_set_at) <= self.period_start_at, (
            "a budget set in a month opens that month's period"
        )


def threshold_reached(spent_nanousd: int, budget_nanousd: int, threshold_percent: int) -> bool:
    """Whether spend has reached a percentage of a budget. Integers, so the boundary is
    exact at any size (a float loses nano-dollars past about $9M). No budget, no alert."""
    return budget_nanousd > 0 and spent_nanousd * 100 >= budget_nanousd * threshold_percent


def budget_set(
    *,
    wallet_id: str,
    tenant_id: str,
    team_id: str,
    budget_nanousd: int,
    occurred_at: int,
    thresholds_percent: Sequence[int] = DEFAULT_THRESHOLDS_PERCENT,
    producer_id: str = "",
    seq: int = 0,
) -> BudgetSet:
    """A budget setting from input (the admin API); a ValueError says what is wrong.
    Thresholds left out are the defaults, not the wallet's previous ones: the record says
    everything in force after it. `occurred_at` comes from the caller's clock, not input."""
    if not (wallet_id and tenant_id and team_id):
        raise ValueError("a budget needs a wallet, a tenant and a team")
    if type(budget_nanousd) is not int or not 0 <= budget_nanousd <= MAX_NANOUSD:
        raise ValueError(f"budget must be 0 (none) or positive nano-USD: {budget_nanousd!r}")
    problem = _thresholds_problem(thresholds_percent)
    if problem is not None:
        raise ValueError(problem)
    if type(seq) is not int or seq < 0:
        raise ValueError(f"seq must be a non-negative integer: {seq!r}")
    return BudgetSet(
        wallet_id,
        tenant_id,
        team_id,
        budget_nanousd,
        tuple(thresholds_percent),
        occurred_at,
        producer_id,
        seq,
    )


def spend_observed(wallet: Wallet) -> SpendObserved:
    """What a wallet projection says about its own quota's period spend."""
    return SpendObserved(
        wallet.wallet_id,
        wallet.tenant_id,
        wallet.team_id,
        wallet.period_start_at,
        wallet.period_spent_nanousd,
        wallet.wallet_id,
    )


def rolled_up(wallet: Wallet) -> SpendObserved | None:
    """A key wallet's spend counted towards its team's quota (a team's budget covers what
    its keys spend from their own wallets); None for a team or org wallet."""
    if len(path_of(wallet.wallet_id)) != KEY_DEPTH:
        return None
    team_wallet = parent_wallet_id(wallet.wallet_id)
    assert team_wallet is not None, "a key wallet has a team"
    return dataclasses.replace(spend_observed(wallet), wallet_id=team_wallet)


def observations_of(wallet: Wallet) -> tuple[SpendObserved, ...]:
    """Every quota a wallet projection counts towards: its own, and its team's for a key."""
    up = rolled_up(wallet)
    return (spend_observed(wallet),) if up is None else (spend_observed(wallet), up)


def evolve(quota: Quota | None, event: QuotaEvent) -> tuple[Quota, tuple[ThresholdCrossed, ...]]:
    """The quota after a record, and the alerts it causes in ascending threshold order:
    every threshold of the budget in force that the period's spend has reached and that
    this period has not alerted yet. A record that changes nothing (a repeat, a late one)
    returns the same quota and no alerts."""
    if quota is None:
        quota = Quota(event.wallet_id, event.tenant_id, event.team_id)
    assert quota.wallet_id == event.wallet_id, "record applied to another wallet's quota"
    if isinstance(event, BudgetSet):
        after = _with_budget(quota, event)
    else:
        after = _with_spend(quota, event)
    reached = tuple(
        threshold
        for threshold in after.thresholds_percent
        if threshold not in after.crossed_percent
        and threshold_reached(after.last_spent_nanousd, after.budget_nanousd, threshold)
    )
    if not reached:
        return (quota, ()) if after == quota else (after, ())
    alerts = tuple(
        ThresholdCrossed(
            after.wallet_id,
            after.tenant_id,
            after.team_id,
            after.period_start_at,
            threshold,
            after.last_spent_nanousd,
            after.budget_nanousd,
        )
        for threshold in reached
    )
    return dataclasses.replace(after, crossed_percent=after.crossed_percent | set(reached)), alerts


def fold(
    events: Iterable[QuotaEvent], quotas: Mapping[str, Quota] | None = None
) -> tuple[dict[str, Quota], list[ThresholdCrossed]]:
    """Apply records in order to a set of quotas: what the processor and replay both do.
    The alerts come in the order the records caused them."""
    result = dict(quotas or {})
    alerts: list[ThresholdCrossed] = []
    for event in events:
        result[event.wallet_id], caused = evolve(result.get(event.wallet_id), event)
        alerts.extend(caused)
    return result, alerts


def budget_applied(quota: Quota, budget: BudgetSet) -> bool:
    """Whether the quota applied this budget record (or a later one of its producer)."""
    return budget.seq > 0 and dict(quota.budget_seqs).get(budget.producer_id, 0) >= budget.seq


def _with_budget(quota: Quota, budget: BudgetSet) -> Quota:
    """A budget record applied before changes nothing (watermark). A budget set later than
    the one in force replaces it; within the quota's period it is judged against the
    spend seen so far (by `evolve`), so lowering it alerts at once what it puts the spend
    past, and raising it un-alerts nothing. A budget set in a month after the quota's
    period opens that month clean: the old month's spend is not judged against a budget
    set after it ended."""
    if budget_applied(quota, budget):
        return quota
    if budget.seq > 0:
        seqs = dict(quota.budget_seqs)
        seqs[budget.producer_id] = budget.seq
        while len(seqs) > MAX_BUDGET_PRODUCERS:  # the lowest watermark goes first
            del seqs[min(seqs, key=lambda producer: (seqs[producer], producer))]
        quota = dataclasses.replace(quota, budget_seqs=tuple(sorted(seqs.items())))
    if budget.occurred_at < quota.budget_set_at:
        return quota
    period_start_at = month_start_ms(budget.occurred_at)
    if period_start_at > quota.period_start_at:
        quota = dataclasses.replace(
            quota,
            period_start_at=period_start_at,
            crossed_percent=frozenset(),
            last_spent_nanousd=0,
            member_spent=(),
        )
    return dataclasses.replace(
        quota,
        budget_nanousd=budget.budget_nanousd,
        thresholds_percent=budget.thresholds_percent,
        budget_set_at=budget.occurred_at,
    )


def _with_spend(quota: Quota, observed: SpendObserved) -> Quota:
    """A newer period starts clean; in the current one each member wallet keeps its
    highest spend seen, and the period spend is their sum; an older period (a late
    record) changes nothing."""
    member = observed.member_id or observed.wallet_id
    spent = observed.period_spent_nanousd
    if observed.period_start_at > quota.period_start_at:
        return dataclasses.replace(
            quota,
            period_start_at=observed.period_start_at,
            crossed_percent=frozenset(),
            last_spent_nanousd=spent,
            member_spent=((member, spent),),
        )
    members = dict(quota.member_spent)
    if observed.period_start_at < quota.period_start_at or spent <= members.get(member, 0):
        return quota
    members[member] = spent
    return dataclasses.replace(
        quota,
        last_spent_nanousd=sum(members.values()),
        member_spent=tuple(sorted(members.items())),
    )


# --- records in and out (used by the agent; pure: the caller brings the clock) -----------

# The namespace of quota alert ids: uuid5 of it and a crossing's identity (see alert_id).
ALERT_ID_NAMESPACE = uuid.UUID("6f1d3c52-5b0e-4a53-9a57-0c7f4b8e2d10")


def alert_id(crossed: ThresholdCrossed) -> str:
    """The event id of a crossing's `quota.threshold` record, derived from what makes it
    the same crossing: (wallet, period, threshold), alerted at most once (see `evolve`).
    A record redelivered after a crash crosses the same threshold again, and its alert
    carries the same id, so the sink's event-id dedupe keeps one row. A UUID (version 5),
    as the schema and the sink expect; not time-ordered, unlike the gateway's UUIDv7."""
    name = f"quota.threshold/{crossed.wallet_id}/{crossed.period_start_at}/"
    return str(uuid.uuid5(ALERT_ID_NAMESPACE, name + str(crossed.threshold_percent)))


def to_alert(crossed: ThresholdCrossed, *, occurred_at: int) -> QuotaThresholdCrossed:
    """The `quota.threshold` record of a crossing, with its derived id; the chain seals it."""
    return QuotaThresholdCrossed(
        event_id=alert_id(crossed),
        event_type=QuotaThresholdCrossed.event_type_name,
        occurred_at=occurred_at,
        tenant_id=crossed.tenant_id,
        wallet_id=crossed.wallet_id,
        team_id=crossed.team_id,
        period_start_at=crossed.period_start_at,
        threshold_percent=crossed.threshold_percent,
        spent_nanousd=crossed.spent_nanousd,
        budget_nanousd=crossed.budget_nanousd,
    )


def budget_of(record: WalletBudgetSet) -> BudgetSet:
    """The budget a control record sets; ValueError when the record breaks the rules the
    admin API checks (a record written some other way)."""
    return budget_set(
        wallet_id=record.wallet_id,
        tenant_id=record.tenant_id,
        team_id=record.team_id,
        budget_nanousd=record.budget_nanousd,
        occurred_at=record.occurred_at,
        thresholds_percent=record.thresholds_percent,
        producer_id=record.producer_id,
        seq=record.seq,
    )


def encode_quota(quota: Quota) -> bytes:
    """A quota as the processor's table keeps it: JSON of its fields, sets sorted."""
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(quota):
        value = getattr(quota, field.name)
        fields[field.name] = sorted(value) if isinstance(value, frozenset) else value
    return orjson.dumps(fields)


def decode_quota(data: bytes) -> Quota:
    """The quota `encode_quota` wrote."""
    fields = orjson.loads(data)
    fields["thresholds_percent"] = tuple(fields["thresholds_percent"])
    fields["crossed_percent"] = frozenset(fields["crossed_percent"])
    # Quotas stored before key wallets counted towards their team have no members: their
    # spend was the wallet's own.
    members = fields.get("member_spent") or [[fields["wallet_id"], fields["last_spent_nanousd"]]]
    fields["member_spent"] = tuple((str(m), int(n)) for m, n in members if n > 0)
    # Quotas stored before budgets were watermarked have none.
    fields["budget_seqs"] = tuple((str(p), int(n)) for p, n in fields.get("budget_seqs", ()))
    return Quota(**fields)
