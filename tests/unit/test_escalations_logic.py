"""Escalation queues: given escalations opened and reviewers' actions, then queues and SLAs."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.escalations.logic import (
    HOUR_MS,
    MINUTE_MS,
    Claimed,
    Depth,
    Escalation,
    EscalationConfig,
    EscalationOverdue,
    Ignored,
    Input,
    Queues,
    Reassigned,
    Resolved,
    Routed,
    Tick,
    act,
    evolve,
    find,
    fold,
    open_escalations,
    priority_of,
    queue_depths,
    resolved_of,
    route,
)
from streams.escalations.model import Notice, Verdict
from tests.unit.builders import (
    T0,
    TEAM,
    TENANT,
    escalation_opened,
    escalation_resolved,
    key_issued,
)

ESC = "esc_0193a1b2c3"
ADMIN = "admin-7f3e9d"
DANA = "dana@acme.example"
LEE = "lee@acme.example"
P2_SLA_MS = 2 * HOUR_MS
CONFIG = EscalationConfig(
    team_owners={(TENANT, TEAM): "search-oncall", ("globex", "search"): "globex-search"},
    cross_boundary_categories=frozenset({"legal", "security"}),
)


def claim(seq: int, actor: str = DANA, *, at: int = T0 + MINUTE_MS, **overrides: Any) -> Claimed:
    fields = {"escalation_id": ESC, "tenant_id": TENANT, "producer_id": ADMIN}
    fields.update(overrides)
    return Claimed(actor=actor, occurred_at=at, seq=seq, **fields)


def reassign(
    seq: int,
    queue: str,
    reviewer: str | None = None,
    *,
    at: int = T0 + 5 * MINUTE_MS,
    **overrides: Any,
) -> Reassigned:
    fields = {"escalation_id": ESC, "tenant_id": TENANT, "producer_id": ADMIN, "actor": LEE}
    fields.update(overrides)
    return Reassigned(occurred_at=at, seq=seq, queue=queue, reviewer=reviewer, **fields)


def resolve(
    seq: int, decision: Verdict = "approve", *, at: int = T0 + 10 * MINUTE_MS, **overrides: Any
) -> Resolved:
    fields = {"escalation_id": ESC, "tenant_id": TENANT, "producer_id": ADMIN, "actor": DANA}
    fields.update(overrides)
    return Resolved(occurred_at=at, seq=seq, decision=decision, note="test card from QA", **fields)


def run(*events: Input, config: EscalationConfig = CONFIG) -> tuple[Queues, list[Notice]]:
    state, notices = fold(events, config)
    return state, list(notices)


def the(state: Queues, escalation_id: str = ESC) -> Escalation:
    escalation = find(state, escalation_id)
    assert escalation is not None
    return escalation


def breaches(notices: list[Notice]) -> list[EscalationOverdue]:
    return [n for n in notices if isinstance(n, EscalationOverdue)]


def ignored(notices: list[Notice]) -> list[Ignored]:
    return [n for n in notices if isinstance(n, Ignored)]


# --- routing ----------------------------------------------------------------------------


def test_a_team_scoped_escalation_goes_to_the_teams_owner_queue() -> None:
    state, notices = run(escalation_opened())
    escalation = the(state)
    assert escalation.queue == "search-oncall"
    assert (escalation.tenant_id, escalation.team_id, escalation.category) == (TENANT, TEAM, "pii")
    assert escalation.status == "open"
    assert escalation.claimed_by is None
    assert escalation.opened_at == T0
    assert escalation.deadline_at == T0 + P2_SLA_MS
    assert notices == [Routed(ESC, TENANT, "search-oncall", "P2", T0 + P2_SLA_MS)]


def test_a_team_without_a_configured_owner_gets_its_own_queue() -> None:
    state, _ = run(escalation_opened(team_id="billing"))
    assert the(state).queue == "team:billing"


def test_owners_are_per_tenant() -> None:
    # Two tenants may both have a "search" team; each tenant configures its own owner.
    assert route("globex", TEAM, "pii", CONFIG) == "globex-search"
    assert route("initech", TEAM, "pii", CONFIG) == "team:search"


def test_a_cross_boundary_category_goes_to_the_central_queue_whatever_the_team() -> None:
    state, notices = run(escalation_opened(category="legal"))
    assert the(state).queue == "central"
    assert isinstance(notices[0], Routed)
    assert notices[0].queue == "central"
    named = dataclasses.replace(CONFIG, central_queue="trust-and-safety")
    state, _ = run(escalation_opened(category="security"), config=named)
    assert the(state).queue == "trust-and-safety"


@pytest.mark.parametrize(
    ("priority", "sla_ms"),
    [("P1", 30 * MINUTE_MS), ("P2", 2 * HOUR_MS), ("P3", 8 * HOUR_MS), ("P4", 24 * HOUR_MS)],
)
def test_the_deadline_is_the_priority_sla_from_opening(priority: str, sla_ms: int) -> None:
    state, _ = run(escalation_opened(priority=priority))
    assert the(state).priority == priority
    assert the(state).deadline_at == T0 + sla_ms


def test_slas_are_configurable() -> None:
    tight = dataclasses.replace(CONFIG, sla_ms={"P1": 5, "P2": 10, "P3": 20, "P4": 40})
    state, _ = run(escalation_opened(priority="P3"), config=tight)
    assert the(state).deadline_at == T0 + 20


def test_an_unknown_priority_gets_the_strictest_sla() -> None:
    assert priority_of("P0") == "P1"
    state, _ = run(escalation_opened(priority="urgent"))
    assert the(state).priority == "P1"
    assert the(state).deadline_at == T0 + 30 * MINUTE_MS


# --- reviewers' actions -----------------------------------------------------------------


def test_claim_then_reassign_to_another_queue_leaves_it_unclaimed_there() -> None:
    state, _ = run(escalation_opened(), claim(5))
    assert (the(state).status, the(state).claimed_by) == ("claimed", DANA)
    state, notices = evolve(state, reassign(6, "privacy-office"), CONFIG)
    escalation = the(state)
    assert (escalation.queue, escalation.status, escalation.claimed_by) == (
        "privacy-office",
        "open",
        None,
    )
    assert notices == (
        Routed(ESC, TENANT, "privacy-office", "P2", T0 + P2_SLA_MS, reassigned_by=LEE),
    )


def test_reassigning_to_a_reviewer_hands_it_to_them() -> None:
    state, _ = run(escalation_opened(), claim(5), reassign(6, "privacy-office", reviewer=LEE))
    assert (the(state).queue, the(state).status, the(state).claimed_by) == (
        "privacy-office",
        "claimed",
        LEE,
    )


def test_reassigning_does_not_move_the_deadline() -> None:
    state, _ = run(escalation_opened(), reassign(6, "privacy-office", at=T0 + HOUR_MS))
    assert the(state).deadline_at == T0 + P2_SLA_MS


def test_the_first_claim_wins_until_a_reassign() -> None:
    state, notices = run(escalation_opened(), claim(5, DANA), claim(6, LEE))
    assert the(state).claimed_by == DANA
    assert ignored(notices) == [Ignored(ESC, "claimed", "claimed_by_other")]
    state, _ = run(escalation_opened(), claim(5, DANA), reassign(6, "search-oncall"), claim(7, LEE))
    assert the(state).claimed_by == LEE


def test_the_holder_claiming_again_keeps_it() -> None:
    state, notices = run(escalation_opened(), claim(5, DANA), claim(6, DANA))
    assert (the(state).status, the(state).claimed_by) == ("claimed", DANA)
    assert ignored(notices) == []


def test_resolve_records_the_decision_and_leaves_the_queue() -> None:
    state, _ = run(escalation_opened(), claim(5), resolve(6, "reject", at=T0 + 20 * MINUTE_MS))
    escalation = the(state)
    assert escalation.status == "resolved"
    assert (escalation.decision, escalation.resolved_by) == ("reject", DANA)
    assert escalation.resolved_at == T0 + 20 * MINUTE_MS
    assert escalation.note == "test card from QA"
    assert escalation.claimed_by == DANA
    assert open_escalations(state) == ()
    assert queue_depths(state, T0 + HOUR_MS) == {}
    assert ESC in state.resolved
    assert ESC not in state.unresolved


def test_a_resolve_is_final() -> None:
    state, _ = run(escalation_opened(), resolve(5, "approve"))
    after, notices = fold(
        [claim(6, LEE), reassign(7, "central"), resolve(8, "reject", actor=LEE)], CONFIG, state
    )
    assert after == state
    assert [n.reason if isinstance(n, Ignored) else n for n in notices] == ["resolved"] * 3
    assert the(after).decision == "approve"


def test_an_unclaimed_escalation_may_be_resolved_by_anyone() -> None:
    state, _ = run(escalation_opened(), resolve(5, actor=LEE))
    assert (the(state).status, the(state).resolved_by, the(state).claimed_by) == (
        "resolved",
        LEE,
        None,
    )


def test_an_action_for_another_tenant_is_ignored() -> None:
    state, notices = run(escalation_opened(), resolve(5, tenant_id="globex"))
    assert the(state).status == "open"
    assert ignored(notices) == [Ignored(ESC, "resolved", "tenant_mismatch")]


def test_the_gateways_resolve_record_is_a_resolve_action() -> None:
    record = escalation_resolved(decision="reject", occurred_at=T0 + 3 * MINUTE_MS)
    action = resolved_of(record)
    assert action == Resolved(
        escalation_id=ESC,
        tenant_id=TENANT,
        actor="reviewer@acme.example",
        occurred_at=T0 + 3 * MINUTE_MS,
        producer_id=ADMIN,
        seq=4,
        decision="reject",
        note="test card from the QA suite",
    )
    state, _ = run(escalation_opened(), record)
    assert (the(state).status, the(state).decision) == ("resolved", "reject")


def test_a_resolve_record_with_an_unknown_decision_is_ignored() -> None:
    record = escalation_resolved(decision="maybe")
    assert resolved_of(record) is None
    state, notices = run(escalation_opened(), record)
    assert the(state).status == "open"
    assert ignored(notices) == [Ignored(ESC, "resolved", "invalid_decision")]


def test_other_events_change_nothing() -> None:
    state, _ = run(escalation_opened())
    assert evolve(state, key_issued(), CONFIG) == (state, ())


# --- idempotence ------------------------------------------------------------------------


def test_redelivered_opens_claims_and_resolves_change_nothing() -> None:
    opened, claimed, resolved = escalation_opened(), claim(5), resolve(6)
    once, _ = run(opened, claimed, resolved)
    twice, notices = run(opened, opened, claimed, claimed, resolved, opened, claimed, resolved)
    assert twice == once
    assert [n.reason for n in ignored(notices)] == ["duplicate"] * 5


def test_a_redelivered_claim_after_a_reassign_does_not_claim_again() -> None:
    # Kafka redelivers from the last committed offset: the claim comes back after the
    # reassign that followed it. The admin producer's seq watermark recognises it.
    state, notices = run(escalation_opened(), claim(5), reassign(6, "central"), claim(5))
    assert (the(state).status, the(state).claimed_by, the(state).queue) == ("open", None, "central")
    assert ignored(notices) == [Ignored(ESC, "claimed", "duplicate")]


def test_a_refused_claim_redelivered_after_a_reassign_is_still_refused() -> None:
    lee = claim(1, LEE, producer_id="admin-2b3c4d")
    state, _ = run(escalation_opened(), claim(5, DANA), lee, reassign(6, "central"), lee)
    assert (the(state).status, the(state).claimed_by) == ("open", None)


def test_act_reports_a_duplicate_without_changing_the_escalation() -> None:
    state, _ = run(escalation_opened(), claim(5))
    escalation = the(state)
    assert act(escalation, claim(5)) == (escalation, "duplicate")
    assert act(escalation, claim(4)) == (escalation, "duplicate")


# --- SLA --------------------------------------------------------------------------------


def test_a_breach_is_reported_once_at_the_first_tick_past_the_deadline() -> None:
    deadline = T0 + P2_SLA_MS
    state, _ = run(escalation_opened())
    state, notices = fold([Tick(T0 + HOUR_MS), Tick(deadline)], CONFIG, state)
    assert notices == ()
    assert not the(state).sla_breached
    state, notices = evolve(state, Tick(deadline + 1), CONFIG)
    assert notices == (
        EscalationOverdue(ESC, TENANT, "search-oncall", "P2", deadline, deadline + 1),
    )
    assert the(state).alerted_at == deadline + 1
    assert the(state).sla_breached
    state, notices = fold([Tick(deadline + 10_000), Tick(deadline + HOUR_MS)], CONFIG, state)
    assert notices == ()


def test_a_tick_older_than_the_last_one_changes_nothing() -> None:
    state, _ = run(escalation_opened(priority="P1"), Tick(T0 + 10 * MINUTE_MS))
    assert evolve(state, Tick(T0 + 5 * MINUTE_MS), CONFIG) == (state, ())


def test_an_escalation_resolved_before_its_deadline_never_breaches() -> None:
    state, notices = run(
        escalation_opened(),
        resolve(5, at=T0 + HOUR_MS),
        Tick(T0 + P2_SLA_MS + 1),
        Tick(T0 + 48 * HOUR_MS),
    )
    assert breaches(notices) == []
    assert not the(state).sla_breached


def test_resolving_after_a_reported_breach_still_resolves() -> None:
    state, notices = run(
        escalation_opened(priority="P1"),
        Tick(T0 + 31 * MINUTE_MS),
        resolve(5, at=T0 + 40 * MINUTE_MS),
        Tick(T0 + 50 * MINUTE_MS),
    )
    assert len(breaches(notices)) == 1
    assert the(state).status == "resolved"
    assert the(state).sla_breached


def test_a_late_resolve_before_any_tick_counts_as_breached_without_an_alert() -> None:
    state, notices = run(escalation_opened(priority="P1"), resolve(5, at=T0 + 45 * MINUTE_MS))
    assert the(state).status == "resolved"
    assert the(state).sla_breached
    assert the(state).alerted_at is None
    assert breaches(notices) == []


def test_a_tick_reports_every_overdue_escalation_most_overdue_first() -> None:
    state, notices = run(
        escalation_opened(escalation_id="esc_p2", priority="P2"),
        escalation_opened(escalation_id="esc_p1", priority="P1", occurred_at=T0 + MINUTE_MS),
        escalation_opened(escalation_id="esc_p4", priority="P4"),
        Tick(T0 + 3 * HOUR_MS),
    )
    assert [b.escalation_id for b in breaches(notices)] == ["esc_p1", "esc_p2"]
    assert not the(state, "esc_p4").sla_breached


def test_reassigning_a_breached_escalation_does_not_report_it_again() -> None:
    state, notices = run(
        escalation_opened(priority="P1"),
        Tick(T0 + 31 * MINUTE_MS),
        reassign(5, "central", at=T0 + 32 * MINUTE_MS),
        Tick(T0 + 33 * MINUTE_MS),
    )
    assert len(breaches(notices)) == 1
    assert the(state).queue == "central"


# --- actions read before their open ------------------------------------------------------


def test_a_resolve_read_before_its_open_is_applied_when_the_open_arrives() -> None:
    # The admin API's record is on the control topic, the open on the escalations topic:
    # the processor may read them in either order.
    state, notices = run(resolve(5, at=T0 + MINUTE_MS))
    assert find(state, ESC) is None
    assert ESC in state.early
    assert notices == []
    state, notices = run(resolve(5, at=T0 + MINUTE_MS), escalation_opened(), Tick(T0 + 3 * HOUR_MS))
    assert the(state).status == "resolved"
    assert state.early == {}
    assert breaches(notices) == []


def test_early_claim_and_reassign_are_applied_in_the_order_read() -> None:
    state, _ = run(claim(5), reassign(6, "privacy-office", reviewer=LEE), escalation_opened())
    assert (the(state).queue, the(state).claimed_by) == ("privacy-office", LEE)


def test_an_early_action_redelivered_is_buffered_once() -> None:
    state, notices = run(claim(5), claim(5))
    assert state.early == {ESC: (claim(5),)}
    assert ignored(notices) == [Ignored(ESC, "claimed", "duplicate")]


def test_the_early_buffer_drops_the_oldest_escalation_when_full() -> None:
    small = dataclasses.replace(CONFIG, early_buffer_ids=2)
    state, notices = run(
        claim(1, escalation_id="esc_a"),
        resolve(2, escalation_id="esc_a"),
        claim(3, escalation_id="esc_b"),
        claim(4, escalation_id="esc_c"),
        config=small,
    )
    assert list(state.early) == ["esc_b", "esc_c"]
    assert ignored(notices) == [
        Ignored("esc_a", "claimed", "early_buffer_full"),
        Ignored("esc_a", "resolved", "early_buffer_full"),
    ]


def test_the_early_buffer_keeps_a_bounded_number_of_actions_per_escalation() -> None:
    small = dataclasses.replace(CONFIG, early_actions_per_id=2)
    state, notices = run(claim(1), reassign(2, "central"), resolve(3), config=small)
    assert len(state.early[ESC]) == 2
    assert ignored(notices) == [Ignored(ESC, "resolved", "early_buffer_full")]


# --- queries ----------------------------------------------------------------------------


def _backlog() -> Queues:
    state, _ = run(
        escalation_opened(escalation_id="esc_1", priority="P2"),
        escalation_opened(escalation_id="esc_2", priority="P1", occurred_at=T0 + 10 * MINUTE_MS),
        escalation_opened(escalation_id="esc_3", priority="P2", occurred_at=T0 + 20 * MINUTE_MS),
        escalation_opened(escalation_id="esc_4", category="legal", priority="P3"),
        escalation_opened(
            escalation_id="esc_5", tenant_id="globex", priority="P4", occurred_at=T0 - HOUR_MS
        ),
        escalation_opened(escalation_id="esc_6", priority="P4", occurred_at=T0 + MINUTE_MS),
        claim(1, escalation_id="esc_2"),
        resolve(2, escalation_id="esc_6"),
    )
    return state


def test_queue_depths_count_open_and_claimed_and_age_the_oldest() -> None:
    depths = queue_depths(_backlog(), T0 + HOUR_MS)
    assert depths["search-oncall"] == Depth(
        open_count=2,
        claimed_count=1,
        oldest_age_ms=HOUR_MS,
        by_priority={"P1": 1, "P2": 2, "P3": 0, "P4": 0},
    )
    assert depths["central"] == Depth(1, 0, HOUR_MS, {"P1": 0, "P2": 0, "P3": 1, "P4": 0})
    assert depths["globex-search"].oldest_age_ms == 2 * HOUR_MS
    assert set(depths) == {"search-oncall", "central", "globex-search"}


def test_queue_depths_for_one_tenant() -> None:
    depths = queue_depths(_backlog(), T0 + HOUR_MS, tenant_id="globex")
    assert set(depths) == {"globex-search"}
    assert depths["globex-search"].by_priority["P4"] == 1


def test_open_escalations_most_urgent_first_by_queue_and_tenant() -> None:
    state = _backlog()
    assert [e.escalation_id for e in open_escalations(state)] == [
        "esc_2",
        "esc_1",
        "esc_3",
        "esc_4",
        "esc_5",
    ]
    assert [e.escalation_id for e in open_escalations(state, queue="central")] == ["esc_4"]
    assert [e.escalation_id for e in open_escalations(state, tenant_id="globex")] == ["esc_5"]


# --- bounds -----------------------------------------------------------------------------


def test_resolved_escalations_are_kept_only_for_the_retention() -> None:
    small = dataclasses.replace(CONFIG, resolved_retention=2)
    ids = ("esc_1", "esc_2", "esc_3")
    opens = [escalation_opened(escalation_id=i) for i in ids]
    resolves = [resolve(n, escalation_id=i) for n, i in enumerate(ids, start=1)]
    state, _ = run(*opens, *resolves, config=small)
    assert list(state.resolved) == ["esc_2", "esc_3"]
    assert find(state, "esc_1") is None
    # A duplicate of a retained resolve is still recognised...
    after, notices = fold([opens[2], resolves[2]], small, state)
    assert after == state
    assert [n.reason for n in ignored(list(notices))] == ["duplicate", "duplicate"]
    # ...and one of an evicted escalation by its producer's watermark: a resend however
    # late is a duplicate.
    after, notices = evolve(state, opens[0], small)
    assert after == state
    assert [n.reason for n in ignored(list(notices))] == ["duplicate"]
    # Without the watermark (evicted, or an unsealed record) the retention bounds how late
    # a redelivery may be: an evicted escalation opens again.
    forgetful = dataclasses.replace(small, opened_watermarks=1)
    state, _ = run(
        *opens, *resolves, escalation_opened(producer_id="gateway-other"), config=forgetful
    )
    after, _ = evolve(state, opens[0], forgetful)
    assert the(after, "esc_1").status == "open"


def test_opens_beyond_the_capacity_are_refused_not_the_oldest() -> None:
    small = dataclasses.replace(CONFIG, max_unresolved=2)
    state, notices = run(
        escalation_opened(escalation_id="esc_1"),
        escalation_opened(escalation_id="esc_2"),
        claim(1, escalation_id="esc_3"),
        escalation_opened(escalation_id="esc_3"),
        config=small,
    )
    assert list(state.unresolved) == ["esc_1", "esc_2"]
    assert state.early == {}
    assert ignored(notices) == [
        Ignored("esc_3", "opened", "over_capacity"),
        Ignored("esc_3", "claimed", "over_capacity"),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"central_queue": ""},
        {"sla_ms": {"P1": 1, "P2": 1, "P3": 1}},
        {"sla_ms": {"P1": 0, "P2": 1, "P3": 1, "P4": 1}},
        {"resolved_retention": 0},
        {"early_buffer_ids": 0},
        {"early_actions_per_id": 0},
        {"max_unresolved": 0},
    ],
)
def test_a_config_that_cannot_work_is_a_programmer_error(bad: dict[str, Any]) -> None:
    with pytest.raises(AssertionError):
        EscalationConfig(**bad)


def test_fold_is_evolve_one_input_at_a_time() -> None:
    events: list[Input] = [
        claim(1, escalation_id="esc_2"),
        escalation_opened(escalation_id="esc_1", priority="P1"),
        escalation_opened(escalation_id="esc_2"),
        reassign(2, "central", escalation_id="esc_1"),
        Tick(T0 + HOUR_MS),
        resolve(3, escalation_id="esc_1"),
    ]
    state, collected = Queues(), list[Notice]()
    for event in events:
        state, notices = evolve(state, event, CONFIG)
        collected.extend(notices)
    assert (state, tuple(collected)) == fold(events, CONFIG)


# --- property: redelivery ---------------------------------------------------------------

IDS = ("esc_a", "esc_b")
ACTORS = (DANA, LEE)
PRODUCERS = (ADMIN, "admin-2b3c4d")

steps = st.one_of(
    st.tuples(st.just("open"), st.sampled_from(IDS)),
    st.tuples(st.just("claim"), st.sampled_from(IDS), st.sampled_from(ACTORS)),
    st.tuples(st.just("reassign"), st.sampled_from(IDS), st.sampled_from((None, *ACTORS))),
    st.tuples(st.just("resolve"), st.sampled_from(IDS), st.sampled_from(("approve", "reject"))),
    st.tuples(
        st.just("tick"),
        st.sampled_from((0, 10 * MINUTE_MS, 31 * MINUTE_MS, 2 * HOUR_MS + 1, 3 * HOUR_MS)),
    ),
).flatmap(lambda step: st.tuples(st.just(step), st.sampled_from(PRODUCERS)))


def _history(drawn: list[tuple[tuple[Any, ...], str]]) -> list[Input]:
    """Realistic inputs: one open per id (P1 or P2), actions with per-producer seqs,
    ticks moving forward; actions may precede their open."""
    seqs = Counter[str]()
    now_ms = T0
    history: list[Input] = []
    opens = {
        i: escalation_opened(escalation_id=i, priority=("P1", "P2")[n], seq=n + 1)
        for n, i in enumerate(IDS)
    }
    for step, producer in drawn:
        if step[0] == "tick":
            now_ms += step[1]
            history.append(Tick(now_ms))
            continue
        if step[0] == "open":
            history.append(opens[step[1]])
            continue
        seqs[producer] += 1
        common = {"escalation_id": step[1], "producer_id": producer, "at": now_ms}
        if step[0] == "claim":
            history.append(claim(seqs[producer], step[2], **common))
        elif step[0] == "reassign":
            history.append(reassign(seqs[producer], "central", step[2], **common))
        else:
            history.append(resolve(seqs[producer], step[2], **common))
    return history


@settings(max_examples=200, deadline=None)
@given(st.lists(steps, max_size=25), st.data())
def test_redelivery_anywhere_after_the_original_changes_nothing(
    drawn: list[tuple[tuple[Any, ...], str]], data: st.DataObject
) -> None:
    history = _history(drawn)
    redeliveries = data.draw(
        st.lists(
            st.tuples(st.integers(0, max(len(history) - 1, 0)), st.integers(0, 30)),
            max_size=15,
        )
        if history
        else st.just([])
    )
    # Each redelivery is of an input already read, at some later point.
    delivered: list[Input] = []
    later: dict[int, list[Input]] = {}
    for index, delay in redeliveries:
        later.setdefault(min(index + delay, len(history) - 1), []).append(history[index])
    for position, event in enumerate(history):
        delivered.append(event)
        delivered.extend(later.get(position, []))

    expected, expected_notices = fold(history, CONFIG)
    state, notices = fold(delivered, CONFIG)
    assert state == expected
    assert breaches(list(notices)) == breaches(list(expected_notices))
    breached = Counter(b.escalation_id for b in breaches(list(notices)))
    assert all(count == 1 for count in breached.values())
    assert all(e.status == "resolved" for e in state.resolved.values())
    for escalation in state.unresolved.values():
        assert (escalation.status == "claimed") == (escalation.claimed_by is not None)
