"""Between the SLA logic and its published records. Pure: no I/O, no clock, no ids.

`to_window` / `summary_of` turn a `WindowSummary` into the `SlaWindow` record (sketches
as `SketchRecord`) and back, losslessly: `summary_of(to_window(s, ...)) == s`.
`to_breached` turns a missed target into the `SlaBreached` alert record. Records come
out unsealed (producer_id "", seq 0): the agent seals them with its hash chain; the
moment comes in from the agent too. Event ids are derived from the output's natural key
(`window_event_id`, `breach_event_id`): a window or an alert derived again (after a
restart) is the same row to the sink.
"""

from __future__ import annotations

from schemas.ids import derived_uuid7
from schemas.records import SketchRecord, SlaBreached, SlaWindow
from streams.sla.logic import TargetMissed, WindowSummary
from streams.sla.sketch import Sketch, from_pairs


def sketch_record(sketch: Sketch) -> SketchRecord:
    """A sketch as it travels: its buckets as two parallel arrays, plus the rest."""
    return SketchRecord(
        alpha=sketch.alpha,
        max_buckets=sketch.max_buckets,
        zero_count=sketch.zero_count,
        sum_thousandths=sketch.sum_thousandths,
        min=sketch.min,
        max=sketch.max,
        bucket_indices=sketch.indices,
        bucket_counts=sketch.counts,
    )


def sketch_of(record: SketchRecord) -> Sketch:
    """The sketch a record describes; ValueError when it is inconsistent (wire input)."""
    if len(record.bucket_indices) != len(record.bucket_counts):
        raise ValueError("a sketch record needs one count per bucket index")
    return from_pairs(
        zip(record.bucket_indices, record.bucket_counts, strict=True),
        zero_count=record.zero_count,
        sum_thousandths=record.sum_thousandths,
        min_value=record.min,
        max_value=record.max,
        alpha=record.alpha,
        max_buckets=record.max_buckets,
    )


def to_window(summary: WindowSummary, *, event_id: str, occurred_at: int) -> SlaWindow:
    """The unsealed `SlaWindow` record of a closed window (tenant in the envelope)."""
    return SlaWindow(
        event_id=event_id,
        event_type=SlaWindow.event_type_name,
        occurred_at=occurred_at,
        tenant_id=summary.tenant_id,
        provider=summary.provider,
        model=summary.model_selected,
        window_start=summary.start_ms,
        window_end=summary.end_ms,
        revision=summary.revision,
        requests=summary.requests,
        errors=summary.errors,
        caller_faults=summary.caller_faults,
        prompt_tokens=summary.prompt_tokens,
        completion_tokens=summary.completion_tokens,
        cost_nanousd=summary.cost_nanousd,
        latency_ms=sketch_record(summary.latency_ms),
        ttft_ms=sketch_record(summary.ttft_ms),
        gateway_overhead_ms=sketch_record(summary.gateway_overhead_ms),
    )


def summary_of(window: SlaWindow) -> WindowSummary:
    """The summary a published window holds, to merge revisions or roll minutes up
    (`logic.rollup`); ValueError for an inconsistent sketch."""
    return WindowSummary(
        provider=window.provider,
        model_selected=window.model,
        tenant_id=window.tenant_id,
        start_ms=window.window_start,
        end_ms=window.window_end,
        revision=window.revision,
        requests=window.requests,
        errors=window.errors,
        caller_faults=window.caller_faults,
        latency_ms=sketch_of(window.latency_ms),
        ttft_ms=sketch_of(window.ttft_ms),
        gateway_overhead_ms=sketch_of(window.gateway_overhead_ms),
        prompt_tokens=window.prompt_tokens,
        completion_tokens=window.completion_tokens,
        cost_nanousd=window.cost_nanousd,
    )


def to_breached(breach: TargetMissed, *, event_id: str, occurred_at: int) -> SlaBreached:
    """The unsealed `sla.breached` alert of a missed target, for the window's tenant.
    The record has no revision field: the agent judges revision-0 windows only."""
    return SlaBreached(
        event_id=event_id,
        event_type=SlaBreached.event_type_name,
        occurred_at=occurred_at,
        tenant_id=breach.tenant_id,
        provider=breach.provider,
        model=breach.model_selected,
        metric=breach.metric,
        observed=breach.observed,
        target=breach.target,
        window_start=breach.start_ms,
        window_end=breach.end_ms,
    )


def window_event_id(summary: WindowSummary) -> str:
    """The event id of a window: derived from (provider, model, tenant, minute, revision),
    each published once, so a copy derived again carries the same id (UUIDv7-shaped,
    timestamped with the window's start)."""
    return derived_uuid7(
        summary.start_ms,
        SlaWindow.event_type_name,
        summary.provider,
        summary.model_selected,
        summary.tenant_id,
        summary.start_ms,
        summary.end_ms,
        summary.revision,
    )


def breach_event_id(breach: TargetMissed) -> str:
    """The event id of an `sla.breached` alert: derived from (metric, target, tenant,
    window); one per missed target of a revision-0 window."""
    return derived_uuid7(
        breach.start_ms,
        SlaBreached.event_type_name,
        breach.metric,
        breach.provider,
        breach.model_selected,
        breach.tenant_id,
        breach.start_ms,
        breach.end_ms,
        breach.revision,
    )
