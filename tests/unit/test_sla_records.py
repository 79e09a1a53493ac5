"""SLA summaries to published records and back, through Avro, losslessly."""

from __future__ import annotations

import math
from typing import Any

import pytest

from schemas import codec
from schemas.records import SketchRecord, SlaBreached, SlaWindow
from streams.sla.logic import (
    DEFAULT_GRACE_MS,
    WINDOW_MS,
    WindowSummary,
    breaches,
    closed,
    fold,
    rollup,
)
from streams.sla.records import sketch_of, sketch_record, summary_of, to_breached, to_window
from streams.sla.sketch import EMPTY, of
from tests.unit.builders import T0, TENANT, call, sketch

GATEWAY = "gateway-eu1-0a1b2c"
UPSTREAM_FAILED = {"http_status": 502, "error_code": "upstream_error", "decision": "failed"}


def closed_minutes() -> tuple[WindowSummary, ...]:
    """Two minutes of one target for one tenant: streamed and plain calls, upstream
    errors, a caller's refusal, a zero-latency answer."""
    records = [
        call(producer_id=GATEWAY, seq=1, latency_ms=900.0, gateway_overhead_ms=2.0),
        call(producer_id=GATEWAY, seq=2, stream=True, latency_ms=2_400.0, ttft_ms=310.25),
        call(producer_id=GATEWAY, seq=3, latency_ms=0.0, gateway_overhead_ms=0.0, ttft_ms=0.0),
        call(producer_id=GATEWAY, seq=4, occurred_at=T0 + 5, **UPSTREAM_FAILED),
        call(producer_id=GATEWAY, seq=5, http_status=403, error_code="model_not_allowed"),
        call(producer_id=GATEWAY, seq=6, occurred_at=T0 + WINDOW_MS + 1, latency_ms=12.5),
    ]
    _, due = closed(fold(records), T0 + 3 * WINDOW_MS + DEFAULT_GRACE_MS)
    assert len(due) == 2
    return due


def through_avro(window: SlaWindow) -> SlaWindow:
    return codec.decode_as(codec.encode(window), SlaWindow)


def test_a_closed_window_survives_record_and_avro_unchanged() -> None:
    for summary in closed_minutes():
        record = to_window(summary, event_id="0193a1b2-0000-7000-8000-000000000001", occurred_at=7)
        assert summary_of(through_avro(record)) == summary


def test_the_record_carries_the_window_with_tenant_in_the_envelope() -> None:
    first, _ = closed_minutes()
    record = to_window(first, event_id="0193a1b2-0000-7000-8000-000000000001", occurred_at=7)
    assert (record.tenant_id, record.provider, record.model) == (TENANT, "openai", "gpt-4o-mini")
    assert (record.window_start, record.window_end, record.revision) == (T0, T0 + WINDOW_MS, 0)
    assert (record.requests, record.errors, record.caller_faults) == (5, 1, 1)
    assert (record.event_type, record.producer_id, record.seq) == ("sla.window", "", 0)
    assert record.latency_ms.bucket_indices == tuple(i for i, _ in first.latency_ms.to_pairs())
    assert record.ttft_ms.zero_count == 1


def test_a_sealed_window_round_trips_too() -> None:
    first, _ = closed_minutes()
    chain = codec.HashChain("streams-sla-5e6f7a")
    sealed, data = chain.seal_encoded(
        to_window(first, event_id="0193a1b2-0000-7000-8000-000000000001", occurred_at=7)
    )
    decoded = codec.decode_as(data, SlaWindow)
    assert decoded == sealed
    assert (decoded.producer_id, decoded.seq) == ("streams-sla-5e6f7a", 1)
    assert summary_of(decoded) == first


def test_an_empty_sketch_travels_with_infinite_extremes_and_comes_back_empty() -> None:
    record = sketch_record(EMPTY)
    assert (record.min, record.max) == (math.inf, -math.inf)
    assert sketch_of(record) == EMPTY


def test_the_builders_sketch_is_the_converters_sketch() -> None:
    values = (120.0, 180.0, 950.0)
    assert sketch_record(of(values)) == sketch(values)


def test_minutes_rolled_up_from_records_equal_the_rollup_of_the_summaries() -> None:
    minutes = closed_minutes()
    records = [
        through_avro(
            to_window(m, event_id=f"0193a1b2-0000-7000-8000-00000000000{i}", occurred_at=7)
        )
        for i, m in enumerate(minutes)
    ]
    assert rollup(summary_of(r) for r in records) == rollup(minutes)


@pytest.mark.parametrize(
    "broken",
    [
        {"bucket_counts": (1,)},  # one count short
        {"bucket_counts": (0, 1, 1)},  # an empty bucket
        {"min": -1.0},  # a negative extreme
    ],
)
def test_an_inconsistent_sketch_record_is_refused(broken: dict[str, Any]) -> None:
    good = sketch()
    fields = {f: getattr(good, f) for f in SketchRecord.__dataclass_fields__}
    with pytest.raises(ValueError, match=r"."):
        sketch_of(SketchRecord(**{**fields, **broken}))


def test_a_breach_becomes_the_alert_of_the_windows_tenant() -> None:
    failed = [call(producer_id=GATEWAY, seq=i + 1, **UPSTREAM_FAILED) for i in range(2)]
    _, (window,) = closed(fold([*failed, call(producer_id=GATEWAY, seq=3)]), T0 + 10 * WINDOW_MS)
    (breach,) = (b for b in breaches(window) if b.metric == "availability")
    alert = to_breached(breach, event_id="0193a1b2-0000-7000-8000-000000000009", occurred_at=9)
    decoded = codec.decode_as(codec.encode(alert), SlaBreached)
    assert decoded == alert
    assert (decoded.event_type, decoded.tenant_id, decoded.metric) == (
        "sla.breached",
        TENANT,
        "availability",
    )
    assert (decoded.provider, decoded.model) == ("openai", "gpt-4o-mini")
    assert decoded.observed == pytest.approx(1 / 3)
    assert decoded.target == 0.999
    assert (decoded.window_start, decoded.window_end) == (T0, T0 + WINDOW_MS)
