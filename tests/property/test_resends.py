"""Resent records change nothing, in every processor's fold.

A gateway's (or the admin API's) outbox sends again any record the store has not
confirmed: the same sealed record, same event id, producer and seq, after a timeout or a
restart, so a copy may arrive long after the original, between newer records of the same
producer. Each history here is what one processor reads, in the order producers sent it
(each producer's records for one tenant in seq order); resends are copies of records
inserted anywhere after their original. Folding the history with its resends must give
exactly what folding it without them gives: the same state, the same outputs (quota
alerts, SLA windows, circuit transitions, escalation pages).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import Attempt, EscalationOpened, LineageRecord
from streams.breakers import logic as breakers
from streams.escalations import logic as escalations
from streams.quotas import logic as quotas
from streams.sla import logic as sla
from streams.wallets.logic import month_start_ms
from tests.unit.builders import T0, call, escalation_opened

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)
Item = TypeVar("Item")
TENANTS = ("acme", "globex")
PRODUCERS = ("gateway-a", "gateway-b")
ADMINS = ("admin-a", "admin-b")


@st.composite
def with_resends(
    draw: st.DrawFn, history: Sequence[Item], copied: Callable[[Item], bool] = bool
) -> list[Item]:
    """The history with copies of some records (those `copied` says) inserted after their
    original, anywhere: right after it, or long after, between newer records of the same
    producer. The originals keep their order relative to everything else."""
    result = list(history)
    for index, item in enumerate(history):
        if not copied(item):
            continue
        for _ in range(draw(st.integers(0, 2), label="copies")):
            first = next(i for i, seen in enumerate(result) if seen is item)
            assert first >= index
            result.insert(draw(st.integers(first + 1, len(result)), label="at"), item)
    return result


# --- quotas: budgets from admin producers, projections from the wallets processor -----------

PERIOD = month_start_ms(T0)


@st.composite
def quota_histories(draw: st.DrawFn) -> list[quotas.QuotaEvent]:
    """Budget settings (several may share a millisecond: then the one folded last wins,
    which a late copy of an earlier one must not undo) and growing spend."""
    seqs: dict[str, int] = defaultdict(int)
    spent = 0
    at = PERIOD + 1_000
    events: list[quotas.QuotaEvent] = []
    for _ in range(draw(st.integers(1, 25))):
        at += draw(st.sampled_from((0, 0, 1, 60_000)), label="ms later")
        if draw(st.booleans(), label="budget"):
            admin = draw(st.sampled_from(ADMINS))
            seqs[admin] += draw(st.integers(1, 3), label="seq step")
            events.append(
                quotas.budget_set(
                    wallet_id="acme/search",
                    tenant_id="acme",
                    team_id="search",
                    budget_nanousd=draw(st.integers(0, 10_000)),
                    occurred_at=at,
                    thresholds_percent=draw(st.sampled_from(((50, 80, 100), (10, 90)))),
                    producer_id=admin,
                    seq=seqs[admin],
                )
            )
        else:
            spent += draw(st.integers(1, 3_000))
            events.append(
                quotas.SpendObserved("acme/search", "acme", "search", PERIOD, spent, "acme/search")
            )
    return events


@PROPERTY_SETTINGS
@given(history=quota_histories(), data=st.data())
def test_resent_budgets_and_projections_change_no_quota_and_repeat_no_alert(
    history: list[quotas.QuotaEvent], data: st.DataObject
) -> None:
    resent = data.draw(with_resends(history))
    state, alerts = quotas.fold(resent)
    assert (state, alerts) == quotas.fold(history)
    crossings = [(a.wallet_id, a.period_start_at, a.threshold_percent) for a in alerts]
    assert len(crossings) == len(set(crossings)), "a threshold alerted twice"


def test_a_late_copy_of_a_budget_set_in_the_same_millisecond_does_not_undo_the_later_one() -> None:
    def setting(budget_nanousd: int, seq: int) -> quotas.BudgetSet:
        return quotas.budget_set(
            wallet_id="acme/search",
            tenant_id="acme",
            team_id="search",
            budget_nanousd=budget_nanousd,
            occurred_at=PERIOD + 5,
            producer_id="admin-a",
            seq=seq,
        )

    spend = quotas.SpendObserved("acme/search", "acme", "search", PERIOD, 900, "acme/search")
    generous, tight = setting(100_000, 1), setting(1_000, 2)
    before, _ = quotas.fold([generous, tight, spend])
    after, alerts = quotas.fold([generous], before)
    assert after == before
    assert alerts == []
    assert after["acme/search"].budget_nanousd == 1_000


# --- SLA: lineage records folded into minute windows, closed by ticks ------------------------

Tick = int


@st.composite
def sla_histories(draw: st.DrawFn) -> list[LineageRecord | Tick]:
    """Calls of two tenants from two gateways over a few minutes, with ticks (closing
    times) as time passes; some calls arrive after their minute closed (corrections)."""
    seqs: dict[str, int] = defaultdict(int)
    now = T0
    items: list[LineageRecord | Tick] = []
    for _ in range(draw(st.integers(1, 40))):
        now += draw(st.integers(0, 20_000), label="ms later")
        if draw(st.integers(0, 5), label="tick?") == 0:
            items.append(now)
            continue
        producer = draw(st.sampled_from(PRODUCERS))
        seqs[producer] += 1
        late_ms = draw(st.sampled_from((0, 0, 0, 45_000)), label="late")
        status = draw(st.sampled_from((200, 200, 503, 400)))
        items.append(
            call(
                tenant_id=draw(st.sampled_from(TENANTS)),
                producer_id=producer,
                seq=seqs[producer],
                occurred_at=max(now - late_ms, T0),
                http_status=status,
                error_code=None if status == 200 else "upstream_error",
                latency_ms=float(draw(st.integers(1, 5_000))),
            )
        )
    return [*items, now + 600_000]  # a last tick closes every window


def sla_run(items: Sequence[LineageRecord | Tick]) -> tuple[sla.SlaState, list[sla.WindowSummary]]:
    state = sla.SlaState()
    published: list[sla.WindowSummary] = []
    for item in items:
        if isinstance(item, LineageRecord):
            state = sla.apply(state, item)
        else:
            state, due = sla.closed(state, item, grace_ms=10_000)
            published.extend(due)
    return state, published


@PROPERTY_SETTINGS
@given(history=sla_histories(), data=st.data())
def test_resent_calls_change_no_sla_window(
    history: list[LineageRecord | Tick], data: st.DataObject
) -> None:
    calls = [i for i in history if isinstance(i, LineageRecord)]
    merged = data.draw(with_resends(history, lambda i: isinstance(i, LineageRecord)))
    state, published = sla_run(merged)
    assert (state, published) == sla_run(history)
    assert sum(w.requests for w in published) == len(calls)


# --- breakers: each lineage record's attempts on one target --------------------------------

TARGET = ("openai", "gpt-4o")
CONFIG = breakers.BreakerConfig(failure_threshold=3, failure_window_ms=30_000)


@st.composite
def observations(draw: st.DrawFn) -> list[breakers.Observation]:
    seqs: dict[str, int] = defaultdict(int)
    at = T0
    found: list[breakers.Observation] = []
    for _ in range(draw(st.integers(1, 40))):
        producer = draw(st.sampled_from(PRODUCERS))
        partition = draw(st.integers(0, 1))
        seqs[producer] += 1
        at += draw(st.integers(0, 20_000))
        status = draw(st.sampled_from((200, 503, 503, 429, 400)))
        record = call(
            producer_id=producer,
            seq=seqs[producer],
            occurred_at=at,
            attempts=(Attempt(*TARGET, status, 10.0, None if status == 200 else "http_5xx"),),
        )
        found.extend(breakers.observations_of(record, partition).values())
    return found


@PROPERTY_SETTINGS
@given(history=observations(), data=st.data())
def test_resent_calls_change_no_breaker_and_repeat_no_transition(
    history: list[breakers.Observation], data: st.DataObject
) -> None:
    resent = data.draw(with_resends(history))
    start = breakers.FleetBreaker()
    assert breakers.fold_observations(start, TARGET, resent, CONFIG) == (
        breakers.fold_observations(start, TARGET, history, CONFIG)
    )


# --- escalations: opens from gateways, actions from the admin API, ticks ------------------


@st.composite
def escalation_histories(draw: st.DrawFn) -> list[escalations.Input]:
    seqs: dict[str, int] = defaultdict(int)
    at = T0
    opened: list[EscalationOpened] = []
    inputs: list[escalations.Input] = []
    for n in range(draw(st.integers(1, 30))):
        at += draw(st.integers(0, 20 * 60_000))
        kind = draw(st.sampled_from(("open", "open", "claim", "resolve", "tick")))
        if kind == "tick":
            inputs.append(escalations.Tick(at))
            continue
        if kind == "open" or not opened:
            producer = draw(st.sampled_from(PRODUCERS))
            seqs[producer] += 1
            record = escalation_opened(
                escalation_id=f"esc_{n}",
                producer_id=producer,
                seq=seqs[producer],
                occurred_at=at,
                priority=draw(st.sampled_from(("P1", "P2"))),
            )
            opened.append(record)
            inputs.append(record)
            continue
        target = draw(st.sampled_from(opened))
        admin = draw(st.sampled_from(ADMINS))
        seqs[admin] += 1
        envelope: dict[str, Any] = {
            "escalation_id": target.escalation_id,
            "tenant_id": target.tenant_id,
            "occurred_at": at,
            "producer_id": admin,
            "seq": seqs[admin],
        }
        if kind == "claim":
            inputs.append(
                escalations.Claimed(actor=draw(st.sampled_from(("lee", "dana"))), **envelope)
            )
        else:
            inputs.append(
                escalations.Resolved(actor="dana", decision="approve", note="", **envelope)
            )
    return inputs


def paged_and_routed(notices: Sequence[escalations.Notice]) -> list[escalations.Notice]:
    return [n for n in notices if not isinstance(n, escalations.Ignored)]


@PROPERTY_SETTINGS
@given(history=escalation_histories(), data=st.data())
def test_resent_opens_and_actions_change_no_queue_and_page_once(
    history: list[escalations.Input], data: st.DataObject
) -> None:
    resent = data.draw(with_resends(history, lambda i: not isinstance(i, escalations.Tick)))
    config = escalations.EscalationConfig()
    state, notices = escalations.fold(resent, config)
    expected_state, expected_notices = escalations.fold(history, config)
    assert state == expected_state
    assert paged_and_routed(notices) == paged_and_routed(expected_notices)
    pages = [n.escalation_id for n in notices if isinstance(n, escalations.EscalationOverdue)]
    assert len(pages) == len(set(pages))


def test_an_open_resent_after_its_escalation_left_the_resolved_retention_is_a_duplicate() -> None:
    config = dataclasses.replace(escalations.EscalationConfig(), resolved_retention=1)
    first = escalation_opened(escalation_id="esc_a", producer_id="gateway-a", seq=1)
    done = escalations.Resolved(
        escalation_id="esc_a",
        tenant_id=first.tenant_id,
        occurred_at=T0,
        producer_id="admin-a",
        seq=1,
        actor="dana",
        decision="approve",
        note="",
    )
    second = escalation_opened(escalation_id="esc_b", producer_id="gateway-a", seq=2)
    closes_b = dataclasses.replace(done, escalation_id="esc_b", seq=2)
    state, _ = escalations.fold([first, done, second, closes_b], config)
    assert escalations.find(state, "esc_a") is None  # evicted from the retention
    after, _ = escalations.fold([first], config, state)
    assert after == state


def test_a_quota_keeps_a_bounded_number_of_budget_watermarks() -> None:
    settings_made = [
        quotas.budget_set(
            wallet_id="acme/search",
            tenant_id="acme",
            team_id="search",
            budget_nanousd=1_000 + n,
            occurred_at=PERIOD + n,
            producer_id=f"admin-{n:03d}",
            seq=n + 1,
        )
        for n in range(quotas.MAX_BUDGET_PRODUCERS + 6)
    ]
    (quota,) = quotas.fold(settings_made)[0].values()
    kept = dict(quota.budget_seqs)
    assert len(kept) == quotas.MAX_BUDGET_PRODUCERS
    assert "admin-000" not in kept  # the lowest watermark went first
    assert quota.budget_nanousd == settings_made[-1].budget_nanousd


def test_an_open_watermark_is_per_producer_and_tenant() -> None:
    config = escalations.EscalationConfig()
    first = escalation_opened(escalation_id="esc_a", producer_id="gateway-a", seq=5)
    state, _ = escalations.fold([first], config)
    other_gateway = escalation_opened(escalation_id="esc_b", producer_id="gateway-b", seq=5)
    other_tenant = escalation_opened(
        escalation_id="esc_c", producer_id="gateway-a", seq=5, tenant_id="globex"
    )
    after, _ = escalations.fold([first, other_gateway, other_tenant], config, state)
    assert [e.escalation_id for e in escalations.open_escalations(after)] == [
        "esc_a",
        "esc_b",
        "esc_c",
    ]
