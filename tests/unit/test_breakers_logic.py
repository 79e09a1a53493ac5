"""Circuit breakers: given attempts' outcomes over time, then what a target admits."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.records import Attempt, BreakerState, CircuitChanged, LineageRecord
from streams.breakers.logic import (
    SKIPPED,
    Breaker,
    BreakerConfig,
    FleetBreaker,
    Outcome,
    Transition,
    admit,
    alert_event_id,
    current,
    dump_fleet,
    dump_observations,
    fold,
    fold_observations,
    is_folded,
    load_fleet,
    load_observations,
    merge,
    observations_of,
    open_until_ms,
    outcome_of,
    record,
    state_event_id,
    state_of,
    target_key,
    target_of,
    targets_of,
    to_alert,
    to_state,
    watermark_key,
)
from tests.unit import builders

T0 = 1_750_000_000_000
CONFIG = BreakerConfig(
    failure_threshold=3, failure_window_ms=10_000, reset_timeout_ms=5_000, half_open_requests=2
)


def fail_times(breaker: Breaker, times_ms: list[int], config: BreakerConfig = CONFIG) -> Breaker:
    for now_ms in times_ms:
        breaker, _ = record(breaker, "failure", now_ms, config)
    return breaker


def opened_at(now_ms: int) -> Breaker:
    return fail_times(Breaker(), [now_ms] * CONFIG.failure_threshold)


@pytest.mark.parametrize(
    ("http_status", "error_class", "outcome"),
    [
        (200, None, "success"),
        (201, None, "success"),
        (0, "timeout", "failure"),
        (0, "connect", "failure"),
        (0, "transport", "failure"),
        (429, "rate_limited", "failure"),
        (500, "http_5xx", "failure"),
        (503, "http_5xx", "failure"),
        (200, "bad_response", "failure"),
        (0, None, "failure"),
        (400, "http_4xx", "ignored"),
        (401, "http_4xx", "ignored"),
        (403, "http_4xx", "ignored"),
        (404, "http_4xx", "ignored"),
        (413, "http_4xx", "ignored"),
        (422, "http_4xx", "ignored"),
        (499, None, "ignored"),
        # The adapter refused to translate the caller's request: nothing was sent.
        (0, "http_4xx", "ignored"),
    ],
)
def test_outcome_blames_the_target_only_for_its_own_failures(
    http_status: int, error_class: str | None, outcome: Outcome
) -> None:
    assert outcome_of(http_status, error_class) == outcome


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"failure_window_ms": 0},
        {"reset_timeout_ms": 0},
        {"half_open_requests": 0},
    ],
)
def test_config_refuses_values_below_one(kwargs: dict[str, int]) -> None:
    with pytest.raises(AssertionError):
        BreakerConfig(**kwargs)


def test_opens_exactly_at_the_threshold_within_the_window() -> None:
    breaker = fail_times(Breaker(), [T0, T0 + 1_000])
    assert breaker.state == "closed"
    assert breaker.failures_ms == (T0, T0 + 1_000)
    breaker, transition = record(breaker, "failure", T0 + 9_999, CONFIG)
    assert breaker == Breaker("open", opened_at_ms=T0 + 9_999)
    assert transition == Transition("closed", "open", T0 + 9_999)
    assert transition.kind == "opened"


def test_failures_outside_the_window_do_not_count() -> None:
    # The first failure is exactly a window old when the third comes: it has left.
    breaker = fail_times(Breaker(), [T0, T0 + 5_000, T0 + 10_000])
    assert breaker.state == "closed"
    assert breaker.failures_ms == (T0 + 5_000, T0 + 10_000)
    assert current(breaker, T0 + 20_000, CONFIG) == Breaker()


def test_ignored_outcomes_and_successes_do_not_count_or_clear() -> None:
    breaker = fail_times(Breaker(), [T0, T0 + 1])
    for outcome in ("ignored", "success", "ignored"):
        breaker, transition = record(breaker, outcome, T0 + 2, CONFIG)
        assert transition is None
    assert breaker.failures_ms == (T0, T0 + 1)
    assert fail_times(breaker, [T0 + 3]).state == "open"


def test_closed_always_admits() -> None:
    breaker = fail_times(Breaker(), [T0, T0])
    assert admit(breaker, T0 + 1, CONFIG) == (True, breaker)


def test_open_refuses_until_the_reset_timeout() -> None:
    breaker = opened_at(T0)
    assert admit(breaker, T0, CONFIG) == (False, breaker)
    assert admit(breaker, T0 + 4_999, CONFIG) == (False, breaker)
    assert current(breaker, T0 + 4_999, CONFIG).state == "open"
    assert current(breaker, T0 + 5_000, CONFIG) == Breaker("half_open", opened_at_ms=T0)


def test_half_open_lets_exactly_the_configured_probes_through() -> None:
    breaker = opened_at(T0)
    now_ms = T0 + 5_000
    admitted = []
    for _ in range(4):
        allowed, breaker = admit(breaker, now_ms, CONFIG)
        admitted.append(allowed)
    assert admitted == [True, True, False, False]
    assert breaker.probes_in_flight == CONFIG.half_open_requests
    # An ignored probe frees its slot for another.
    breaker, transition = record(breaker, "ignored", now_ms + 1, CONFIG)
    assert (breaker.state, breaker.probes_in_flight, transition) == ("half_open", 1, None)
    assert admit(breaker, now_ms + 2, CONFIG)[0]


def test_probe_success_closes_with_no_failures() -> None:
    _, breaker = admit(opened_at(T0), T0 + 5_000, CONFIG)
    breaker, transition = record(breaker, "success", T0 + 5_100, CONFIG)
    assert breaker == Breaker()
    assert transition == Transition("half_open", "closed", T0 + 5_100)
    assert transition.kind == "closed"


def test_probe_failure_reopens_from_now() -> None:
    _, breaker = admit(opened_at(T0), T0 + 5_000, CONFIG)
    breaker, transition = record(breaker, "failure", T0 + 5_100, CONFIG)
    assert breaker == Breaker("open", opened_at_ms=T0 + 5_100)
    assert transition == Transition("half_open", "open", T0 + 5_100)
    assert transition.kind == "opened"
    assert not admit(breaker, T0 + 10_099, CONFIG)[0]
    assert admit(breaker, T0 + 10_100, CONFIG)[0]


def test_a_stored_open_breaker_past_its_timeout_takes_the_outcome_as_a_probe() -> None:
    breaker, transition = record(opened_at(T0), "success", T0 + 6_000, CONFIG)
    assert (breaker, transition) == (Breaker(), Transition("half_open", "closed", T0 + 6_000))


def test_lost_probes_free_their_slots_after_the_reset_timeout() -> None:
    breaker = opened_at(T0)
    for _ in range(CONFIG.half_open_requests):
        _, breaker = admit(breaker, T0 + 5_000, CONFIG)
    assert not admit(breaker, T0 + 9_999, CONFIG)[0]
    allowed, breaker = admit(breaker, T0 + 10_000, CONFIG)
    assert allowed
    assert (breaker.probes_in_flight, breaker.probed_at_ms) == (1, T0 + 10_000)


def test_outcomes_while_open_change_nothing() -> None:
    breaker = opened_at(T0)
    for outcome in ("failure", "success", "ignored"):
        assert record(breaker, outcome, T0 + 1_000, CONFIG) == (breaker, None)


def test_transitions_are_reported_exactly_once() -> None:
    outcomes: list[tuple[Outcome, int]] = [
        ("failure", T0),
        ("failure", T0 + 1),
        ("failure", T0 + 2),  # opens
        ("failure", T0 + 3),  # late, already open
        ("failure", T0 + 4),
        ("success", T0 + 5_002),  # probe: closes
        ("success", T0 + 5_003),
        ("failure", T0 + 5_004),
    ]
    breaker = Breaker()
    kinds = []
    for outcome, now_ms in outcomes:
        breaker, transition = record(breaker, outcome, now_ms, CONFIG)
        if transition is not None:
            kinds.append(transition.kind)
    assert kinds == ["opened", "closed"]


def test_merge_is_open_while_either_says_so() -> None:
    closed = Breaker()
    assert merge(closed, None, None, T0, CONFIG) == "closed"
    assert merge(closed, "closed", None, T0, CONFIG) == "closed"
    assert merge(closed, "half_open", None, T0, CONFIG) == "closed"
    assert merge(closed, "open", T0 + 1, T0, CONFIG) == "open"
    assert merge(closed, "open", T0, T0, CONFIG) == "closed"  # the fleet's open has ended
    assert merge(closed, "open", None, T0, CONFIG) == "open"  # no end given: open
    local_open = opened_at(T0)
    assert merge(local_open, "closed", None, T0 + 1, CONFIG) == "open"
    # The local breaker is taken as of now, not as stored.
    assert merge(local_open, None, None, T0 + 5_000, CONFIG) == "half_open"
    assert merge(local_open, "open", T0 + 8_000, T0 + 5_000, CONFIG) == "open"


def test_open_until_is_what_the_processor_publishes() -> None:
    assert open_until_ms(opened_at(T0), CONFIG) == T0 + 5_000
    assert open_until_ms(Breaker(), CONFIG) is None
    assert open_until_ms(current(opened_at(T0), T0 + 5_000, CONFIG), CONFIG) is None


# A step is an admission (None) or an attempt's outcome, some milliseconds after the last.
ACTIONS: list[Outcome | None] = [None, "success", "failure", "ignored"]
steps = st.lists(
    st.tuples(
        st.sampled_from(ACTIONS),
        st.integers(min_value=0, max_value=8_000),
    ),
    max_size=60,
)
configs = st.builds(
    BreakerConfig,
    failure_threshold=st.integers(1, 6),
    failure_window_ms=st.integers(1, 20_000),
    reset_timeout_ms=st.integers(1, 20_000),
    half_open_requests=st.integers(1, 3),
)


@settings(max_examples=300, deadline=None)
@given(steps, configs)
def test_any_history_keeps_the_breaker_valid_and_bounded(
    history: list[tuple[Outcome | None, int]], config: BreakerConfig
) -> None:
    breaker = Breaker()
    now_ms = T0
    for action, elapsed_ms in history:
        now_ms += elapsed_ms
        # An open breaker refuses at any moment before its reset timeout.
        if breaker.state == "open":
            assert breaker.opened_at_ms is not None
            for early_ms in (now_ms, breaker.opened_at_ms + config.reset_timeout_ms - 1):
                if early_ms - breaker.opened_at_ms < config.reset_timeout_ms:
                    assert admit(breaker, early_ms, config) == (False, breaker)
        state_before = current(breaker, now_ms, config).state
        transition = None
        if action is None:
            allowed, breaker = admit(breaker, now_ms, config)
            assert breaker.state != "open" or not allowed
            assert breaker.state != "closed" or allowed
        else:
            breaker, transition = record(breaker, action, now_ms, config)
        assert breaker.state in ("closed", "open", "half_open")
        assert len(breaker.failures_ms) < config.failure_threshold
        assert breaker.state == "closed" or not breaker.failures_ms
        assert 0 <= breaker.probes_in_flight <= config.half_open_requests
        assert (breaker.opened_at_ms is None) == (breaker.state == "closed")
        if transition is not None:
            assert (transition.before, transition.after) == (state_before, breaker.state)
        elif action is not None:
            assert breaker.state == state_before


# The fleet-wide breakers the processor folds from lineage records.

PRIMARY = ("upstream", "outage-primary")
FALLBACK = ("sim", "sim-small")
FAILED = Attempt(*PRIMARY, 503, 12.0, "http_5xx")
SKIP = Attempt(*PRIMARY, 0, 0.0, SKIPPED)
SERVED = Attempt(*FALLBACK, 200, 3.0)
ANSWERED = Attempt(*PRIMARY, 200, 4.0)
GW = watermark_key("gateway-a", 0)


def fold_calls(
    calls: Sequence[tuple[str, int, int, tuple[Attempt, ...]]], fleet: FleetBreaker | None = None
) -> tuple[FleetBreaker, list[str]]:
    """Fold (watermark, seq, occurred_at, attempts) records on PRIMARY; the alert kinds."""
    fleet = fleet or FleetBreaker()
    kinds: list[str] = []
    for watermark, seq, now_ms, attempts in calls:
        fleet, transitions = fold(
            fleet, PRIMARY, attempts, watermark=watermark, seq=seq, now_ms=now_ms, config=CONFIG
        )
        kinds += [t.kind for t in transitions]
    return fleet, kinds


def test_targets_are_those_an_attempt_says_something_about() -> None:
    assert targets_of((FAILED, SERVED)) == (PRIMARY, FALLBACK)
    assert targets_of((SKIP, SERVED)) == (FALLBACK,)
    assert targets_of((FAILED, FAILED, SERVED, FAILED)) == (PRIMARY, FALLBACK)
    assert targets_of((Attempt(*PRIMARY, 400, 1.0, "http_4xx"),)) == ()
    assert targets_of(()) == ()


def test_targets_key_as_provider_slash_model() -> None:
    assert target_key(*PRIMARY) == "upstream/outage-primary"
    assert target_of("upstream/outage-primary") == PRIMARY
    assert target_of("ollama/library/llama3:8b") == ("ollama", "library/llama3:8b")
    for bad in ("upstream", "/model", "upstream/", ""):
        with pytest.raises(ValueError, match="provider/model"):
            target_of(bad)


def test_failures_from_several_gateways_open_the_fleet_breaker_once() -> None:
    calls = [
        (watermark_key("gateway-a", 0), 1, T0, (FAILED, SERVED)),
        (watermark_key("gateway-b", 2), 1, T0 + 10, (FAILED, SERVED)),
        (watermark_key("gateway-a", 1), 2, T0 + 20, (FAILED, SERVED)),  # opens
        (watermark_key("gateway-b", 2), 2, T0 + 30, (FAILED, SERVED)),  # already open
        (watermark_key("gateway-a", 0), 3, T0 + 40, (SKIP, SERVED)),
    ]
    fleet, kinds = fold_calls(calls)
    assert kinds == ["opened"]
    assert fleet.breaker == Breaker("open", opened_at_ms=T0 + 20)
    assert dict(fleet.applied_seqs) == {
        "gateway-a@0": 3,
        "gateway-a@1": 2,
        "gateway-b@2": 2,
    }


def test_a_record_folded_before_changes_nothing() -> None:
    first = [(GW, 1, T0, (FAILED,)), (GW, 2, T0 + 1, (FAILED,))]
    fleet, _ = fold_calls(first)
    assert is_folded(fleet, GW, 2) and is_folded(fleet, GW, 1)
    assert not is_folded(fleet, GW, 3) and not is_folded(fleet, watermark_key("gateway-a", 1), 1)
    # Redelivered after a restart: still two failures, not four, and no opening.
    again, kinds = fold_calls(first, fleet)
    assert again == fleet and kinds == []
    _, kinds = fold_calls([(GW, 3, T0 + 2, (FAILED,))], fleet)
    assert kinds == ["opened"]


def test_each_partition_keeps_its_own_watermark() -> None:
    # One gateway's seqs interleave across lineage partitions (one per tenant key); the
    # partition that arrives late is still folded.
    late = watermark_key("gateway-a", 1)
    fleet, kinds = fold_calls(
        [(GW, 5, T0 + 5, (FAILED,)), (GW, 7, T0 + 7, (FAILED,)), (late, 6, T0 + 6, (FAILED,))]
    )
    assert kinds == ["opened"]
    assert fleet.breaker.opened_at_ms == T0 + 6  # when the third failure was folded


def test_only_the_target_s_own_outcomes_count() -> None:
    served_elsewhere = (SKIP, SKIP, SERVED)
    fleet, kinds = fold_calls([(GW, seq, T0 + seq, served_elsewhere) for seq in range(1, 9)])
    assert (fleet.breaker, kinds) == (Breaker(), [])
    assert fleet.applied_seqs == {GW: 8}


def test_a_probe_after_the_reset_timeout_closes_it_and_a_failed_one_reopens() -> None:
    opened, _ = fold_calls([(GW, seq, T0, (FAILED,)) for seq in (1, 2, 3)])
    other = watermark_key("gateway-b", 3)
    reopened, kinds = fold_calls([(other, 1, T0 + 5_000, (FAILED, SERVED))], opened)
    assert kinds == ["opened"] and reopened.breaker.opened_at_ms == T0 + 5_000
    closed, kinds = fold_calls([(other, 2, T0 + 10_001, (ANSWERED,))], reopened)
    assert kinds == ["closed"] and closed.breaker == Breaker()
    # A success from before the reset timeout says nothing: it was let through earlier.
    early, kinds = fold_calls([(other, 1, T0 + 4_999, (ANSWERED,))], opened)
    assert kinds == [] and early.breaker == opened.breaker


def test_published_state_and_alerts_encode_with_their_schemas() -> None:
    opened, _ = fold_calls([(GW, seq, T0 + seq, (FAILED,)) for seq in (1, 2, 3)])
    state = to_state(opened, PRIMARY, CONFIG, event_id="e1", occurred_at=T0 + 9)
    assert (state.state, state.opened_at, state.open_until) == ("open", T0 + 3, T0 + 5_003)
    assert (state.provider, state.model, state.tenant_id) == (*PRIMARY, "")
    assert codec.decode_as(codec.encode(state), BreakerState) == state
    closing, _ = fold_calls([(GW, 1, T0, (FAILED,))])
    closed = to_state(closing, PRIMARY, CONFIG, event_id="e2", occurred_at=T0)
    assert (closed.state, closed.open_until, closed.failures_in_window) == ("closed", None, 1)
    alert = to_alert(
        Transition("closed", "open", T0 + 3), PRIMARY, event_id="e3", occurred_at=T0 + 9
    )
    assert (alert.event_type, alert.before, alert.after, alert.at) == (
        "circuit.opened",
        "closed",
        "open",
        T0 + 3,
    )
    assert codec.decode_as(codec.encode(alert), CircuitChanged) == alert
    closing_alert = to_alert(
        Transition("half_open", "closed", T0), PRIMARY, event_id="e4", occurred_at=T0
    )
    assert closing_alert.event_type == "circuit.closed"


def test_state_names_are_checked() -> None:
    assert [state_of(s) for s in ("closed", "open", "half_open")] == ["closed", "open", "half_open"]
    assert state_of("ajar") is None


fleet_histories = st.lists(
    st.tuples(
        st.integers(0, 2),  # partition
        st.sampled_from([(FAILED,), (FAILED, SERVED), (SKIP, SERVED), (ANSWERED,)]),
        st.integers(0, 4_000),  # ms since the last record
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(fleet_histories, st.integers(0, 40))
def test_redelivery_from_any_point_changes_nothing(
    history: list[tuple[int, tuple[Attempt, ...], int]], restart_at: int
) -> None:
    """At-least-once: after a crash the records since the last commit come again, on top
    of a table that already holds them. The breaker and the alerts are those of one pass."""
    calls = []
    now_ms = T0
    for seq, (partition, attempts, elapsed_ms) in enumerate(history, start=1):
        now_ms += elapsed_ms
        calls.append((watermark_key("gateway-a", partition), seq, now_ms, attempts))
    once, _ = fold_calls(calls)
    twice, kinds_again = fold_calls(calls[restart_at:], once)
    assert twice == once and kinds_again == []
    assert load_fleet(dump_fleet(once)) == once


def lineage_call(seq: int, occurred_at: int, attempts: tuple[Attempt, ...]) -> LineageRecord:
    return builders.call(
        producer_id="gateway-a", seq=seq, occurred_at=occurred_at, attempts=attempts
    )


@settings(max_examples=200, deadline=None)
@given(fleet_histories, st.integers(1, 8))
def test_forwarded_batches_fold_as_the_records_would(
    history: list[tuple[int, tuple[Attempt, ...], int]], batch_size: int
) -> None:
    """The processor forwards a batch's observations of a target as one message: folding
    the messages gives the breaker and the alerts of folding the records one by one."""
    calls, records = [], []
    now_ms = T0
    for seq, (partition, attempts, elapsed_ms) in enumerate(history, start=1):
        now_ms += elapsed_ms
        calls.append((watermark_key("gateway-a", partition), seq, now_ms, attempts))
        records.append((lineage_call(seq, now_ms, attempts), partition))
    one_by_one, kinds = fold_calls(calls)
    fleet, forwarded_kinds = FleetBreaker(), []
    for start in range(0, len(records), batch_size):
        observed = [
            observations_of(call, partition).get(PRIMARY)
            for call, partition in records[start : start + batch_size]
        ]
        message = dump_observations(o for o in observed if o is not None)
        fleet, transitions = fold_observations(fleet, PRIMARY, load_observations(message), CONFIG)
        forwarded_kinds += [t.kind for t in transitions]
    assert forwarded_kinds == kinds
    assert fleet.breaker == one_by_one.breaker


@pytest.mark.parametrize(
    "message", [b"", b"{}", b"[[1]]", b'[["w", "x", 0, []]]', b'[["w", 1, 2, [[200]]]]']
)
def test_a_forward_that_is_not_observations_is_a_value_error(message: bytes) -> None:
    with pytest.raises(ValueError, match="not a batch of breaker observations"):
        load_observations(message)


def test_a_transition_made_again_gets_the_same_ids_and_another_transition_other_ones() -> None:
    opened = Transition("closed", "open", T0 + 3)
    again = Transition("closed", "open", T0 + 3)
    ids = {alert_event_id(opened, PRIMARY), alert_event_id(again, PRIMARY)}
    assert len(ids) == 1
    others = {
        alert_event_id(Transition("half_open", "open", T0 + 3), PRIMARY),
        alert_event_id(Transition("closed", "open", T0 + 4), PRIMARY),
        alert_event_id(opened, ("upstream", "outage-secondary")),
        state_event_id(opened, PRIMARY),
    }
    assert len(others) == 4
    assert not ids & others
