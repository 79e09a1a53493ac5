"""Circuit breakers per (provider, model) target. Pure: no I/O, no clock, no ids.

A breaker stops calls to a target that keeps failing, so callers fail over at once
instead of waiting out timeouts, and the target gets room to recover. The gateway keeps
one per target for its own traffic; the breakers processor folds every gateway's attempts
into fleet-wide ones and publishes them; replay folds the same attempts again. All three
pass time in as `now_ms` (epoch ms), so the same attempts give the same breakers.

closed ──(threshold failures within the window)──▶ open
open ──(reset timeout passes)──▶ half_open             (time alone: see `current`)
half_open ──(a probe succeeds)──▶ closed
half_open ──(a probe fails)──▶ open                    (opened again, timeout restarts)
"""

from __future__ import annotations

import dataclasses
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]
Outcome = Literal["success", "failure", "ignored"]
TransitionKind = Literal["opened", "closed"]

# Error classes the provider adapters raise that say the target failed, not the request:
# another attempt may well succeed, and a burst of them means the target is unwell.
TARGET_FAULTS = frozenset(
    {"timeout", "connect", "transport", "http_5xx", "rate_limited", "bad_response"}
)
# The adapters' class for a 4xx other than 429: the caller's request is at fault.
CALLER_FAULT = "http_4xx"


@dataclasses.dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker opens and how it recovers; one config for all targets."""

    failure_threshold: int = 5
    failure_window_ms: int = 30_000
    reset_timeout_ms: int = 30_000
    half_open_requests: int = 1

    def __post_init__(self) -> None:
        assert self.failure_threshold >= 1, "a breaker opens after at least one failure"
        assert self.failure_window_ms >= 1, "failures count within a window of at least 1 ms"
        assert self.reset_timeout_ms >= 1, "an open breaker stays open at least 1 ms"
        assert self.half_open_requests >= 1, "a half-open breaker lets at least one probe by"


@dataclasses.dataclass(frozen=True, slots=True)
class Breaker:
    """One target's breaker.

    closed: `failures_ms` holds the recent failures, fewer than the threshold, oldest
    first. open and half_open: no failures kept; `opened_at_ms` is when it last opened.
    half_open: `probes_in_flight` probes were let through, the latest at `probed_at_ms`.
    """

    state: BreakerState = "closed"
    failures_ms: tuple[int, ...] = ()
    opened_at_ms: int | None = None
    probes_in_flight: int = 0
    probed_at_ms: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    """A change of state an outcome caused; callers alert `circuit.{kind}` once for it."""

    before: BreakerState
    after: BreakerState
    at_ms: int

    @property
    def kind(self) -> TransitionKind:
        """`opened` when the breaker opened (again, if it was half-open), else `closed`."""
        return "opened" if self.after == "open" else "closed"


def outcome_of(http_status: int, error_class: str | None) -> Outcome:
    """What one attempt says about its target. Timeouts, connection and transport errors,
    bad responses, 429 and 5xx are the target's failures; a 2xx is a success. The
    caller's own 4xx (400, 401, 403, 404, 413, 422 …) and 499 (the caller went away) say
    nothing about the target, so they are ignored. Status 0 means no answer came back:
    a failure, unless the adapter refused the request before sending it (`http_4xx`)."""
    if http_status == 429 or http_status >= 500 or error_class in TARGET_FAULTS:
        return "failure"
    if error_class is None and 200 <= http_status < 300:
        return "success"
    if http_status == 0 and error_class != CALLER_FAULT:
        return "failure"
    return "ignored"


def current(breaker: Breaker, now_ms: int, config: BreakerConfig) -> Breaker:
    """The breaker as time moves on: failures leave the window; an open breaker past its
    reset timeout is half-open; half-open probes that have not reported within the reset
    timeout are presumed lost (a cancelled call), so new probes may go."""
    if breaker.state == "closed":
        recent = _within_window(breaker.failures_ms, now_ms, config)
        return breaker if recent == breaker.failures_ms else Breaker(failures_ms=recent)
    assert breaker.opened_at_ms is not None, "an open or half-open breaker has opened"
    if breaker.state == "open":
        if now_ms - breaker.opened_at_ms >= config.reset_timeout_ms:
            return Breaker("half_open", opened_at_ms=breaker.opened_at_ms)
        return breaker
    if (
        breaker.probed_at_ms is not None
        and now_ms - breaker.probed_at_ms >= config.reset_timeout_ms
    ):
        return Breaker("half_open", opened_at_ms=breaker.opened_at_ms)
    return breaker


def admit(breaker: Breaker, now_ms: int, config: BreakerConfig) -> tuple[bool, Breaker]:
    """Whether a call may go to this target now, and the breaker after admitting it:
    closed always admits; open refuses; half-open admits up to `half_open_requests`
    probes at a time and counts each one in flight until `record` hears of it."""
    breaker = current(breaker, now_ms, config)
    if breaker.state == "closed":
        return True, breaker
    if breaker.state == "half_open" and breaker.probes_in_flight < config.half_open_requests:
        probing = dataclasses.replace(
            breaker, probes_in_flight=breaker.probes_in_flight + 1, probed_at_ms=now_ms
        )
        return True, probing
    return False, breaker


def record(
    breaker: Breaker, outcome: Outcome, now_ms: int, config: BreakerConfig
) -> tuple[Breaker, Transition | None]:
    """The breaker after one attempt's outcome, and the transition if the outcome changed
    its state. Closed: a failure that makes `failure_threshold` within the window opens
    it. Half-open: a success closes it with no failures; a failure opens it again from
    now; an ignored outcome frees its probe. Open: outcomes of calls let through before
    it opened change nothing. Successes do not clear failures while closed: the
    threshold counts failures in the window, not consecutive ones."""
    before = current(breaker, now_ms, config)
    after = _after(before, outcome, now_ms, config)
    if after.state == before.state:
        return after, None
    return after, Transition(before.state, after.state, now_ms)


def merge(
    local: Breaker,
    fleet_state: BreakerState | None,
    fleet_until_ms: int | None,
    now_ms: int,
    config: BreakerConfig,
) -> BreakerState:
    """The state the gateway routes by: open while the fleet-wide breaker is open (until
    `fleet_until_ms`, or until the processors say otherwise when they gave no end), else
    this gateway's own breaker as of now. A fleet that is closed or half-open does not
    override the local state: this gateway's probes and failures are its own evidence."""
    if fleet_state == "open" and (fleet_until_ms is None or now_ms < fleet_until_ms):
        return "open"
    return current(local, now_ms, config).state


def open_until_ms(breaker: Breaker, config: BreakerConfig) -> int | None:
    """Until when an open breaker refuses calls, None unless open: what the processor
    publishes with an open state, so gateways stop honouring it without another record."""
    if breaker.state != "open":
        return None
    assert breaker.opened_at_ms is not None, "an open breaker has opened"
    return breaker.opened_at_ms + config.reset_timeout_ms


def _within_window(
    failures_ms: tuple[int, ...], now_ms: int, config: BreakerConfig
) -> tuple[int, ...]:
    return tuple(t for t in failures_ms if now_ms - t < config.failure_window_ms)


def _after(breaker: Breaker, outcome: Outcome, now_ms: int, config: BreakerConfig) -> Breaker:
    if breaker.state == "closed":
        if outcome != "failure":
            return breaker
        # Oldest first whatever order attempts are reported in (the processor, replay).
        failures = tuple(sorted((*breaker.failures_ms, now_ms)))
        if len(failures) >= config.failure_threshold:
            return Breaker("open", opened_at_ms=now_ms)
        return Breaker(failures_ms=failures)
    if breaker.state == "half_open":
        if outcome == "success":
            return Breaker()
        if outcome == "failure":
            return Breaker("open", opened_at_ms=now_ms)
        probes = max(breaker.probes_in_flight - 1, 0)
        return dataclasses.replace(
            breaker, probes_in_flight=probes, probed_at_ms=breaker.probed_at_ms if probes else None
        )
    return breaker
