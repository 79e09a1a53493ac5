"""The admin API's pure parts for budgets and review queues: thresholds as given, and the
escalation listing folded from what a gateway has heard."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.admin.escalations import escalation_listing
from gateway.admin.wallets import thresholds_of
from schemas.records import EscalationChanged, EscalationOpened
from streams.escalations.logic import MINUTE_MS, EscalationConfig
from tests.unit import builders
from tests.unit.builders import T0

CONFIG = EscalationConfig(cross_boundary_categories=frozenset({"legal"}))
P1_SLA_MS = 30 * MINUTE_MS
P2_SLA_MS = 120 * MINUTE_MS


def opened(
    escalation_id: str, priority: str = "P2", at: int = T0, **fields: object
) -> EscalationOpened:
    return builders.escalation_opened(
        escalation_id=escalation_id, priority=priority, occurred_at=at, **fields
    )


def claim(
    escalation_id: str, seq: int, actor: str = "key:key_dana", **fields: object
) -> EscalationChanged:
    return builders.escalation_claimed(escalation_id=escalation_id, seq=seq, actor=actor, **fields)


def reassign(escalation_id: str, seq: int, queue: str, reviewer: str = "") -> EscalationChanged:
    return dataclasses.replace(
        claim(escalation_id, seq, queue=queue, reviewer=reviewer),
        event_type="escalation.reassigned",
    )


@pytest.mark.parametrize(
    ("given", "thresholds"),
    [(None, (50, 80, 100)), ([25, 75], (25, 75)), ("50, 90,100", (50, 90, 100)), ([], ())],
)
def test_thresholds_are_taken_as_given(given: object, thresholds: tuple[int, ...]) -> None:
    assert thresholds_of(given) == thresholds


@pytest.mark.parametrize("given", ["50,,80", "half", [50, "80"], [True], 80, {"a": 1}])
def test_thresholds_that_are_not_whole_percentages_are_refused(given: object) -> None:
    with pytest.raises(ValueError, match="thresholds"):
        thresholds_of(given)


def test_open_escalations_are_listed_most_urgent_first_with_age_and_deadline() -> None:
    rows = escalation_listing(
        [
            opened("esc_p2", "P2", T0),
            opened("esc_p1", "P1", T0 + MINUTE_MS),
            opened("esc_legal", "P2", T0, category="legal"),
        ],
        [],
        {},
        CONFIG,
        now=T0 + 10 * MINUTE_MS,
    )
    assert [r["escalation_id"] for r in rows] == ["esc_p1", "esc_legal", "esc_p2"]
    first = rows[0]
    assert (first["priority"], first["queue"], first["status"]) == ("P1", "team:search", "open")
    assert first["age_ms"] == 9 * MINUTE_MS
    assert first["deadline_at_ms"] == T0 + MINUTE_MS + P1_SLA_MS
    assert first["overdue"] is False and first["decision"] is None
    assert rows[1]["queue"] == "central"
    assert rows[2]["deadline_at_ms"] == T0 + P2_SLA_MS


def test_claims_and_reassigns_show_and_the_first_claim_wins() -> None:
    rows = escalation_listing(
        [opened("esc_a"), opened("esc_b"), opened("esc_c")],
        [
            claim("esc_a", 1),
            claim("esc_a", 2, actor="key:key_lee"),  # too late: dana has it
            claim("esc_b", 3),
            reassign("esc_b", 4, "central"),
            reassign("esc_c", 5, "central", reviewer="lee"),
        ],
        {},
        CONFIG,
        now=T0,
    )
    by_id = {r["escalation_id"]: r for r in rows}
    assert (by_id["esc_a"]["status"], by_id["esc_a"]["claimed_by"]) == ("claimed", "key:key_dana")
    assert (by_id["esc_b"]["status"], by_id["esc_b"]["queue"]) == ("open", "central")
    assert by_id["esc_b"]["claimed_by"] is None
    assert (by_id["esc_c"]["status"], by_id["esc_c"]["claimed_by"]) == ("claimed", "lee")


def test_decided_escalations_leave_the_open_list_and_are_listed_as_resolved() -> None:
    escalations = [opened("esc_a"), opened("esc_b", "P1")]
    decisions = {"esc_a": "reject"}
    late = T0 + P1_SLA_MS + 1

    def ids(status: str) -> list[str]:
        rows = escalation_listing(escalations, [], decisions, CONFIG, now=late, status=status)
        return [r["escalation_id"] for r in rows]

    assert ids("open") == ["esc_b"]
    assert ids("resolved") == ["esc_a"]
    assert ids("all") == ["esc_b", "esc_a"]
    rows = escalation_listing(escalations, [], decisions, CONFIG, now=late, status="all")
    assert rows[0]["overdue"] is True  # undecided past its deadline
    assert (rows[1]["status"], rows[1]["decision"], rows[1]["overdue"]) == (
        "resolved",
        "reject",
        False,
    )


def test_the_queue_filter_and_tenants_pass_through() -> None:
    rows = escalation_listing(
        [opened("esc_a"), opened("esc_b", category="legal", tenant_id="globex")],
        [],
        {},
        CONFIG,
        now=T0,
        queue="central",
    )
    assert [(r["escalation_id"], r["tenant_id"]) for r in rows] == [("esc_b", "globex")]
    assert escalation_listing([], [], {}, CONFIG, now=T0) == []
