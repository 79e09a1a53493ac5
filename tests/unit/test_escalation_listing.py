"""The one escalation listing shape (schemas/escalation_listing.py): the status filter
with its default, which escalations a filter lists, and a row's fields whichever route
answers it."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.admin.escalations import escalation_listing
from schemas.escalation_listing import (
    DEFAULT_ESCALATION_STATUS,
    ESCALATION_STATUSES,
    escalation_page,
    escalation_row,
    escalation_status,
    is_listed,
)
from streams.escalations.logic import EscalationConfig
from tests.unit import builders
from tests.unit.builders import T0

# Every field of a listed escalation, units last, in the order answered.
FIELDS = [
    "escalation_id",
    "tenant_id",
    "team_id",
    "key_id",
    "policy_pack",
    "category",
    "priority",
    "mode",
    "reason",
    "model_requested",
    "trace_id",
    "queue",
    "status",
    "claimed_by",
    "decision",
    "resolved_by",
    "opened_at_ms",
    "age_ms",
    "deadline_at_ms",
    "overdue",
    "resolved_at_ms",
]


def stored_row(**fields: Any) -> dict[str, Any]:
    """A row as the query API builds it from the store: no queue, claim or deadline."""
    given: dict[str, Any] = {
        "escalation_id": "esc_1",
        "tenant_id": "acme",
        "team_id": "search",
        "key_id": "key_1",
        "policy_pack": "default",
        "category": "clinical",
        "priority": "P2",
        "mode": "hold",
        "reason": "review",
        "model_requested": "sim-small",
        "trace_id": "t",
        "opened_at_ms": T0,
        "decision": None,
        "now_ms": T0 + 5,
    }
    return escalation_row(**{**given, **fields})


def test_the_default_status_is_open_and_only_the_three_are_accepted() -> None:
    assert escalation_status(None) == DEFAULT_ESCALATION_STATUS == "open"
    assert [escalation_status(s) for s in ESCALATION_STATUSES] == ["open", "resolved", "all"]
    for bad in ("", "OPEN", "maybe", "open ", "all;"):
        with pytest.raises(ValueError, match="open, resolved or all"):
            escalation_status(bad)


@pytest.mark.parametrize(
    ("status", "undecided_listed", "decided_listed"),
    [("open", True, False), ("resolved", False, True), ("all", True, True)],
)
def test_a_status_lists_undecided_or_decided_escalations(
    status: str, undecided_listed: bool, decided_listed: bool
) -> None:
    assert is_listed(status, decided=False) is undecided_listed
    assert is_listed(status, decided=True) is decided_listed


def test_both_routes_answer_the_same_fields() -> None:
    admin_rows = escalation_listing(
        [builders.escalation_opened(occurred_at=T0)], [], {}, EscalationConfig(), now=T0 + 5
    )
    assert list(admin_rows[0]) == FIELDS
    assert list(stored_row()) == FIELDS
    assert admin_rows[0]["key_id"] == builders.escalation_opened().key_id


def test_what_the_store_does_not_know_is_null_and_a_decision_resolves() -> None:
    row = stored_row(decision="reject", resolved_by="key:key_dana", resolved_at_ms=T0 + 3)
    assert (row["queue"], row["claimed_by"], row["deadline_at_ms"], row["overdue"]) == (
        None,
        None,
        None,
        None,
    )
    assert (row["status"], row["resolved_by"], row["age_ms"]) == ("resolved", "key:key_dana", 5)
    assert stored_row()["status"] == "open"


def test_overdue_is_an_undecided_escalation_past_its_deadline() -> None:
    late = stored_row(deadline_at_ms=T0 + 1)
    assert late["overdue"] is True
    assert stored_row(deadline_at_ms=T0 + 1, decision="approve")["overdue"] is False
    assert stored_row(deadline_at_ms=T0 + 5)["overdue"] is False


def test_the_page_names_its_filters() -> None:
    page = escalation_page([stored_row()], status="all", tenant_id=None)
    assert page == {"tenant_id": None, "status": "all", "data": [stored_row()]}
