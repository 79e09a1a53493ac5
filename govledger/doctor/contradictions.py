"""Settings that each pass their own check but contradict each other: one table, one pure
function. Settings are given by field name (`schemas.settings`), merged over every
service's settings class; the rules a settings class already refuses at load are not
repeated here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from govledger.doctor.checks import Status

Values = Mapping[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """A contradiction: the settings it reads, when it holds, how bad, why and the fix."""

    names: tuple[str, ...]
    holds: Callable[[Values], bool]
    status: Status
    why: str
    hint: str


def _smallest_escalation_sla_s(values: Values) -> float:
    """The shortest escalation SLA of `escalation_sla_s` (P1=1800,...); inf if none."""
    seconds = []
    for part in str(values["escalation_sla_s"]).split(","):
        _, _, value = part.partition("=")
        try:
            seconds.append(float(value))
        except ValueError:
            continue
    return min(seconds, default=float("inf"))


def _ports(values: Values) -> list[int]:
    names = ("gateway_port", "query_port", "broker_port", "worker_web_port")
    return [int(values[n]) for n in names if int(values[n]) > 0]


RULES: tuple[Rule, ...] = (
    Rule(
        ("retry_backoff_ms", "retry_max_wait_ms"),
        lambda v: v["retry_backoff_ms"] > v["retry_max_wait_ms"],
        Status.FAIL,
        "the first retry's backoff is longer than the longest wait a retry may have",
        "make GOVLEDGER_RETRY_BACKOFF_MS at most GOVLEDGER_RETRY_MAX_WAIT_MS",
    ),
    Rule(
        ("retry_max_wait_ms", "upstream_timeout_s", "upstream_retries"),
        lambda v: (
            v["upstream_retries"] > 0 and v["retry_max_wait_ms"] > v["upstream_timeout_s"] * 1000
        ),
        Status.WARN,
        "a retry may wait longer than a whole upstream attempt may take",
        "lower GOVLEDGER_RETRY_MAX_WAIT_MS below GOVLEDGER_UPSTREAM_TIMEOUT_S",
    ),
    Rule(
        ("lineage_max_pending", "max_concurrent_upstream"),
        # Each call in flight holds one lineage record until the broker acknowledges it.
        lambda v: v["lineage_max_pending"] < v["max_concurrent_upstream"],
        Status.WARN,
        "calls are refused 503 overloaded for lineage before the concurrency limit is reached",
        "make GOVLEDGER_LINEAGE_MAX_PENDING at least GOVLEDGER_MAX_CONCURRENT_UPSTREAM",
    ),
    Rule(
        ("sla_grace_ms", "sla_retention_ms"),
        lambda v: v["sla_grace_ms"] > v["sla_retention_ms"],
        Status.FAIL,
        "SLA windows stop taking late records before their grace for them ends",
        "make GOVLEDGER_SLA_RETENTION_MS at least GOVLEDGER_SLA_GRACE_MS",
    ),
    Rule(
        ("sla_tick_s", "sla_grace_ms"),
        lambda v: v["sla_tick_s"] * 1000 > v["sla_grace_ms"],
        Status.WARN,
        "SLA windows are published less often than their grace lasts",
        "make GOVLEDGER_SLA_TICK_S shorter than GOVLEDGER_SLA_GRACE_MS",
    ),
    Rule(
        ("escalation_tick_s", "escalation_sla_s"),
        lambda v: v["escalation_tick_s"] >= _smallest_escalation_sla_s(v),
        Status.FAIL,
        "overdue escalations are looked for less often than the shortest SLA lasts",
        "make GOVLEDGER_ESCALATION_TICK_S shorter than the smallest GOVLEDGER_ESCALATION_SLA_S",
    ),
    Rule(
        ("outbox_resend_after_s", "sink_flush_ms"),
        lambda v: v["outbox_resend_after_s"] * 1000 <= v["sink_flush_ms"],
        Status.FAIL,
        "outboxes resend records before the sink has had time to store them",
        "make GOVLEDGER_OUTBOX_RESEND_AFTER_S far longer than GOVLEDGER_SINK_FLUSH_MS",
    ),
    Rule(
        ("outbox_resend_after_s", "sink_store_retry_max_ms"),
        lambda v: v["outbox_resend_after_s"] * 1000 < v["sink_store_retry_max_ms"],
        Status.WARN,
        "outboxes resend while the sink may still be waiting to retry an unwell store",
        "make GOVLEDGER_OUTBOX_RESEND_AFTER_S longer than GOVLEDGER_SINK_STORE_RETRY_MAX_MS",
    ),
    Rule(
        ("worker_commit_stall_s", "kafka_session_timeout_ms"),
        lambda v: v["worker_commit_stall_s"] * 1000 <= v["kafka_session_timeout_ms"],
        Status.WARN,
        "a rebalance after a lost member holds commits longer than the stall threshold",
        "make GOVLEDGER_WORKER_COMMIT_STALL_S longer than GOVLEDGER_KAFKA_SESSION_TIMEOUT_MS",
    ),
    Rule(
        ("start_timeout_s", "kafka_session_timeout_ms"),
        # Tansu joins a group in about half the session timeout; the sink, the worker and
        # its intake join one after another before the stack is ready.
        lambda v: v["start_timeout_s"] * 1000 < 1.5 * v["kafka_session_timeout_ms"],
        Status.FAIL,
        "`up` gives up on a part before its consumer groups can have joined",
        "raise GOVLEDGER_START_TIMEOUT_S or lower GOVLEDGER_KAFKA_SESSION_TIMEOUT_MS",
    ),
    Rule(
        ("restart_backoff_max_s", "restart_window_s"),
        lambda v: v["restart_backoff_max_s"] >= v["restart_window_s"],
        Status.WARN,
        "restarts are spaced wider than the crash-loop window, so no crash loop is seen",
        "make GOVLEDGER_RESTART_BACKOFF_MAX_S shorter than GOVLEDGER_RESTART_WINDOW_S",
    ),
    Rule(
        ("gateway_port", "query_port", "broker_port", "worker_web_port"),
        lambda v: len(set(_ports(v))) < len(_ports(v)),
        Status.FAIL,
        "two parts are set to listen on the same port",
        "give GOVLEDGER_GATEWAY_PORT, _QUERY_PORT, _BROKER_PORT, _WORKER_WEB_PORT distinct values",
    ),
    Rule(
        ("doctor_check_timeout_s", "doctor_timeout_s"),
        lambda v: v["doctor_check_timeout_s"] > v["doctor_timeout_s"],
        Status.WARN,
        "one doctor check may take longer than the whole run",
        "make GOVLEDGER_DOCTOR_CHECK_TIMEOUT_S at most GOVLEDGER_DOCTOR_TIMEOUT_S",
    ),
    Rule(
        ("sla_resend_after_s", "sink_flush_ms"),
        lambda v: v["sla_resend_after_s"] * 1000 <= v["sink_flush_ms"],
        Status.FAIL,
        "the SLA processor resends windows before the sink has had time to store them",
        "make GOVLEDGER_SLA_RESEND_AFTER_S far longer than GOVLEDGER_SINK_FLUSH_MS",
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Contradiction:
    """A rule that holds for the given settings."""

    rule: Rule

    def text(self) -> str:
        """`A, B: why`."""
        names = ", ".join(f"GOVLEDGER_{n.upper()}" for n in self.rule.names)
        return f"{names}: {self.rule.why}"


def contradictions(values: Values, rules: tuple[Rule, ...] = RULES) -> list[Contradiction]:
    """The rules that hold for these settings (a rule naming a setting not given is
    skipped: a service's own settings alone are checked as far as they go)."""
    return [
        Contradiction(rule)
        for rule in rules
        if all(name in values for name in rule.names) and rule.holds(values)
    ]
