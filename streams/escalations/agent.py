"""Thin Faust adapter: escalations opened and reviewers' actions in, SLA alerts out.

The queues live in this process's memory, one `Queues` per worker (see README.md for the
partitioning and what a restart or a rebalance does): the agent folds each escalation
record into them, and a timer folds a `Tick` and publishes every `SlaBreached` it causes
as a sealed `escalation.sla_breached` alert.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import structlog

from schemas import codec
from schemas.ids import now_ms, uuid7
from schemas.records import (
    EscalationChanged,
    EscalationOpened,
    EscalationResolved,
    EscalationSlaBreached,
    Event,
)
from schemas.settings import SettingsError, StreamSettings, env_name
from schemas.topics import ALERTS, CONTROL, DLQ, ESCALATIONS
from streams.dead_letters import rejecter
from streams.escalations import logic

log = structlog.get_logger(__name__)

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
CONSUMER = "streams.escalations"
CLAIMED = "escalation.claimed"
REASSIGNED = "escalation.reassigned"


# --- pure helpers: settings and records in, logic inputs and alerts out ------------------


def parse_sla_s(text: str) -> dict[logic.Priority, int]:
    """'P1=1800,P2=7200,…' as milliseconds per priority. Every priority must be named
    once, with a whole number of seconds >= 1; ValueError says what is wrong."""
    sla_ms: dict[logic.Priority, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        label, _, seconds = item.partition("=")
        label, seconds = label.strip(), seconds.strip()
        if label not in logic.PRIORITIES:
            raise ValueError(f"unknown priority {label!r} (P1..P4) in {text!r}")
        priority = logic.priority_of(label)
        if priority in sla_ms:
            raise ValueError(f"priority {label} named twice in {text!r}")
        if not seconds.isdigit() or int(seconds) < 1:
            raise ValueError(f"{label} needs a whole number of seconds >= 1, not {seconds!r}")
        sla_ms[priority] = int(seconds) * 1_000
    missing = [p for p in logic.PRIORITIES if p not in sla_ms]
    if missing:
        raise ValueError(f"no SLA for {', '.join(missing)} in {text!r}")
    return sla_ms


def config_of(settings: StreamSettings) -> logic.EscalationConfig:
    """The escalation config the settings name; SettingsError for unusable values."""
    try:
        sla_ms = parse_sla_s(settings.escalation_sla_s)
    except ValueError as exc:
        raise SettingsError(f"{env_name('escalation_sla_s')}: {exc}") from exc
    if settings.escalation_tick_s <= 0:
        raise SettingsError(f"{env_name('escalation_tick_s')} must be > 0 seconds")
    central = frozenset(
        c.strip() for c in settings.escalation_central_categories.split(",") if c.strip()
    )
    sla: Mapping[logic.Priority, int] = MappingProxyType(sla_ms)
    return logic.EscalationConfig(cross_boundary_categories=central, sla_ms=sla)


def action_of(record: EscalationChanged) -> logic.Claimed | logic.Reassigned | None:
    """The reviewer action a claim or reassign record carries; None for an event type it
    does not know or a reassign without a queue (the admin API sends neither)."""
    envelope: dict[str, Any] = {
        "escalation_id": record.escalation_id,
        "tenant_id": record.tenant_id,
        "actor": record.actor,
        "occurred_at": record.occurred_at,
        "producer_id": record.producer_id,
        "seq": record.seq,
    }
    if record.event_type == CLAIMED:
        return logic.Claimed(**envelope)
    if record.event_type == REASSIGNED and record.queue:
        return logic.Reassigned(**envelope, queue=record.queue, reviewer=record.reviewer or None)
    return None


def input_of(event: Event) -> logic.Input | None:
    """What the queues fold from a record, or None for records they ignore (most of the
    control topic). Opens and resolves are folded as they are (see `logic.fold`)."""
    if isinstance(event, EscalationOpened | EscalationResolved):
        return event
    if isinstance(event, EscalationChanged):
        return action_of(event)
    return None


def to_alert(
    breach: logic.SlaBreached, *, event_id: str, occurred_at: int
) -> EscalationSlaBreached:
    """The `escalation.sla_breached` record of a breach; the chain seals it."""
    return EscalationSlaBreached(
        event_id=event_id,
        event_type=EscalationSlaBreached.event_type_name,
        occurred_at=occurred_at,
        tenant_id=breach.tenant_id,
        producer_id="",
        seq=0,
        escalation_id=breach.escalation_id,
        queue=breach.queue,
        priority=breach.priority,
        deadline_at=breach.deadline_at,
        breached_at=breach.breached_at,
    )


# --- the adapter --------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Held:
    """The one mutable thing: this worker's queues, replaced by each fold."""

    state: logic.Queues = dataclasses.field(default_factory=logic.Queues)


def register(app: Any, settings: StreamSettings, producer_id: str) -> Any:
    """Register the escalations agent and its SLA timer on the app."""
    config = config_of(settings)
    # Both topics are keyed by tenant_id and have the same partition count, so Faust
    # gives one worker the same partitions of both: a tenant's opens and actions meet.
    source = app.topic(ESCALATIONS.name, CONTROL.name, **RAW)
    alerts = app.topic(ALERTS.name, **RAW)
    dead_letters = app.topic(DLQ.name, **RAW)
    chain = codec.HashChain(producer_id)
    held = _Held()

    def report(notices: tuple[logic.Notice, ...]) -> list[logic.SlaBreached]:
        breaches = []
        for notice in notices:
            if isinstance(notice, logic.SlaBreached):
                breaches.append(notice)
            elif isinstance(notice, logic.Ignored):
                log.info("escalation input ignored", **dataclasses.asdict(notice))
            else:
                log.debug("escalation routed", **dataclasses.asdict(notice))
        return breaches

    reject = rejecter(dead_letters, chain, CONSUMER)

    @app.agent(source)  # type: ignore[untyped-decorator]
    async def escalations(stream: Any) -> None:
        async for event in stream.events():
            try:
                record = codec.decode(event.value)
            except codec.DecodeError as exc:
                await reject(event, str(exc))
                continue
            change = input_of(record)
            if change is None:
                continue
            held.state, notices = logic.evolve(held.state, change, config)
            report(notices)  # opens and actions never breach; only ticks do

    @app.timer(interval=settings.escalation_tick_s)  # type: ignore[untyped-decorator]
    async def escalation_sla_tick() -> None:
        at = now_ms()
        held.state, notices = logic.evolve(held.state, logic.Tick(at), config)
        for breach in report(notices):
            _, data = chain.seal_encoded(to_alert(breach, event_id=uuid7(at), occurred_at=at))
            await alerts.send(key=breach.tenant_id.encode(), value=data)
            log.info(
                "escalation sla breached",
                escalation_id=breach.escalation_id,
                priority=breach.priority,
                queue=breach.queue,
            )

    return escalations
