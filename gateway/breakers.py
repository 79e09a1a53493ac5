"""This gateway's circuit breakers, one per (provider, model), merged with the fleet-wide
state the breakers processor publishes. The rules live in `streams.breakers.logic`."""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from gateway.catalogue import Target
from schemas.settings import GatewaySettings
from streams.breakers import logic
from streams.breakers.logic import Breaker, BreakerConfig, BreakerState

log = structlog.get_logger(__name__)

TargetKey = tuple[str, str]


def config_of(settings: GatewaySettings) -> BreakerConfig:
    """The breaker rules a gateway's settings give."""
    return BreakerConfig(
        failure_threshold=settings.breaker_failure_threshold,
        failure_window_ms=round(settings.breaker_failure_window_s * 1000),
        reset_timeout_ms=round(settings.breaker_reset_timeout_s * 1000),
        half_open_requests=settings.breaker_half_open_requests,
    )


class BreakerBoard:
    """Local breakers, immediate; the fleet's opinion, as published, can only open more."""

    def __init__(
        self,
        config: BreakerConfig,
        fleet: Mapping[TargetKey, tuple[BreakerState, int | None]],
    ) -> None:
        self.config = config
        self.fleet = fleet
        self.local: dict[TargetKey, Breaker] = {}

    def state(self, target: Target, now_ms: int) -> BreakerState:
        """The state this gateway routes by."""
        key = (target.provider, target.upstream_model)
        fleet_state, fleet_until_ms = self.fleet.get(key, (None, None))
        local = self.local.get(key, Breaker())
        return logic.merge(local, fleet_state, fleet_until_ms, now_ms, self.config)

    def admit(self, target: Target, now_ms: int) -> bool:
        """Whether a call may go to the target now (a half-open breaker counts a probe)."""
        if self.state(target, now_ms) == "open":
            return False
        key = (target.provider, target.upstream_model)
        admitted, self.local[key] = logic.admit(self.local.get(key, Breaker()), now_ms, self.config)
        return admitted

    def record(
        self, target: Target, http_status: int, error_class: str | None, now_ms: int
    ) -> None:
        """One attempt's outcome."""
        key = (target.provider, target.upstream_model)
        outcome = logic.outcome_of(http_status, error_class)
        self.local[key], transition = logic.record(
            self.local.get(key, Breaker()), outcome, now_ms, self.config
        )
        if transition is not None:
            log.warning(
                f"circuit {transition.kind}",
                provider=target.provider,
                model=target.upstream_model,
                before=transition.before,
            )
