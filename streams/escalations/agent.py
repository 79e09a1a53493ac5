"""Thin Faust adapter: escalations opened and reviewers' actions in, SLA alerts out.

The queues live in this process's memory, one `Queues` per worker (see README.md for the
partitioning and what a restart or a rebalance does): the agent folds each escalation
record into them, and a timer folds a `Tick` and publishes every `SlaBreached` it causes
as a sealed `escalation.sla_breached` alert.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import structlog

from schemas import codec
from schemas.ids import now_ms, uuid7
from schemas.settings import StreamSettings
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
# --- the adapter --------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Held:
    """The one mutable thing: this worker's queues, replaced by each fold."""

    state: logic.Queues = dataclasses.field(default_factory=logic.Queues)


def register(app: Any, settings: StreamSettings, producer_id: str) -> Any:
    """Register the escalations agent and its SLA timer on the app."""
    config = logic.config_of(settings)
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
            change = logic.input_of(record)
            if change is None:
                continue
            held.state, notices = logic.evolve(held.state, change, config)
            report(notices)  # opens and actions never breach; only ticks do

    @app.timer(interval=settings.escalation_tick_s)  # type: ignore[untyped-decorator]
    async def escalation_sla_tick() -> None:
        at = now_ms()
        held.state, notices = logic.evolve(held.state, logic.Tick(at), config)
        for breach in report(notices):
            _, data = chain.seal_encoded(logic.to_alert(breach, event_id=uuid7(at), occurred_at=at))
            await alerts.send(key=breach.tenant_id.encode(), value=data)
            log.info(
                "escalation sla breached",
                escalation_id=breach.escalation_id,
                priority=breach.priority,
                queue=breach.queue,
            )

    return escalations
