"""Escalation queues rebuilt from history: a restarted worker holds what it held, and
pages each missed SLA once across restarts."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import EscalationSlaBreached, Event
from streams.escalations.logic import (
    MINUTE_MS,
    EscalationConfig,
    EscalationOverdue,
    Ignored,
    Queues,
    Tick,
    evolve,
    find,
    fold,
    input_of,
    open_escalations,
    rebuild,
    to_alert,
)
from tests.unit import builders
from tests.unit.builders import T0, TENANT

ESC = "esc_0193a1b2c3"
SLA_MS = 10 * MINUTE_MS
CONFIG = EscalationConfig(sla_ms={"P1": SLA_MS, "P2": SLA_MS, "P3": SLA_MS, "P4": SLA_MS})
DANA = "dana@acme.example"


def opened(esc: str = ESC, at: int = T0, seq: int = 1, tenant: str = TENANT) -> Any:
    return builders.escalation_opened(
        escalation_id=esc, occurred_at=at, seq=seq, tenant_id=tenant, priority="P1"
    )


def claimed(esc: str = ESC, at: int = T0 + MINUTE_MS, seq: int = 1) -> Any:
    return builders.escalation_claimed(escalation_id=esc, occurred_at=at, seq=seq, actor=DANA)


def resolved(esc: str = ESC, at: int = T0 + 2 * MINUTE_MS, seq: int = 2) -> Any:
    return builders.escalation_resolved(escalation_id=esc, occurred_at=at, seq=seq)


def alert_of(breach: EscalationOverdue) -> EscalationSlaBreached:
    return to_alert(breach, occurred_at=breach.breached_at)


def inputs(records: list[Event]) -> list[Any]:
    return [i for i in map(input_of, records) if i is not None]


def test_a_claimed_escalation_is_rebuilt_claimed_even_when_its_claim_was_read_first() -> None:
    # The control partition came back from the broker before the escalations partition.
    state, notices = rebuild([[claimed()], [opened()]], CONFIG)
    escalation = find(state, ESC)
    assert escalation is not None
    assert (escalation.status, escalation.claimed_by) == ("claimed", DANA)
    assert state.early == {}
    assert not [n for n in notices if isinstance(n, Ignored)]
    live, _ = fold(inputs([opened(), claimed()]), CONFIG)
    assert state == live


def test_resolved_escalations_are_rebuilt_resolved_and_not_listed_open() -> None:
    logs = [[opened(), opened("esc_2", T0 + 1, seq=2)], [claimed(), resolved()]]
    state, _ = rebuild(logs, CONFIG)
    assert [e.escalation_id for e in open_escalations(state)] == ["esc_2"]
    escalation = find(state, ESC)
    assert escalation is not None
    assert escalation.status == "resolved"


def test_a_breach_already_paged_is_not_paged_again_after_a_rebuild() -> None:
    state, _ = fold(inputs([opened()]), CONFIG)
    state, notices = evolve(state, Tick(T0 + SLA_MS + 1), CONFIG)
    (breach,) = notices
    assert isinstance(breach, EscalationOverdue)
    # Restart: the alert is on the alerts topic, read back with the rest.
    rebuilt, _ = rebuild([[alert_of(breach)], [opened()]], CONFIG)
    escalation = find(rebuilt, ESC)
    assert escalation is not None
    assert escalation.alerted_at == breach.breached_at
    assert escalation.sla_breached
    _, notices = fold([Tick(T0 + SLA_MS + 5_000), Tick(T0 + 2 * SLA_MS)], CONFIG, rebuilt)
    assert not [n for n in notices if isinstance(n, EscalationOverdue)]


def test_a_breach_never_paged_is_paged_once_by_the_first_tick_after_a_rebuild() -> None:
    # The worker died before its tick saw the deadline pass (or before the alert was sent).
    rebuilt, _ = rebuild([[opened()]], CONFIG)
    _, notices = fold([Tick(T0 + SLA_MS + 1), Tick(T0 + SLA_MS + 2)], CONFIG, rebuilt)
    assert [n.escalation_id for n in notices if isinstance(n, EscalationOverdue)] == [ESC]


def test_an_alert_of_an_escalation_not_held_changes_nothing() -> None:
    other = to_alert(
        EscalationOverdue("esc_other", TENANT, "central", "P1", T0, T0 + 1), occurred_at=T0
    )
    wrong_tenant = dataclasses.replace(
        alert_of(EscalationOverdue(ESC, "globex", "q", "P1", T0, T0 + 1))
    )
    state, _ = rebuild([[opened()], [other, wrong_tenant]], CONFIG)
    escalation = find(state, ESC)
    assert escalation is not None
    assert escalation.alerted_at is None


def test_records_redelivered_after_a_rebuild_change_nothing() -> None:
    history = [opened(), claimed(), opened("esc_2", T0 + 5, seq=2)]
    state, _ = rebuild([history[::2], history[1:2]], CONFIG)
    # The consumer resumes from its committed offsets, before the end the rebuild read.
    after, notices = fold(inputs(history), CONFIG, state)
    assert after == state
    assert all(isinstance(n, Ignored) and n.reason == "duplicate" for n in notices)


def test_opens_free_capacity_in_the_order_they_were_resolved() -> None:
    # 2 slots; the first escalation is resolved before the third opens. Read partition by
    # partition (all opens first), the third would be refused as over capacity.
    small = dataclasses.replace(CONFIG, max_unresolved=2)
    logs = [
        [opened("e1", T0, 1), opened("e2", T0 + 1, 2), opened("e3", T0 + 10, 3)],
        [resolved("e1", T0 + 5, seq=1)],
    ]
    state, notices = rebuild(logs, small)
    assert sorted(state.unresolved) == ["e2", "e3"]
    assert not [n for n in notices if isinstance(n, Ignored)]


# --- across restarts, each missed SLA pages once ---------------------------------------

escalation_plans = st.lists(
    st.tuples(
        st.integers(0, 30),  # minute opened
        st.one_of(st.none(), st.integers(0, 30)),  # minutes later claimed, if ever
        st.one_of(st.none(), st.integers(0, 30)),  # minutes later resolved, if ever
    ),
    min_size=1,
    max_size=6,
)


def timeline(plans: list[tuple[int, int | None, int | None]]) -> list[Event]:
    """Opens on one partition, actions on another, in time order: what the topics hold."""
    records: list[tuple[int, int, Event]] = []
    for n, (opened_min, claim_after, resolve_after) in enumerate(plans):
        esc, at = f"esc_{n}", T0 + opened_min * MINUTE_MS
        records.append((at, 0, opened(esc, at, seq=n + 1)))
        if claim_after is not None:
            claim_at = at + claim_after * MINUTE_MS + 1
            records.append((claim_at, 1, claimed(esc, claim_at, seq=2 * n + 1)))
        if resolve_after is not None:
            resolve_at = at + resolve_after * MINUTE_MS + 2
            records.append((resolve_at, 1, resolved(esc, resolve_at, seq=2 * n + 2)))
    return [record for _, _, record in sorted(records, key=lambda r: (r[0], r[1]))]


def run(
    records: list[Event], restarts: set[int], lag: int
) -> tuple[Counter[str], Queues, list[EscalationSlaBreached]]:
    """A worker folding the records and ticking every minute; at each restart minute it
    rebuilds from the topics (records read so far and the alerts it published) and the
    consumer resumes `lag` records before where it was (uncommitted offsets)."""
    pages: Counter[str] = Counter()
    alerts: list[EscalationSlaBreached] = []
    state, read = Queues(), 0
    for minute in range(80):
        now = T0 + minute * MINUTE_MS
        if minute in restarts:
            opens = [r for r in records[:read] if r.event_type == "escalation.opened"]
            actions = [r for r in records[:read] if r.event_type != "escalation.opened"]
            state, _ = rebuild([actions, list(alerts), opens], CONFIG)
            read = max(read - lag, 0)
        while read < len(records) and records[read].occurred_at <= now:
            change = input_of(records[read])
            assert change is not None
            state, _ = evolve(state, change, CONFIG)
            read += 1
        state, notices = evolve(state, Tick(now + 1), CONFIG)
        for breach in notices:
            assert isinstance(breach, EscalationOverdue)
            pages[breach.escalation_id] += 1
            alerts.append(alert_of(breach))
    return pages, state, alerts


@settings(max_examples=150, deadline=None)
@given(
    plans=escalation_plans,
    restarts=st.sets(st.integers(1, 79), max_size=4),
    lag=st.integers(0, 5),
)
def test_each_missed_sla_pages_exactly_once_across_restarts(
    plans: list[tuple[int, int | None, int | None]], restarts: set[int], lag: int
) -> None:
    records = timeline(plans)
    expected, live, _ = run(records, set(), 0)
    pages, state, alerts = run(records, restarts, lag)
    assert pages == expected
    assert set(pages.values()) <= {1}
    assert len({a.event_id for a in alerts}) == len(alerts)
    assert state.unresolved.keys() == live.unresolved.keys()
    assert {e.escalation_id: (e.status, e.claimed_by) for e in state.unresolved.values()} == {
        e.escalation_id: (e.status, e.claimed_by) for e in live.unresolved.values()
    }
