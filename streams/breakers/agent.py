"""Thin Faust adapter: every gateway's attempts in, fleet-wide breakers and alerts out.

A target hears from every tenant's lineage partition, so `breaker_attempts` first
forwards each lineage record, keyed "provider/model", once per target it says something
about; `breakers` folds them there. Each target's table entry is then written from one
partition only (its changelog restores it exactly) and one worker owns it (one breaker for
the fleet, however many workers).
"""

from __future__ import annotations

from typing import Any

from schemas import codec
from schemas.ids import now_ms, uuid7
from schemas.records import LineageRecord
from schemas.settings import StreamSettings
from schemas.topics import ALERTS, BREAKER_STATE, DLQ, LINEAGE
from streams.breakers import logic
from streams.dead_letters import rejecter

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
SOURCE_PARTITION = "govledger-lineage-partition"
"""Header of a forwarded record: the lineage partition it came from (its watermark)."""


def config_of(settings: StreamSettings) -> logic.BreakerConfig:
    """The fleet breakers' rules: the gateways' `GOVLEDGER_BREAKER_*` settings."""
    return logic.BreakerConfig(
        failure_threshold=settings.breaker_failure_threshold,
        failure_window_ms=round(settings.breaker_failure_window_s * 1000),
        reset_timeout_ms=round(settings.breaker_reset_timeout_s * 1000),
    )


def register(app: Any, settings: StreamSettings, producer_id: str) -> Any:
    """Register the breakers agents."""
    config = config_of(settings)
    lineage = app.topic(LINEAGE.name, **RAW)
    by_target = app.topic(f"{settings.worker_app_id}-breakers-by-target", internal=True, **RAW)
    states = app.topic(BREAKER_STATE.name, **RAW)
    alerts = app.topic(ALERTS.name, **RAW)
    dead_letters = app.topic(DLQ.name, **RAW)
    table = app.Table("breakers", key_type=bytes, value_type=bytes)
    chain = codec.HashChain(producer_id)

    reject = rejecter(dead_letters, chain, "streams.breakers")

    @app.agent(lineage)  # type: ignore[untyped-decorator]
    async def breaker_attempts(stream: Any) -> None:
        async for event in stream.events():
            try:
                call = codec.decode_as(event.value, LineageRecord)
            except codec.DecodeError as exc:
                await reject(event, str(exc))
                continue
            source = {SOURCE_PARTITION: str(event.message.partition).encode()}
            for provider, model in logic.targets_of(call.attempts):
                key = logic.target_key(provider, model).encode()
                await by_target.send(key=key, value=event.value, headers=source)

    @app.agent(by_target)  # type: ignore[untyped-decorator]
    async def breakers(stream: Any) -> None:
        async for event in stream.events():
            try:
                call = codec.decode_as(event.value, LineageRecord)
                target = logic.target_of((event.key or b"").decode())
                partition = int(dict(event.message.headers or ())[SOURCE_PARTITION])
            except KeyError:
                await reject(event, f"a forward without its {SOURCE_PARTITION} header")
                continue
            except ValueError as exc:  # codec.DecodeError too: a bad record, key or header
                await reject(event, str(exc))
                continue
            stored = table.get(event.key)
            before = logic.load_fleet(stored) if stored else logic.FleetBreaker()
            watermark = logic.watermark_key(call.producer_id, partition)
            if logic.is_folded(before, watermark, call.seq):
                continue
            fleet, transitions = logic.fold(
                before,
                target,
                call.attempts,
                watermark=watermark,
                seq=call.seq,
                now_ms=call.occurred_at,
                config=config,
            )
            table[event.key] = logic.dump_fleet(fleet)
            for transition in transitions:
                alert = logic.to_alert(transition, target, event_id=uuid7(), occurred_at=now_ms())
                await alerts.send(key=b"", value=codec.encode(chain.seal(alert)))
            if transitions:
                state = logic.to_state(
                    fleet, target, config, event_id=uuid7(), occurred_at=now_ms()
                )
                await states.send(key=event.key, value=codec.encode(chain.seal(state)))

    return breakers
