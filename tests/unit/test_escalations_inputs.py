"""Escalation inputs from records and settings: settings to config, records to inputs, alerts."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from schemas import codec
from schemas.records import EscalationSlaBreached
from schemas.settings import SettingsError, StreamSettings
from streams.escalations.logic import (
    DEFAULT_SLA_MS,
    Claimed,
    EscalationOverdue,
    Reassigned,
    Tick,
    action_of,
    breach_alert_id,
    config_of,
    find,
    fold,
    input_of,
    parse_sla_s,
    to_alert,
)
from tests.unit import builders
from tests.unit.builders import T0, TENANT

ESC = "esc_0193a1b2c3"


def changed(event_type: str = "escalation.claimed", **fields: Any) -> Any:
    """A claim, or with another event type a reassign (or something unknown)."""
    return dataclasses.replace(builders.escalation_claimed(**fields), event_type=event_type)


def test_the_default_setting_is_the_logic_s_default_sla() -> None:
    assert parse_sla_s(StreamSettings().escalation_sla_s) == dict(DEFAULT_SLA_MS)


def test_slas_are_seconds_per_priority_in_any_order_with_spaces() -> None:
    assert parse_sla_s(" P4=86400, P1=2 ,P3=60,P2=90,") == {
        "P1": 2_000,
        "P2": 90_000,
        "P3": 60_000,
        "P4": 86_400_000,
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("P1=30,P2=120,P3=480", "no SLA for P4"),
        ("P1=30,P1=40,P2=1,P3=1,P4=1", "named twice"),
        ("P0=30,P1=1,P2=1,P3=1,P4=1", "unknown priority 'P0'"),
        ("P1=0,P2=1,P3=1,P4=1", "whole number of seconds"),
        ("P1=1.5,P2=1,P3=1,P4=1", "whole number of seconds"),
        ("P1,P2=1,P3=1,P4=1", "whole number of seconds"),
    ],
)
def test_unusable_slas_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_sla_s(text)


def test_the_config_comes_from_the_settings() -> None:
    config = config_of(
        StreamSettings(
            escalation_central_categories=" legal, security ,,",
            escalation_sla_s="P1=60,P2=120,P3=180,P4=240",
        )
    )
    assert config.cross_boundary_categories == {"legal", "security"}
    assert dict(config.sla_ms) == {"P1": 60_000, "P2": 120_000, "P3": 180_000, "P4": 240_000}
    assert config.central_queue == "central"


@pytest.mark.parametrize(
    "settings",
    [{"escalation_sla_s": "P1=60"}, {"escalation_tick_s": 0.0}],
)
def test_bad_settings_name_the_variable(settings: dict[str, Any]) -> None:
    with pytest.raises(SettingsError, match="GOVLEDGER_ESCALATION_"):
        config_of(StreamSettings(**settings))


def test_a_claim_record_is_a_claim_by_its_actor() -> None:
    record = builders.escalation_claimed(seq=6, occurred_at=T0 + 60_000)
    assert action_of(record) == Claimed(
        escalation_id=ESC,
        tenant_id=TENANT,
        actor="reviewer@acme.example",
        occurred_at=T0 + 60_000,
        producer_id="admin-7f3e9d",
        seq=6,
    )


def test_a_reassign_record_moves_it_unclaimed_or_to_a_reviewer() -> None:
    unclaimed = changed("escalation.reassigned", queue="central")
    to_lee = changed("escalation.reassigned", queue="central", reviewer="lee")
    moved = action_of(unclaimed)
    assert isinstance(moved, Reassigned)
    assert (moved.queue, moved.reviewer) == ("central", None)
    assigned = action_of(to_lee)
    assert isinstance(assigned, Reassigned)
    assert assigned.reviewer == "lee"


def test_records_the_queues_cannot_use_are_left_out() -> None:
    assert action_of(changed("escalation.reassigned")) is None  # no queue
    assert action_of(changed("escalation.escalated", queue="central")) is None
    assert input_of(builders.key_issued()) is None
    assert input_of(builders.budget_set()) is None
    opened, resolved = builders.escalation_opened(), builders.escalation_resolved()
    assert input_of(opened) is opened
    assert input_of(resolved) is resolved
    assert isinstance(input_of(builders.escalation_claimed()), Claimed)
    alert = builders.escalation_sla_breached()
    assert input_of(alert) is alert  # read back when the queues are rebuilt


def test_the_inputs_fold_into_a_claimed_escalation_that_breaches_once() -> None:
    records = [builders.escalation_opened(occurred_at=T0), builders.escalation_claimed()]
    inputs = [i for i in map(input_of, records) if i is not None]
    config = config_of(StreamSettings(escalation_sla_s="P1=1,P2=60,P3=60,P4=60"))
    state, _ = fold(inputs, config)
    escalation = find(state, ESC)
    assert escalation is not None
    assert escalation.status == "claimed"
    assert escalation.deadline_at == T0 + 60_000
    state, notices = fold([Tick(T0 + 60_001), Tick(T0 + 70_000)], config, state)
    assert [type(n) for n in notices] == [EscalationOverdue]


def test_a_breach_becomes_an_escalation_sla_breached_record_that_encodes() -> None:
    breach = EscalationOverdue(ESC, TENANT, "central", "P1", T0, T0 + 500)
    record = to_alert(breach, occurred_at=T0)
    assert record.event_type == "escalation.sla_breached"
    assert record.event_id == breach_alert_id(ESC)
    assert (record.tenant_id, record.escalation_id, record.queue) == (TENANT, ESC, "central")
    assert (record.priority, record.deadline_at, record.breached_at) == ("P1", T0, T0 + 500)
    sealed = codec.HashChain("streams-escalations-1").seal(record)
    assert codec.decode_as(codec.encode(sealed), EscalationSlaBreached) == sealed


def test_a_breach_alert_id_is_derived_from_its_escalation_alone() -> None:
    breach = EscalationOverdue(ESC, TENANT, "central", "P1", T0, T0 + 500)
    # Paged again later (another tick, another worker, a restart): the same id.
    again = dataclasses.replace(breach, queue="team:search", breached_at=T0 + 9_000)
    first = to_alert(breach, occurred_at=T0 + 500)
    assert first.event_id == to_alert(again, occurred_at=T0 + 9_000).event_id
    assert str(uuid.UUID(first.event_id)) == first.event_id  # a canonical UUID string
    assert breach_alert_id("esc_other") != first.event_id
    sealed = codec.HashChain("streams-escalations-2").seal(first)
    assert codec.decode_as(codec.encode(sealed), EscalationSlaBreached).event_id == first.event_id
