"""A gateway's view keeps claims and reassigns, so its listing shows who holds an
escalation before it is decided, whichever gateway took the claim."""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.admin.escalations import escalation_listing
from gateway.views import MAX_CHANGES_PER_ESCALATION, LocalViews
from schemas.topics import CONTROL, ESCALATIONS
from streams.escalations.logic import EscalationConfig
from tests.unit import builders
from tests.unit.builders import T0

ESC = "esc_0193a1b2c3"


def message(topic: str, record: Any) -> Any:
    return builders.signed_message(topic, record)


def listing(views: LocalViews) -> list[dict[str, Any]]:
    opened = list(views.escalations.values())
    changes = (c for o in opened for c in views.escalation_changes.get(o.escalation_id, ()))
    return escalation_listing(
        opened, changes, views.escalation_decisions, EscalationConfig(), now=T0 + 1
    )


def test_a_claim_read_from_the_control_topic_shows_in_the_listing() -> None:
    views = LocalViews()
    views.apply(message(ESCALATIONS.name, builders.escalation_opened(occurred_at=T0)))
    claim = builders.escalation_claimed(occurred_at=T0 + 1, actor="dana")
    views.apply(message(CONTROL.name, claim))
    views.apply(message(CONTROL.name, claim))  # redelivered: kept once
    assert views.escalation_changes == {ESC: [claim]}
    (row,) = listing(views)
    assert (row["status"], row["claimed_by"]) == ("claimed", "dana")


def test_a_reassign_read_from_the_control_topic_moves_the_listed_escalation() -> None:
    views = LocalViews()
    views.apply(message(ESCALATIONS.name, builders.escalation_opened(occurred_at=T0)))
    views.apply(message(CONTROL.name, builders.escalation_claimed(seq=1, actor="dana")))
    reassign = dataclasses.replace(
        builders.escalation_claimed(seq=2, actor="lead", queue="central", reviewer="lee"),
        event_type="escalation.reassigned",
    )
    views.apply(message(CONTROL.name, reassign))
    (row,) = listing(views)
    assert (row["queue"], row["status"], row["claimed_by"]) == ("central", "claimed", "lee")


def test_changes_kept_per_escalation_are_bounded() -> None:
    views = LocalViews()
    for seq in range(1, MAX_CHANGES_PER_ESCALATION + 10):
        views.apply(message(CONTROL.name, builders.escalation_claimed(seq=seq)))
    kept = views.escalation_changes[ESC]
    assert len(kept) == MAX_CHANGES_PER_ESCALATION
    assert kept[-1].seq == MAX_CHANGES_PER_ESCALATION + 9
