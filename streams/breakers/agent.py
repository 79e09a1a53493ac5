"""Thin Faust adapter: every gateway's attempts in, fleet-wide breakers and alerts out.

A target hears from every tenant's lineage partition, so the intake's handler first
forwards, per batch and per target, what the batch's records say about that target,
keyed "provider/model"; `breakers` folds them there. Each target's table entry is then
written from one partition only (its changelog restores it exactly) and one worker owns
it (one breaker for the fleet, however many workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.authn import SignedChain
from schemas.ids import now_ms
from schemas.records import LineageRecord
from schemas.settings import StreamSettings
from schemas.topics import ALERTS, BREAKER_STATE, DLQ
from streams.breakers import logic
from streams.dead_letters import rejecter
from streams.intake import RAW, Decoded, Domain


def config_of(settings: StreamSettings) -> logic.BreakerConfig:
    """The fleet breakers' rules: the gateways' `GOVLEDGER_BREAKER_*` settings."""
    return logic.BreakerConfig(
        failure_threshold=settings.breaker_failure_threshold,
        failure_window_ms=round(settings.breaker_failure_window_s * 1000),
        reset_timeout_ms=round(settings.breaker_reset_timeout_s * 1000),
    )


def register(app: Any, settings: StreamSettings, chain: SignedChain) -> Domain:
    """Register the breakers agent; return the intake's handler that feeds it."""
    config = config_of(settings)
    by_target = app.topic(f"{settings.worker_app_id}-breakers-by-target", internal=True, **RAW)
    states = app.topic(BREAKER_STATE.name, **RAW)
    alerts = app.topic(ALERTS.name, **RAW)
    table = app.Table("breakers", key_type=bytes, value_type=bytes)
    reject = rejecter(app.topic(DLQ.name, **RAW), chain, "streams.breakers")

    async def forward_attempts(batch: Sequence[Decoded]) -> None:
        observed: dict[tuple[str, str], list[logic.Observation]] = {}
        for decoded in batch:
            if isinstance(decoded.record, LineageRecord):
                found = logic.observations_of(decoded.record, decoded.partition)
                for target, observation in found.items():
                    observed.setdefault(target, []).append(observation)
        for target, observations in observed.items():
            key = logic.target_key(*target).encode()
            await by_target.send(key=key, value=logic.dump_observations(observations))

    @app.agent(by_target)  # type: ignore[untyped-decorator]
    async def breakers(stream: Any) -> None:
        async for event in stream.events():
            try:
                target = logic.target_of((event.key or b"").decode())
                observations = logic.load_observations(event.value)
            except ValueError as exc:
                await reject(event, str(exc))
                continue
            stored = table.get(event.key)
            before = logic.load_fleet(stored) if stored else logic.FleetBreaker()
            fleet, transitions = logic.fold_observations(before, target, observations, config)
            if fleet is before:
                continue  # every observation was folded before
            # Published and acknowledged before the table entry is written: a kill in
            # between folds the observations again into the same transitions, whose
            # records carry the same derived ids (the sink keeps one row each).
            for transition in transitions:
                alert = logic.to_alert(
                    transition,
                    target,
                    event_id=logic.alert_event_id(transition, target),
                    occurred_at=now_ms(),
                )
                _, data = chain.seal_encoded(alert)
                await (await alerts.send(key=b"", value=data, headers=chain.headers(data)))
            if transitions:
                state = logic.to_state(
                    fleet,
                    target,
                    config,
                    event_id=logic.state_event_id(transitions[-1], target),
                    occurred_at=now_ms(),
                )
                _, data = chain.seal_encoded(state)
                await (await states.send(key=event.key, value=data, headers=chain.headers(data)))
            table[event.key] = logic.dump_fleet(fleet)

    return Domain(forward_attempts)
