"""Thin Faust adapter: escalations opened and reviewers' actions in, SLA alerts out.

The queues live in this process's memory, one `Queues` per worker, rebuilt from history
whenever partitions are assigned (see README.md): the agent folds each escalation record
into them, and a timer folds a `Tick` and publishes every `EscalationOverdue` it causes as a
sealed `escalation.sla_breached` alert, acknowledged before the next fold.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import structlog

from schemas import authn, codec
from schemas.authn import SignedChain
from schemas.ids import now_ms
from schemas.kafka import TopicTailer
from schemas.records import EscalationSlaBreached, Event
from schemas.settings import StreamSettings
from schemas.topics import ALERTS, CONTROL, DLQ, ESCALATIONS
from streams import metrics as stream_metrics
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
REBUILD_TIMEOUT_S = 60.0
"""How long reading the history may take; past it the worker crashes rather than run on
queues that forget escalations (its supervisor restarts it)."""

Partition = tuple[str, int]


async def read_history(bootstrap: str, owned: Iterable[Partition]) -> list[list[Event]]:
    """The records the queues are rebuilt from, per partition in offset order: the owned
    partitions of the escalations and control topics, and every escalation breach alert
    (alerts are keyed by tenant too, but the fold skips alerts of escalations it does not
    hold, so their partitions need not match). Undecodable records are skipped: the agent
    dead-letters them when it reads them."""
    wanted = set(owned)
    logs: dict[Partition, list[Event]] = defaultdict(list)

    def keep(message: Any) -> None:
        where = (message.topic, message.partition)
        if message.topic != ALERTS.name and where not in wanted:
            return
        try:
            record = authn.decode_message(message)
        except codec.DecodeError:
            return  # forged or broken: the agent dead-letters it when it reads it
        if logic.input_of(record) is not None:
            logs[where].append(record)

    tailer = TopicTailer(bootstrap, [ESCALATIONS.name, CONTROL.name, ALERTS.name], keep)
    await tailer.start()
    try:
        await asyncio.wait_for(tailer.caught_up.wait(), timeout=REBUILD_TIMEOUT_S)
    finally:
        await tailer.stop()
    return list(logs.values())


@dataclasses.dataclass(slots=True)
class _Held:
    """The one mutable thing: this worker's queues, replaced by each fold, the partitions
    they cover, and whether they are rebuilt (no tick pages before they are)."""

    state: logic.Queues = dataclasses.field(default_factory=logic.Queues)
    owned: frozenset[Partition] = frozenset()
    ready: bool = False
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


def register(app: Any, settings: StreamSettings, chain: SignedChain) -> Any:
    """Register the escalations agent, its SLA timer and the rebuild on assignment."""
    config = logic.config_of(settings)
    # Both topics are keyed by tenant_id and have the same partition count, so Faust
    # gives one worker the same partitions of both: a tenant's opens and actions meet.
    source = app.topic(ESCALATIONS.name, CONTROL.name, **RAW)
    alerts = app.topic(ALERTS.name, **RAW)
    dead_letters = app.topic(DLQ.name, **RAW)
    held = _Held()
    metrics = stream_metrics.of(app)
    metrics.watch_escalations(lambda: held.state.unresolved if held.ready else None)

    def report(notices: tuple[logic.Notice, ...]) -> list[logic.EscalationOverdue]:
        breaches = []
        for notice in notices:
            if isinstance(notice, logic.EscalationOverdue):
                breaches.append(notice)
            elif isinstance(notice, logic.Ignored):
                log.info("escalation input ignored", **dataclasses.asdict(notice))
            else:
                log.debug("escalation routed", **dataclasses.asdict(notice))
        return breaches

    reject = rejecter(dead_letters, chain, CONSUMER)

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
    async def escalations_revoked(_app: Any, revoked: Any, **_: Any) -> None:
        # A tick in flight finishes (its alerts acknowledged) before another worker may
        # rebuild these tenants from the alerts topic; none starts until the rebuild.
        async with held.lock:
            held.ready = False

    @app.on_partitions_assigned.connect  # type: ignore[untyped-decorator]
    async def escalations_assigned(_app: Any, assigned: Any, **_: Any) -> None:
        owned = frozenset(
            (tp.topic, tp.partition)
            for tp in assigned
            if tp.topic in (ESCALATIONS.name, CONTROL.name)
        )
        async with held.lock:
            history = await read_history(settings.kafka_bootstrap, owned)
            held.state, notices = logic.rebuild(history, config)
            held.owned, held.ready = owned, True
        log.info(
            "escalation queues rebuilt",
            partitions=len(owned),
            unresolved=len(held.state.unresolved),
            ignored=sum(isinstance(n, logic.Ignored) for n in notices),
        )

    @app.agent(source)  # type: ignore[untyped-decorator]
    async def escalations(stream: Any) -> None:
        async for event in stream.events():
            try:
                record = authn.decode_message(event.message)
            except codec.DecodeError as exc:
                await reject(event, str(exc))
                continue
            metrics.folded("escalations", record.occurred_at)
            change = logic.input_of(record)
            if change is None or isinstance(change, EscalationSlaBreached):
                continue
            async with held.lock:
                tp = event.message.tp
                if (tp.topic, tp.partition) not in held.owned:
                    continue  # buffered before a rebalance took the partition away
                held.state, notices = logic.evolve(held.state, change, config)
            report(notices)  # opens and actions never breach; only ticks do

    @app.timer(interval=settings.escalation_tick_s)  # type: ignore[untyped-decorator]
    async def escalation_sla_tick() -> None:
        async with held.lock:
            if not held.ready:
                return
            at = now_ms()
            state, notices = logic.evolve(held.state, logic.Tick(at), config)
            for breach in report(notices):
                _, data = chain.seal_encoded(logic.to_alert(breach, occurred_at=at))
                # Acknowledged under the lock: a rebuild reading the alerts topic sees it.
                headers = chain.headers(data)
                await (
                    await alerts.send(key=breach.tenant_id.encode(), value=data, headers=headers)
                )
                metrics.sla_breached(breach.priority)
                log.info(
                    "escalation sla breached",
                    escalation_id=breach.escalation_id,
                    priority=breach.priority,
                    queue=breach.queue,
                )
            # Kept only once every alert is acknowledged: a failed send pages again at the
            # next tick, under the same derived id (the sink keeps one), never not at all.
            held.state = state

    return escalations
