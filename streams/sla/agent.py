"""Thin Faust adapter: lineage records in, one-minute SLA windows and SLA alerts out.

The state lives in this process's memory (see README.md for what a restart does): the
agent folds batches of lineage into it, a timer publishes the windows `closed` returns,
and a graceful stop publishes every window still open.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import structlog

from schemas import codec
from schemas.ids import now_ms, uuid7
from schemas.records import LineageRecord
from schemas.settings import SettingsError, StreamSettings
from schemas.topics import ALERTS, DLQ, LINEAGE, SLA
from streams.dead_letters import rejecter
from streams.sla import logic
from streams.sla.records import to_breached, to_window

log = structlog.get_logger(__name__)

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
BATCH_MAX = 5_000
"""Most records folded at once (`stream.take_events`)."""
BATCH_WITHIN_S = 0.5
"""Longest a record waits in the batch before it is folded."""
CONSUMER = "streams.sla"


@dataclasses.dataclass(slots=True)
class _Held:
    """The one mutable thing: the SLA state, replaced by each fold and close."""

    state: logic.SlaState = dataclasses.field(default_factory=logic.SlaState)


def targets_of(settings: StreamSettings) -> logic.SlaTargets:
    """The SLA targets the settings name; SettingsError for values out of range."""
    if settings.sla_grace_ms < 0 or settings.sla_retention_ms < 0 or settings.sla_tick_s <= 0:
        raise SettingsError("SLA grace and retention are >= 0 ms and the tick is > 0 s")
    if not 0.0 <= settings.sla_availability_min <= 1.0:
        raise SettingsError("GOVLEDGER_SLA_AVAILABILITY_MIN is a ratio between 0 and 1")
    if settings.sla_overhead_p99_max_ms <= 0 or settings.sla_min_eligible < 1:
        raise SettingsError("the overhead target is > 0 ms and min eligible >= 1")
    return logic.SlaTargets(
        availability_min=settings.sla_availability_min,
        gateway_overhead_p99_max_ms=settings.sla_overhead_p99_max_ms,
        min_eligible=settings.sla_min_eligible,
    )


def register(app: Any, settings: StreamSettings, producer_id: str) -> Any:
    """Register the SLA agent, its closing timer and its stop hook on the app."""
    targets = targets_of(settings)
    grace_ms, retention_ms = settings.sla_grace_ms, settings.sla_retention_ms
    source = app.topic(LINEAGE.name, **RAW)
    windows = app.topic(SLA.name, **RAW)
    alerts = app.topic(ALERTS.name, **RAW)
    dead_letters = app.topic(DLQ.name, **RAW)
    chain = codec.HashChain(producer_id)
    held = _Held()

    reject = rejecter(dead_letters, chain, CONSUMER)

    async def fold_batch(events: Sequence[Any]) -> None:
        decoded: list[tuple[Any, LineageRecord]] = []
        for event in events:
            try:
                record = codec.decode(event.value)
            except codec.DecodeError as exc:
                await reject(event, str(exc))
                continue
            if isinstance(record, LineageRecord):
                decoded.append((event, record))
        try:
            held.state = logic.fold((r for _, r in decoded), held.state)
        except ValueError:  # one record is unmeasurable: find it, keep the rest
            for event, record in decoded:
                try:
                    held.state = logic.apply(held.state, record)
                except ValueError as exc:
                    await reject(event, str(exc))

    async def publish(due: Sequence[logic.WindowSummary], at: int) -> None:
        for summary in due:
            _, data = chain.seal_encoded(to_window(summary, event_id=uuid7(at), occurred_at=at))
            key = f"{summary.provider}/{summary.model_selected}".encode()
            await windows.send(key=key, value=data)
            if summary.revision:  # a correction is judged only merged with its minute
                continue
            for breach in logic.breaches(summary, targets):
                alert = to_breached(breach, event_id=uuid7(at), occurred_at=at)
                _, data = chain.seal_encoded(alert)
                await alerts.send(key=summary.tenant_id.encode(), value=data)

    @app.agent(source)  # type: ignore[untyped-decorator]
    async def sla_windows(stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            await fold_batch(events)

    @app.timer(interval=settings.sla_tick_s)  # type: ignore[untyped-decorator]
    async def close_sla_windows() -> None:
        at = now_ms()
        held.state, due = logic.closed(held.state, at, grace_ms, retention_ms)
        await publish(due, at)

    @app.on_before_shutdown.connect  # type: ignore[untyped-decorator]
    async def flush_sla_windows(app: Any, **_: Any) -> None:
        # The consumer has stopped and committed what was folded: publish every open
        # window now, or a graceful restart would lose the minutes in progress.
        at = now_ms()
        last_end = max((w.end_ms for w in held.state.windows.values()), default=0)
        held.state, due = logic.closed(held.state, max(at, last_end + grace_ms), grace_ms)
        try:
            await publish(due, at)
        except Exception:  # the stop must go on (and flush the producer) regardless
            log.exception("sla windows lost at stop", windows=len(due))
            return
        log.info("sla windows flushed at stop", windows=len(due))

    return sla_windows
