"""The table of settings that contradict each other (govledger.doctor.contradictions):
the defaults contradict nothing, and each rule holds for the values it is about."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from govledger.doctor.checks import Status
from govledger.doctor.contradictions import RULES, contradictions
from schemas.settings import ALL_SETTINGS, known_env_names


def defaults() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for cls in ALL_SETTINGS:
        values.update(dataclasses.asdict(cls()))
    return values


def fired(**changes: Any) -> set[str]:
    """The names (first setting) of the rules that hold after `changes`."""
    return {c.rule.names[0] for c in contradictions({**defaults(), **changes})}


def test_the_default_settings_contradict_nothing() -> None:
    assert contradictions(defaults()) == []


def test_every_rule_names_settings_that_exist() -> None:
    for rule in RULES:
        for name in rule.names:
            assert f"GOVLEDGER_{name.upper()}" in known_env_names(), name


@pytest.mark.parametrize(
    ("changes", "rule", "status"),
    [
        ({"retry_backoff_ms": 5_000, "retry_max_wait_ms": 1_000}, "retry_backoff_ms", Status.FAIL),
        (
            {"retry_max_wait_ms": 90_000, "upstream_timeout_s": 30.0},
            "retry_max_wait_ms",
            Status.WARN,
        ),
        (
            {"lineage_max_pending": 100, "max_concurrent_upstream": 512},
            "lineage_max_pending",
            Status.WARN,
        ),
        ({"sla_grace_ms": 60_000, "sla_retention_ms": 30_000}, "sla_grace_ms", Status.FAIL),
        ({"sla_tick_s": 60.0, "sla_grace_ms": 30_000}, "sla_tick_s", Status.WARN),
        (
            {"escalation_tick_s": 30.0, "escalation_sla_s": "P1=20,P2=7200"},
            "escalation_tick_s",
            Status.FAIL,
        ),
        (
            {"outbox_resend_after_s": 0.2, "sink_flush_ms": 250},
            "outbox_resend_after_s",
            Status.FAIL,
        ),
        (
            {"sla_resend_after_s": 0.2, "sink_flush_ms": 250},
            "sla_resend_after_s",
            Status.FAIL,
        ),
        (
            {"worker_commit_stall_s": 10.0, "kafka_session_timeout_ms": 30_000},
            "worker_commit_stall_s",
            Status.WARN,
        ),
        (
            {"start_timeout_s": 5.0, "kafka_session_timeout_ms": 6_000},
            "start_timeout_s",
            Status.FAIL,
        ),
        (
            {"restart_backoff_max_s": 60.0, "restart_window_s": 60.0},
            "restart_backoff_max_s",
            Status.WARN,
        ),
        ({"gateway_port": 9000, "query_port": 9000}, "gateway_port", Status.FAIL),
        (
            {"doctor_check_timeout_s": 30.0, "doctor_timeout_s": 10.0},
            "doctor_check_timeout_s",
            Status.WARN,
        ),
    ],
)
def test_a_rule_holds_for_the_values_it_is_about(
    changes: dict[str, Any], rule: str, status: Status
) -> None:
    found = [
        c for c in contradictions({**defaults(), **changes}) if set(changes) <= set(c.rule.names)
    ]
    assert len(found) == 1
    assert found[0].rule.status is status
    assert found[0].text().startswith(f"GOVLEDGER_{rule.upper()}")


def test_the_outbox_rules_are_two_rules() -> None:
    # Resending before the store retry's longest wait is a warning, not the flush's failure.
    assert fired(outbox_resend_after_s=20.0) == {"outbox_resend_after_s"}
    assert [
        c.rule.status for c in contradictions({**defaults(), "outbox_resend_after_s": 20.0})
    ] == [Status.WARN]


def test_retries_off_silence_the_retry_wait_rule() -> None:
    assert fired(retry_max_wait_ms=90_000, upstream_timeout_s=30.0, upstream_retries=0) == set()


def test_a_disabled_worker_web_port_shares_no_port() -> None:
    assert fired(worker_web_port=0, gateway_port=9000) == set()


def test_a_rule_about_a_setting_not_given_is_skipped() -> None:
    assert contradictions({"retry_backoff_ms": 5_000}) == []


def test_an_unparsable_escalation_sla_contradicts_nothing() -> None:
    assert fired(escalation_sla_s="P1=soon") == set()
