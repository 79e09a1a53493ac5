"""Thin Faust adapter: lineage records in, one-minute SLA windows and SLA alerts out.

The state lives in this process's memory (see README.md for what a restart does): the
intake hands it batches of lineage to fold, a timer publishes the windows `closed` returns,
and a graceful stop publishes every window still open.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import structlog

from schemas.authn import SignedChain
from schemas.ids import now_ms, uuid7
from schemas.records import LineageRecord
from schemas.settings import SettingsError, StreamSettings
from schemas.topics import ALERTS, DLQ, SLA
from streams.dead_letters import rejecter
from streams.intake import RAW, Decoded, Domain
from streams.sla import logic
from streams.sla.records import to_breached, to_window

log = structlog.get_logger(__name__)

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


def register(app: Any, settings: StreamSettings, chain: SignedChain) -> Domain:
    """The SLA batch handler for the intake; registers its closing timer and stop hook."""
    targets = targets_of(settings)
    grace_ms, retention_ms = settings.sla_grace_ms, settings.sla_retention_ms
    windows = app.topic(SLA.name, **RAW)
    alerts = app.topic(ALERTS.name, **RAW)
    dead_letters = app.topic(DLQ.name, **RAW)
    held = _Held()

    reject = rejecter(dead_letters, chain, CONSUMER)

    async def fold_batch(batch: Sequence[Decoded]) -> None:
        calls = [(d.received, d.record) for d in batch if isinstance(d.record, LineageRecord)]
        try:
            held.state = logic.fold((call for _, call in calls), held.state)
        except ValueError:  # one record is unmeasurable: find it, keep the rest
            for received, call in calls:
                try:
                    held.state = logic.apply(held.state, call)
                except ValueError as exc:
                    await reject(received, str(exc))

    async def publish(due: Sequence[logic.WindowSummary], at: int) -> None:
        for summary in due:
            _, data = chain.seal_encoded(to_window(summary, event_id=uuid7(at), occurred_at=at))
            key = f"{summary.provider}/{summary.model_selected}".encode()
            await windows.send(key=key, value=data, headers=chain.headers(data))
            if summary.revision:  # a correction is judged only merged with its minute
                continue
            for breach in logic.breaches(summary, targets):
                alert = to_breached(breach, event_id=uuid7(at), occurred_at=at)
                _, data = chain.seal_encoded(alert)
                headers = chain.headers(data)
                await alerts.send(key=summary.tenant_id.encode(), value=data, headers=headers)

    @app.timer(interval=settings.sla_tick_s)  # type: ignore[untyped-decorator]
    async def close_sla_windows() -> None:
        at = now_ms()
        held.state, due = logic.closed(held.state, at, grace_ms, retention_ms)
        await publish(due, at)

    async def flush_sla_windows() -> None:
        # The intake has folded its last batch and commits after this: publish every
        # open window now, or a graceful restart would lose the minutes in progress.
        at = now_ms()
        last_end = max((w.end_ms for w in held.state.windows.values()), default=0)
        held.state, due = logic.closed(held.state, max(at, last_end + grace_ms), grace_ms)
        await publish(due, at)
        log.info("sla windows flushed at stop", windows=len(due))

    return Domain(fold_batch, on_stop=flush_sla_windows)
