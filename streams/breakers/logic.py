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
import json
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Literal

from schemas import records
from schemas.ids import derived_uuid7

BreakerState = Literal["closed", "open", "half_open"]
BREAKER_STATES: tuple[BreakerState, ...] = ("closed", "open", "half_open")
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


# The fleet-wide breakers the processor folds from every gateway's lineage records.

SKIPPED = "breaker_open"
"""Error class of an attempt a gateway's own breaker refused: nothing was sent."""


@dataclasses.dataclass(frozen=True, slots=True)
class FleetBreaker:
    """One target's fleet-wide breaker and its idempotence watermark: the highest lineage
    `seq` folded per `watermark_key`. The processor never admits calls, so it has no
    probes in flight: half-open waits for any gateway's probe to report."""

    breaker: Breaker = dataclasses.field(default_factory=Breaker)
    applied_seqs: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )


def state_of(text: str) -> BreakerState | None:
    """The breaker state a published string names, None if it names none."""
    return next((state for state in BREAKER_STATES if state == text), None)


def target_key(provider: str, model: str) -> str:
    """The key of a target on the breaker-state topic: "provider/model" (provider names
    are the adapters' own and have no '/')."""
    return f"{provider}/{model}"


def target_of(key: str) -> tuple[str, str]:
    """(provider, model) from a "provider/model" key (a model may contain '/')."""
    provider, _, model = key.partition("/")
    if not provider or not model:
        raise ValueError(f"not a provider/model key: {key!r}")
    return provider, model


def watermark_key(producer_id: str, partition: int) -> str:
    """Whose watermark a lineage record advances: its producer's on its lineage partition.
    One producer's records on one partition are in `seq` order (one producer, one
    partition), whatever their tenants; a target hears from every partition, where a
    single watermark per producer would skip a record that arrives after a later one of
    another partition."""
    return f"{producer_id}@{partition}"


def targets_of(attempts: Iterable[records.Attempt]) -> tuple[tuple[str, str], ...]:
    """The targets these attempts say something about (a success or a failure), each once,
    in order of first attempt. Skipped attempts and the caller's own faults say nothing."""
    return tuple(
        dict.fromkeys(
            (attempt.provider, attempt.model)
            for attempt in attempts
            if attempt.error_class != SKIPPED
            and outcome_of(attempt.status, attempt.error_class) != "ignored"
        )
    )


def is_folded(fleet: FleetBreaker, watermark: str, seq: int) -> bool:
    """Whether the record at `seq` (or a later one of its watermark) was folded before."""
    return fleet.applied_seqs.get(watermark, 0) >= seq


def fold(
    fleet: FleetBreaker,
    target: tuple[str, str],
    attempts: Iterable[records.Attempt],
    *,
    watermark: str,
    seq: int,
    now_ms: int,
    config: BreakerConfig,
) -> tuple[FleetBreaker, tuple[Transition, ...]]:
    """The fleet breaker after one lineage record's attempts on `target`, each at the
    record's time `now_ms`, and the transitions they made, in order. A record folded
    before changes nothing; skipped attempts are no outcomes."""
    if is_folded(fleet, watermark, seq):
        return fleet, ()
    breaker = fleet.breaker
    transitions: list[Transition] = []
    for attempt in attempts:
        if (attempt.provider, attempt.model) != target or attempt.error_class == SKIPPED:
            continue
        outcome = outcome_of(attempt.status, attempt.error_class)
        breaker, transition = record(breaker, outcome, now_ms, config)
        if transition is not None:
            transitions.append(transition)
    applied = MappingProxyType({**fleet.applied_seqs, watermark: seq})
    return FleetBreaker(breaker, applied), tuple(transitions)


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    """What one lineage record says about one target: its attempts there, as
    (http_status, error_class) in order, at the record's time, under its watermark."""

    watermark: str
    seq: int
    at_ms: int
    outcomes: tuple[tuple[int, str | None], ...]


def observations_of(
    call: records.LineageRecord, partition: int
) -> dict[tuple[str, str], Observation]:
    """The record's observation of each target it says something about (`targets_of`)."""
    watermark = watermark_key(call.producer_id, partition)
    return {
        target: Observation(
            watermark,
            call.seq,
            call.occurred_at,
            tuple(
                (attempt.status, attempt.error_class)
                for attempt in call.attempts
                if (attempt.provider, attempt.model) == target
            ),
        )
        for target in targets_of(call.attempts)
    }


def fold_observations(
    fleet: FleetBreaker,
    target: tuple[str, str],
    observations: Iterable[Observation],
    config: BreakerConfig,
) -> tuple[FleetBreaker, tuple[Transition, ...]]:
    """`fold` of each observation of `target` in order: the breaker after them all and
    every transition they made."""
    transitions: list[Transition] = []
    for observation in observations:
        attempts = (
            records.Attempt(target[0], target[1], status, 0.0, error_class)
            for status, error_class in observation.outcomes
        )
        fleet, made = fold(
            fleet,
            target,
            attempts,
            watermark=observation.watermark,
            seq=observation.seq,
            now_ms=observation.at_ms,
            config=config,
        )
        transitions.extend(made)
    return fleet, tuple(transitions)


def dump_observations(observations: Iterable[Observation]) -> bytes:
    """A forward's value: a batch's observations of one target, in order."""
    return json.dumps(
        [[o.watermark, o.seq, o.at_ms, o.outcomes] for o in observations],
        separators=(",", ":"),
    ).encode()


def load_observations(data: bytes) -> tuple[Observation, ...]:
    """The observations `dump_observations` wrote; ValueError for anything else."""
    try:
        loaded = json.loads(data)
        if not isinstance(loaded, list):
            raise TypeError(f"a JSON {type(loaded).__name__}, not a list")
        return tuple(
            Observation(
                str(watermark),
                int(seq),
                int(at_ms),
                tuple(
                    (int(status), None if error is None else str(error))
                    for status, error in outcomes
                ),
            )
            for watermark, seq, at_ms, outcomes in loaded
        )
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"not a batch of breaker observations: {exc}") from exc


def to_state(
    fleet: FleetBreaker,
    target: tuple[str, str],
    config: BreakerConfig,
    *,
    event_id: str,
    occurred_at: int,
) -> records.BreakerState:
    """The fleet breaker as published (unsealed): open ones say until when."""
    breaker = fleet.breaker
    return records.BreakerState(
        event_id=event_id,
        event_type=records.BreakerState.event_type_name,
        occurred_at=occurred_at,
        tenant_id="",
        provider=target[0],
        model=target[1],
        state=breaker.state,
        opened_at=breaker.opened_at_ms,
        open_until=open_until_ms(breaker, config),
        failures_in_window=len(breaker.failures_ms),
        applied_seqs=fleet.applied_seqs,
    )


def to_alert(
    transition: Transition, target: tuple[str, str], *, event_id: str, occurred_at: int
) -> records.CircuitChanged:
    """The `circuit.opened` / `circuit.closed` alert of a transition (unsealed); targets
    are shared, so it belongs to no tenant."""
    return records.CircuitChanged(
        event_id=event_id,
        event_type=f"circuit.{transition.kind}",
        occurred_at=occurred_at,
        tenant_id="",
        provider=target[0],
        model=target[1],
        before=transition.before,
        after=transition.after,
        at=transition.at_ms,
    )


def alert_event_id(transition: Transition, target: tuple[str, str]) -> str:
    """The event id of a transition's `circuit.*` alert, derived from what makes it that
    transition (target, kind, states, moment): a record folded again after a restart (its
    table entry not yet written) makes the same transition, and the alert is the same row
    to the sink. A breaker opens or closes at most once per millisecond."""
    return derived_uuid7(
        transition.at_ms,
        f"circuit.{transition.kind}",
        target[0],
        target[1],
        transition.before,
        transition.after,
        transition.at_ms,
    )


def state_event_id(transition: Transition, target: tuple[str, str]) -> str:
    """The event id of the `BreakerState` published after a transition (the last one of a
    fold), derived like `alert_event_id`."""
    return derived_uuid7(
        transition.at_ms,
        records.BreakerState.event_type_name,
        target[0],
        target[1],
        transition.after,
        transition.at_ms,
    )


def dump_fleet(fleet: FleetBreaker) -> bytes:
    """The processor's table value: every field, failure times included (the published
    BreakerState only counts them)."""
    return json.dumps(
        {**dataclasses.asdict(fleet.breaker), "applied_seqs": dict(fleet.applied_seqs)},
        separators=(",", ":"),
    ).encode()


def load_fleet(data: bytes) -> FleetBreaker:
    """The table value `dump_fleet` wrote."""
    fields = json.loads(data)
    state = state_of(fields["state"])
    assert state is not None, "the processor wrote this value"
    breaker = Breaker(
        state,
        tuple(fields["failures_ms"]),
        fields["opened_at_ms"],
        fields["probes_in_flight"],
        fields["probed_at_ms"],
    )
    return FleetBreaker(breaker, MappingProxyType(dict(fields["applied_seqs"])))
