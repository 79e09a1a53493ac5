"""Admission under overload: an adaptive limit on the calls a gateway works on at once,
judged by how late its event loop runs (pure: the clock and the lag come from outside;
gateway/loop_lag.py samples them).

A gateway spends CPU on every call it holds. Past its capacity, calls queue in its event
loop (ready callbacks waiting their turn), every call slows down together and callers
time out: none is served. A fixed count of upstream calls cannot see that queue, because a
CPU-bound gateway is slow before it is waiting on anyone. The loop's lag can: each sample
is how late a timer fired, that is how long ready work waited before the loop got to it.

The rule is CoDel's: lag that stays above the target for a whole interval (its *lowest*
sample over the interval is above it) is a standing queue, not a burst. Then the limit
drops below the calls in flight, in proportion to how far over the target the lag is (at
most halved an interval; not while no more than the floor was in flight: then the calls
are not what makes the loop late); calls past the limit are refused at once (503
overloaded with Retry-After), so the ones admitted finish within the latency bar. An
interval under the target in which the limit was reached raises the limit by a tenth (at
least one call), so it finds the capacity again by itself once load drops or the machine
frees up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from schemas.settings import GatewaySettings

# Most the limit may fall in one interval (a factor); CoDel-like gentleness against a
# lag spike that happens to last an interval.
MAX_DECREASE = 0.5
# Growth per interval under the target in which the limit was reached (a fraction).
INCREASE = 0.1
# Lag samples an interval while calls are in flight and none of the interval's samples has
# been under the target yet: enough that the interval's lowest means a standing queue.
SAMPLES_PER_INTERVAL = 10


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """`target_delay_s`: the loop lag tolerated (0: admission off, every call admitted);
    `interval_s`: the window a lag must last to count; `min_limit`..`max_limit`: the
    range of the limit on calls in flight; `retry_after_s`: the hint given to a refused
    caller."""

    target_delay_s: float
    interval_s: float
    min_limit: int
    max_limit: int
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        if self.target_delay_s < 0 or self.interval_s <= 0:
            raise ValueError("target delay must be >= 0 and interval > 0")
        if not 1 <= self.min_limit <= self.max_limit:
            raise ValueError("need 1 <= min_limit <= max_limit")

    @property
    def enabled(self) -> bool:
        return self.target_delay_s > 0


class Admission:
    """The limit and the calls in flight under it. `admit` before a call's work, `release`
    after it (only when admitted); `observe_lag` with each loop-lag sample."""

    def __init__(self, config: AdmissionConfig, now_s: float = 0.0) -> None:
        self.config = config
        self.limit = float(config.max_limit)
        self.in_flight = 0
        self.refused = 0  # calls refused since start (read by the metrics at a scrape)
        self.last_lag_s = 0.0  # the lowest lag of the last whole interval
        self._window_start_s = now_s
        self._window_min_lag_s = math.inf
        self._window_peak = 0  # most calls in flight during the window
        self._window_full = False  # a call found the limit reached during the window
        # Called when a call is admitted with none in flight before (the lag sampler waits
        # for it instead of sampling an idle loop).
        self.on_busy: Callable[[], None] | None = None

    def admit(self) -> bool:
        """Whether a new call may start now; counted in flight when it may."""
        if self.config.enabled and self.in_flight >= int(self.limit):
            self._window_full = True
            self.refused += 1
            return False
        self.in_flight += 1
        if self.in_flight == 1 and self.on_busy is not None:
            self.on_busy()
        self._window_peak = max(self._window_peak, self.in_flight)
        if self.in_flight >= int(self.limit):
            self._window_full = True
        return True

    def release(self) -> None:
        """An admitted call is done."""
        self.in_flight = max(0, self.in_flight - 1)

    def observe_lag(self, lag_s: float, now_s: float) -> None:
        """One loop-lag sample taken at `now_s`; at the end of each interval the limit is
        judged by the lowest sample of the interval. The sample that ends an interval is
        also the next one's first: it is the loop's lag at the boundary of both."""
        lag_s = max(0.0, lag_s)
        self._window_min_lag_s = min(self._window_min_lag_s, lag_s)
        if now_s - self._window_start_s < self.config.interval_s:
            return
        self._judge(self._window_min_lag_s)
        self._window_start_s = now_s
        self._window_min_lag_s = lag_s
        self._window_peak = self.in_flight
        self._window_full = self.in_flight >= int(self.limit)

    def _judge(self, min_lag_s: float) -> None:
        config = self.config
        self.last_lag_s = min_lag_s
        if not config.enabled:
            return
        # Lag with no more than the floor in flight is not the calls' doing (a busy
        # machine, a catch-up of the views): shedding calls would not shorten it.
        if min_lag_s > config.target_delay_s and self._window_peak > config.min_limit:
            # Below what was in flight: the limit may have been far above it.
            factor = max(MAX_DECREASE, config.target_delay_s / min_lag_s)
            self.limit = max(float(config.min_limit), min(self.limit, self._window_peak) * factor)
        elif self._window_full:
            self.limit = min(float(config.max_limit), self.limit + max(1.0, self.limit * INCREASE))

    def next_sample_in_s(self, now_s: float) -> float:
        """How long the lag sampler may wait before its next sample. Only an interval's
        lowest sample counts, so once one is at or under the target the interval cannot be
        judged overloaded, and one more sample, at its end, judges it and opens the next:
        a gateway within its capacity wakes once an interval for this, not ten times (at
        one client's pace those wake-ups were half of its event loop's). With no call in
        flight there is nothing to shed: the sampler waits for `on_busy` (this says one
        interval, for a caller that does not)."""
        interval_s = self.config.interval_s
        busy_period_s = interval_s / SAMPLES_PER_INTERVAL
        if not self.in_flight:
            return interval_s
        if self._window_min_lag_s <= self.config.target_delay_s:
            return max(busy_period_s, self._window_start_s + interval_s - now_s)
        return busy_period_s

    @property
    def retry_after_s(self) -> int:
        return self.config.retry_after_s


def admitted_ahead(protocol: object) -> bool:
    """Whether the connection (`protocol`) admitted its current call as it parsed it
    (gateway/shed_protocol.py `take_admitted`): then the call is in flight already, and
    its handler releases it."""
    take = getattr(protocol, "take_admitted", None)
    return take is not None and bool(take())


def admission_config(settings: GatewaySettings) -> AdmissionConfig:
    """The admission of a gateway's settings: up to its limit of upstream calls (a call
    admitted past it would be refused there anyway)."""
    min_limit = settings.admission_min_calls
    return AdmissionConfig(
        target_delay_s=settings.admission_target_delay_ms / 1000,
        interval_s=settings.admission_interval_ms / 1000,
        min_limit=min_limit,
        max_limit=max(min_limit, settings.max_concurrent_upstream),
        retry_after_s=settings.admission_retry_after_s,
    )
