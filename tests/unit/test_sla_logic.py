"""SLA windows: given lineage records, then minute summaries, rollups and breaches."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import LineageRecord
from streams.sla.logic import (
    ALL,
    DEFAULT_GRACE_MS,
    DEFAULT_RETENTION_MS,
    WINDOW_MS,
    SlaState,
    SlaTargets,
    WindowSummary,
    apply,
    breaches,
    closed,
    fold,
    minute_start,
    outcome_of,
    rollup,
)
from streams.sla.sketch import of
from tests.unit.builders import (
    MINI_COMPLETION_NANOUSD,
    MINI_PROMPT_NANOUSD,
    T0,
    TENANT,
    call,
    rejected_call,
)

GATEWAY_A = "gateway-eu1-0a1b2c"
GATEWAY_B = "gateway-us1-9f8e7d"
CALL_COST = 1_200 * MINI_PROMPT_NANOUSD + 350 * MINI_COMPLETION_NANOUSD
UPSTREAM_FAILED = {"http_status": 502, "error_code": "upstream_error", "decision": "failed"}


def minute_of_calls(
    n: int, *, first_seq: int = 1, at: int = T0, **overrides: Any
) -> list[LineageRecord]:
    """n calls of one gateway spread over the minute starting at `at`, seq in order."""
    spacing_ms = WINDOW_MS // n
    return [
        call(producer_id=GATEWAY_A, seq=first_seq + i, occurred_at=at + i * spacing_ms, **overrides)
        for i in range(n)
    ]


def close_all(state: SlaState, after_ms: int) -> tuple[SlaState, tuple[WindowSummary, ...]]:
    return closed(state, after_ms + WINDOW_MS + DEFAULT_GRACE_MS)


def only_window(state: SlaState) -> WindowSummary:
    (window,) = state.windows.values()
    return window


# --- what counts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (200, None, "ok"),
        (502, "upstream_error", "error"),
        (503, "circuit_open", "error"),
        (503, "overloaded", "error"),
        (503, "policy_unavailable", "error"),
        (500, "internal_error", "error"),
        (429, None, "error"),  # an upstream 429 passed through
        (429, "rate_limited", "caller_fault"),  # the key's own rate limit
        (400, "pii_blocked", "caller_fault"),
        (401, "invalid_api_key", "caller_fault"),
        (402, "budget_exhausted", "caller_fault"),
        (403, "model_not_allowed", "caller_fault"),
        (404, "model_not_found", "caller_fault"),
        (413, "request_too_large", "caller_fault"),
        (431, "request_headers_too_large", "caller_fault"),
        (499, "client_closed_request", "caller_fault"),
        (0, None, "error"),  # no answer at all
    ],
)
def test_outcome_of_a_call(status: int, code: str | None, outcome: str) -> None:
    assert outcome_of(status, code) == outcome


def test_a_minute_of_1000_calls_with_2_upstream_errors_is_99_8_percent_available() -> None:
    records = minute_of_calls(998) + [
        call(producer_id=GATEWAY_A, seq=999 + i, occurred_at=T0 + 59_000 + i, **UPSTREAM_FAILED)
        for i in range(2)
    ]
    window = only_window(fold(records))
    assert (window.requests, window.errors, window.caller_faults) == (1_000, 2, 0)
    assert window.availability == pytest.approx(0.998)
    (breach,) = breaches(window)
    assert breach.metric == "availability"
    assert breach.observed == pytest.approx(0.998)
    assert breach.target == 0.999
    assert (breach.provider, breach.model_selected, breach.tenant_id) == (
        "openai",
        "gpt-4o-mini",
        TENANT,
    )
    assert (breach.start_ms, breach.end_ms, breach.revision) == (T0, T0 + WINDOW_MS, 0)


def test_one_error_in_1000_meets_99_9_percent() -> None:
    failed = call(producer_id=GATEWAY_A, seq=1_000, occurred_at=T0 + 59_000, **UPSTREAM_FAILED)
    records = [*minute_of_calls(999), failed]
    window = only_window(fold(records))
    assert window.availability == pytest.approx(0.999)
    assert breaches(window) == ()


def test_callers_4xx_are_requests_but_not_errors_and_not_in_availability() -> None:
    refusals = [
        {"http_status": 403, "error_code": "model_not_allowed", "decision": "rejected"},
        {"http_status": 429, "error_code": "rate_limited", "decision": "rejected"},
        {"http_status": 400, "error_code": "pii_blocked", "decision": "rejected"},
        {"http_status": 402, "error_code": "cost_limit_exceeded", "decision": "rejected"},
        {"http_status": 499, "error_code": "client_closed_request"},
    ]
    records = minute_of_calls(100) + [
        call(producer_id=GATEWAY_A, seq=101 + i, occurred_at=T0 + 59_000 + i, **r)
        for i, r in enumerate(refusals * 20)
    ]
    window = only_window(fold(records))
    assert (window.requests, window.caller_faults, window.errors) == (200, 100, 0)
    assert window.eligible == 100
    assert window.availability == 1.0
    assert breaches(window) == ()
    # A caller's fast refusal is not a latency.
    assert window.latency_ms.count == window.gateway_overhead_ms.count == 100


def test_availability_is_over_eligible_calls_only() -> None:
    records = [
        call(producer_id=GATEWAY_A, seq=1, **UPSTREAM_FAILED),
        call(producer_id=GATEWAY_A, seq=2),
        call(producer_id=GATEWAY_A, seq=3, http_status=403, error_code="forbidden"),
        call(producer_id=GATEWAY_A, seq=4, http_status=403, error_code="forbidden"),
    ]
    assert only_window(fold(records)).availability == 0.5


def test_a_window_of_only_refusals_is_available_and_not_judged() -> None:
    records = [
        call(producer_id=GATEWAY_A, seq=1, http_status=429, error_code="rate_limited"),
    ]
    window = only_window(fold(records))
    assert (window.eligible, window.availability) == (0, 1.0)
    assert window.gateway_overhead_ms.quantile(0.99) is None
    assert breaches(window) == ()


def test_calls_refused_before_a_target_was_chosen_are_not_counted() -> None:
    state = fold(minute_of_calls(3))
    assert apply(state, rejected_call(producer_id=GATEWAY_A, seq=4)) is state
    assert fold([rejected_call()]) == SlaState()


def test_tokens_cost_and_sketches_of_the_window() -> None:
    records = [
        call(producer_id=GATEWAY_A, seq=1, latency_ms=900.0, gateway_overhead_ms=2.0),
        call(
            producer_id=GATEWAY_A,
            seq=2,
            stream=True,
            latency_ms=2_400.0,
            ttft_ms=310.0,
            gateway_overhead_ms=4.5,
        ),
        call(producer_id=GATEWAY_A, seq=3, prompt_tokens=10, completion_tokens=0, cost_nanousd=0),
    ]
    window = only_window(fold(records))
    assert window.prompt_tokens == 1_200 * 2 + 10
    assert window.completion_tokens == 350 * 2
    assert window.cost_nanousd == 2 * CALL_COST
    assert window.latency_ms == of([900.0, 2_400.0, 1_480.5])
    assert window.gateway_overhead_ms == of([2.0, 4.5, 3.25])
    assert window.ttft_ms == of([310.0])  # only the streamed call has one


def test_windows_are_per_provider_model_and_tenant_and_per_utc_minute() -> None:
    records = [
        call(producer_id=GATEWAY_A, seq=1, occurred_at=T0),
        call(producer_id=GATEWAY_A, seq=2, occurred_at=T0 + 59_999),
        call(producer_id=GATEWAY_A, seq=3, occurred_at=T0 + 60_000),
        call(producer_id=GATEWAY_A, seq=4, model_selected="gpt-4o"),
        call(producer_id=GATEWAY_A, seq=5, provider="azure"),
        call(producer_id=GATEWAY_A, seq=1, tenant_id="globex"),
    ]
    state = fold(records)
    requests = {
        (w.provider, w.model_selected, w.tenant_id, w.start_ms): w.requests
        for w in state.windows.values()
    }
    assert requests == {
        ("openai", "gpt-4o-mini", TENANT, T0): 2,
        ("openai", "gpt-4o-mini", TENANT, T0 + 60_000): 1,
        ("openai", "gpt-4o", TENANT, T0): 1,
        ("azure", "gpt-4o-mini", TENANT, T0): 1,
        ("openai", "gpt-4o-mini", "globex", T0): 1,
    }
    assert minute_start(T0 + 59_999) == T0


@pytest.mark.parametrize("field", ["latency_ms", "gateway_overhead_ms", "ttft_ms"])
@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_negative_or_non_finite_measurements_are_refused(field: str, bad: float) -> None:
    record = call(**{field: bad})
    with pytest.raises(ValueError, match=f"record {record.event_id}: {field} must be finite"):
        apply(SlaState(), record)


# --- once -----------------------------------------------------------------------------


def test_the_same_records_twice_count_once() -> None:
    failed = call(producer_id=GATEWAY_A, seq=51, occurred_at=T0 + 59_500, **UPSTREAM_FAILED)
    records = [*minute_of_calls(50), failed]
    once = fold(records)
    assert fold(records + records) == once
    assert fold([r for r in records for _ in range(2)]) == once
    assert apply(once, records[-1]) is once
    assert only_window(once).requests == 51


def test_an_older_seq_after_a_newer_one_from_the_same_producer_changes_nothing() -> None:
    newer = call(producer_id=GATEWAY_A, seq=5)
    older = call(producer_id=GATEWAY_A, seq=4, **UPSTREAM_FAILED)
    state = fold([newer])
    assert apply(state, older) is state


def test_producers_and_tenants_have_their_own_watermarks() -> None:
    records = [
        call(producer_id=GATEWAY_A, seq=9),
        call(producer_id=GATEWAY_B, seq=1),
        call(producer_id=GATEWAY_A, seq=2, tenant_id="globex"),
    ]
    state = fold(records)
    assert sum(w.requests for w in state.windows.values()) == 3
    assert {p: m.seq for p, m in state.applied_seqs.items()} == {
        (TENANT, GATEWAY_A): 9,
        (TENANT, GATEWAY_B): 1,
        ("globex", GATEWAY_A): 2,
    }


def test_a_record_redelivered_after_its_window_closed_changes_nothing() -> None:
    records = minute_of_calls(10)
    state, summaries = close_all(fold(records), T0)
    assert len(summaries) == 1
    assert fold(records, state) == state


OUTCOMES = [
    {},
    UPSTREAM_FAILED,
    {"http_status": 403, "error_code": "forbidden", "decision": "rejected"},
    {"stream": True, "ttft_ms": 250.0},
    {"provider": "", "model_selected": ""},
]
calls_drawn = st.lists(
    st.tuples(
        st.sampled_from([GATEWAY_A, GATEWAY_B]),
        st.sampled_from([TENANT, "globex"]),
        st.integers(min_value=0, max_value=4),  # minute
        st.integers(min_value=0, max_value=len(OUTCOMES) - 1),
        st.floats(min_value=0.0, max_value=5_000.0),
        st.booleans(),  # redelivered again later
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(calls_drawn, st.lists(st.integers(min_value=0, max_value=80), max_size=6))
def test_folding_batches_equals_applying_one_by_one_with_closes_between(
    drawn: list[tuple[Any, ...]], cuts: list[int]
) -> None:
    seqs: dict[tuple[str, str], int] = {}
    records = []
    for producer, tenant, minute, outcome, latency, again in drawn:
        seqs[tenant, producer] = seqs.get((tenant, producer), 0) + 1
        record = call(
            producer_id=producer,
            tenant_id=tenant,
            seq=seqs[tenant, producer],
            occurred_at=T0 + minute * WINDOW_MS + 1_000,
            latency_ms=latency,
            **OUTCOMES[outcome],
        )
        records.append(record)
        if again:  # a redelivery: the same record, later in the stream
            records.append(record)
    bounds = sorted({0, len(records), *(c % (len(records) + 1) for c in cuts)})
    batched, one_by_one = SlaState(), SlaState()
    emitted_batched: list[WindowSummary] = []
    emitted_one_by_one: list[WindowSummary] = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        batched = fold(records[a:b], batched)
        for record in records[a:b]:
            one_by_one = apply(one_by_one, record)
        now = T0 + i * WINDOW_MS + DEFAULT_GRACE_MS
        batched, out = closed(batched, now)
        emitted_batched += out
        one_by_one, out = closed(one_by_one, now)
        emitted_one_by_one += out
    assert batched == one_by_one
    assert emitted_batched == emitted_one_by_one
    # Nothing is lost or counted twice: every distinct call with a target is in a window.
    counted = [*emitted_batched, *batched.windows.values()]
    assert sum(w.requests for w in counted) == len({r.event_id for r in records if r.provider})


# --- closing --------------------------------------------------------------------------


def test_a_window_closes_once_after_its_end_plus_grace() -> None:
    state = fold(minute_of_calls(10))
    end = T0 + WINDOW_MS
    before, nothing = closed(state, end + DEFAULT_GRACE_MS - 1)
    assert nothing == ()
    assert before.windows == state.windows
    state, (summary,) = closed(before, end + DEFAULT_GRACE_MS)
    assert (summary.start_ms, summary.end_ms, summary.requests) == (T0, end, 10)
    assert state.windows == {}
    assert closed(state, end + DEFAULT_GRACE_MS) == (state, ())
    assert closed(state, end + 10 * WINDOW_MS)[1] == ()


def test_closed_returns_due_windows_in_order_and_keeps_the_rest() -> None:
    records = [
        call(producer_id=GATEWAY_A, seq=1, occurred_at=T0 + 120_000),
        call(producer_id=GATEWAY_A, seq=2, occurred_at=T0, tenant_id="globex"),
        call(producer_id=GATEWAY_A, seq=3, occurred_at=T0),
        call(producer_id=GATEWAY_A, seq=4, occurred_at=T0 + 60_000),
    ]
    state, summaries = closed(fold(records), T0 + 2 * WINDOW_MS + DEFAULT_GRACE_MS)
    assert [(s.start_ms, s.tenant_id) for s in summaries] == [
        (T0, TENANT),
        (T0, "globex"),
        (T0 + 60_000, TENANT),
    ]
    assert [w.start_ms for w in state.windows.values()] == [T0 + 120_000]


def test_a_late_record_makes_a_correction_revision_for_its_minute() -> None:
    state, (first,) = close_all(fold(minute_of_calls(10)), T0)
    late = call(producer_id=GATEWAY_A, seq=11, occurred_at=T0 + 30_000, **UPSTREAM_FAILED)
    state = apply(state, late)
    state, (correction,) = closed(state, T0 + WINDOW_MS + DEFAULT_GRACE_MS)
    assert (correction.start_ms, correction.revision) == (T0, 1)
    assert (correction.requests, correction.errors) == (1, 1)
    # The minute is its revisions merged.
    merged = rollup([first, correction])
    assert (merged.requests, merged.errors) == (11, 1)
    assert merged.availability == pytest.approx(10 / 11)
    # Another late record for the same minute is the next revision.
    state = apply(state, call(producer_id=GATEWAY_A, seq=12, occurred_at=T0 + 1))
    _, (again,) = closed(state, T0 + WINDOW_MS + DEFAULT_GRACE_MS)
    assert (again.revision, again.requests) == (2, 1)


def test_records_older_than_retention_are_only_counted_as_expired() -> None:
    state, _ = closed(SlaState(), T0 + DEFAULT_GRACE_MS + DEFAULT_RETENTION_MS + WINDOW_MS)
    ancient = call(producer_id=GATEWAY_A, seq=1, occurred_at=T0)
    after = apply(state, ancient)
    assert after.windows == {}
    assert after.expired == 1
    assert apply(after, ancient) is after


def test_state_is_bounded_once_minutes_pass_retention() -> None:
    state = fold(minute_of_calls(20))
    state, _ = close_all(state, T0)
    state = apply(state, call(producer_id=GATEWAY_A, seq=21, occurred_at=T0))
    state, _ = close_all(state, T0)
    assert state.revisions  # the correction's number is kept while it may be corrected again
    state, _ = closed(state, T0 + WINDOW_MS + DEFAULT_GRACE_MS + DEFAULT_RETENTION_MS)
    assert (dict(state.windows), dict(state.applied_seqs), dict(state.revisions)) == ({}, {}, {})


def test_time_going_back_reopens_nothing() -> None:
    state, _ = close_all(fold(minute_of_calls(5)), T0)
    assert closed(state, T0) == (state, ())
    assert state.open_from_ms == T0 + WINDOW_MS


# --- rollups --------------------------------------------------------------------------


def test_rollup_of_60_minutes_equals_the_hour_computed_directly() -> None:
    rng = random.Random(42)
    records = []
    for i in range(60 * 40):
        failed = rng.random() < 0.002
        stream = rng.random() < 0.5
        records.append(
            call(
                producer_id=GATEWAY_A,
                seq=i + 1,
                occurred_at=T0 + i * 1_500,
                latency_ms=rng.lognormvariate(6.5, 0.7),
                gateway_overhead_ms=rng.expovariate(1 / 3),
                stream=stream,
                ttft_ms=rng.lognormvariate(5.5, 0.5) if stream else None,
                **(UPSTREAM_FAILED if failed else {}),
            )
        )
    state, minutes = closed(fold(records), T0 + 60 * WINDOW_MS + DEFAULT_GRACE_MS)
    assert len(minutes) == 60
    assert state.windows == {}
    hour = rollup(minutes)

    assert (hour.start_ms, hour.end_ms) == (T0, T0 + 60 * WINDOW_MS)
    assert hour.requests == len(records)
    assert hour.errors == sum(r.http_status == 502 for r in records)
    assert hour.latency_ms == of(r.latency_ms for r in records)
    assert hour.gateway_overhead_ms == of(r.gateway_overhead_ms for r in records)
    assert hour.ttft_ms == of(r.ttft_ms for r in records if r.ttft_ms is not None)
    assert hour.cost_nanousd == sum(r.cost_nanousd for r in records)
    assert hour.prompt_tokens == sum(r.prompt_tokens for r in records)
    # Grouping does not matter: hours of quarter-hours are the same hour.
    quarters = [rollup(minutes[i : i + 15]) for i in range(0, 60, 15)]
    assert rollup(quarters) == hour


def test_rollup_across_tenants_marks_what_differs() -> None:
    state = fold(
        [
            call(producer_id=GATEWAY_A, seq=1),
            call(producer_id=GATEWAY_A, seq=1, tenant_id="globex"),
        ]
    )
    _, minutes = close_all(state, T0)
    fleet = rollup(minutes)
    assert (fleet.provider, fleet.model_selected, fleet.tenant_id) == ("openai", "gpt-4o-mini", ALL)
    assert fleet.requests == 2


def test_rollup_refuses_the_same_window_twice_and_nothing() -> None:
    _, (minute,) = close_all(fold(minute_of_calls(3)), T0)
    with pytest.raises(ValueError, match="twice"):
        rollup([minute, minute])
    with pytest.raises(ValueError, match="nothing"):
        rollup([])


# --- breaches -------------------------------------------------------------------------


def overhead_minute(fast: int, slow: int) -> WindowSummary:
    overheads = [3.0] * fast + [80.0] * slow
    records = [
        call(producer_id=GATEWAY_A, seq=i + 1, occurred_at=T0 + i * 50, gateway_overhead_ms=o)
        for i, o in enumerate(overheads)
    ]
    return only_window(fold(records))


def test_p99_gateway_overhead_over_50_ms_breaches() -> None:
    window = overhead_minute(fast=985, slow=15)
    (breach,) = breaches(window)
    assert breach.metric == "gateway_overhead_p99_ms"
    assert breach.observed == pytest.approx(80.0, rel=0.01)
    assert breach.target == 50.0


def test_p99_gateway_overhead_under_50_ms_does_not() -> None:
    assert breaches(overhead_minute(fast=995, slow=5)) == ()


def test_targets_are_configurable() -> None:
    window = overhead_minute(fast=985, slow=15)
    assert breaches(window, SlaTargets(gateway_overhead_p99_max_ms=100.0)) == ()
    assert breaches(window, SlaTargets(min_eligible=5_000)) == ()


def test_ingestion_lag_over_target_breaches() -> None:
    window = only_window(fold(minute_of_calls(10)))
    assert breaches(window, ingestion_lag_ms=5_000.0) == ()
    (breach,) = breaches(window, ingestion_lag_ms=7_250.0)
    assert (breach.metric, breach.observed, breach.target) == ("ingestion_lag_ms", 7_250.0, 5_000.0)
    assert breach.start_ms == T0
