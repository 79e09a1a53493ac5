"""SLA windows as projections of lineage. Pure: no I/O, no clock, no ids.

Every gateway call that reached routing (a provider was chosen) is counted in the
one-minute tumbling window of its (provider, model_selected, tenant_id), the minute its
`occurred_at` falls in (UTC epoch ms, floored to the minute). A window keeps counts and
mergeable sketches, never ratios, so minutes roll up into hours and days exactly
(`rollup`), and `breaches` checks a window against its targets.

What counts (`outcome_of`, from the status and error code the gateway returned):
- error: the provider's fault or ours: any 5xx (502 `upstream_error`, 503 `circuit_open`,
  `overloaded`, `policy_unavailable` …, 500 `internal_error`), the codes `upstream_error`,
  `circuit_open` and `overloaded` whatever the status, a 429 that is not the gateway's
  own `rate_limited` refusal (an upstream 429 passed through; today the gateway wraps
  those in 502 `upstream_error`), and a status outside 2xx-4xx (no answer).
- caller fault: any other 4xx: the caller's request was refused (400, 401, 402, 403, 404,
  409, 413, 422, 431, and 429 `rate_limited`, the key's own quota) or the caller went away
  (499). Counted in `requests` and `caller_faults` but not in availability: it says
  nothing about the provider or the gateway.
- ok: 2xx and 3xx.
Availability is `1 - errors / eligible`, eligible = requests - caller_faults, computed on
read. The latency, TTFT (streamed calls that report one) and gateway-overhead sketches
hold the eligible calls only: a caller's 2 ms refusal is not a latency. Tokens and cost
add up over every call. Calls refused before any target was chosen (provider "") are not
counted at all.

Once: Kafka keeps one producer's records for one tenant in order (the lineage topic is
keyed by tenant; producers publish under one lock), so the state keeps, per
(tenant_id, producer_id), the highest `seq` applied, and a record at or below it changes
nothing (seq starts at 1; an unsealed record, seq 0, is ignored). The watermark is per
tenant rather than per window so that it outlives the windows: a record redelivered
after its window closed is still recognised. One state must therefore see all of a
tenant's records: one state per lineage partition (keyed by tenant) does.

Closing: `closed(now_ms)` returns each window once its end + grace has passed, then
forgets it. A record that arrives for a minute already closed is late: it is counted in
a correction window for the same minute with `revision` 1, 2 …, returned by the next
`closed`; consumers merge (sum counts, merge sketches) every revision of a minute, never
replace. A record more than `retention_ms` behind the closed minutes is expired: only
counted in `SlaState.expired`. Watermarks and revision numbers are kept for that long.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Literal

from schemas.records import LineageRecord
from streams.sla.sketch import EMPTY, Sketch, merge_all

WINDOW_MS = 60_000
DEFAULT_GRACE_MS = 30_000
"""How long after a minute ends its window stays open for records still in flight."""
DEFAULT_RETENTION_MS = 3_600_000
"""How long after a minute closed late records still correct it (a lineage spool drained
after a broker outage arrives late); older ones are only counted as expired."""
ALL = "*"
"""What `rollup` puts in provider, model or tenant when the summaries differ in it."""

# Error codes that say the provider or the gateway failed the call, whatever the status.
FAULT_CODES = frozenset({"upstream_error", "circuit_open", "overloaded"})
# The gateway's own 429: the key's or tenant's rate limit, the caller's quota.
CALLER_RATE_LIMITED = "rate_limited"

Outcome = Literal["ok", "error", "caller_fault"]
Metric = Literal["availability", "gateway_overhead_p99_ms", "ingestion_lag_ms"]
WindowId = tuple[str, str, str, int, int]
"""(provider, model_selected, tenant_id, start_ms, revision) of an open window."""
MinuteId = tuple[str, str, str, int]
"""(provider, model_selected, tenant_id, start_ms): one minute of one target and tenant."""


def minute_start(at_ms: int) -> int:
    """Start of the UTC minute holding a moment (epoch ms)."""
    return at_ms - at_ms % WINDOW_MS


def outcome_of(http_status: int, error_code: str | None) -> Outcome:
    """Whether a call failed by the provider's or the gateway's fault, by its caller's, or
    not at all; see the module docstring for the table."""
    if error_code in FAULT_CODES or http_status >= 500:
        return "error"
    if http_status == 429:
        return "caller_fault" if error_code == CALLER_RATE_LIMITED else "error"
    if 400 <= http_status < 500:
        return "caller_fault"
    if 200 <= http_status < 400:
        return "ok"
    return "error"


@dataclasses.dataclass(frozen=True, slots=True)
class WindowSummary:
    """Counts and sketches of one target's calls for one tenant over [start_ms, end_ms).

    A minute window has `end_ms - start_ms == WINDOW_MS`; a rollup spans more. `revision`
    0 is the window as closed; 1, 2 … are corrections made of late records only, to be
    merged into it. Sketches are in milliseconds.
    """

    provider: str
    model_selected: str
    tenant_id: str
    start_ms: int
    end_ms: int
    revision: int = 0
    requests: int = 0
    errors: int = 0
    caller_faults: int = 0
    latency_ms: Sketch = EMPTY
    ttft_ms: Sketch = EMPTY
    gateway_overhead_ms: Sketch = EMPTY
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nanousd: int = 0

    @property
    def eligible(self) -> int:
        """Calls that count toward availability: all but the callers' faults."""
        return self.requests - self.caller_faults

    @property
    def availability(self) -> float:
        """1 - errors / eligible, a ratio (0.999 is 99.9 %); 1.0 with no eligible call."""
        eligible = self.eligible
        return 1.0 - self.errors / eligible if eligible else 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class Watermark:
    """The highest `seq` applied from one producer for one tenant, and the latest
    `occurred_at` among its applied records (to forget it once that is expired)."""

    seq: int
    last_occurred_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class SlaState:
    """Open windows and what is needed to apply each record once.

    `open_from_ms`: windows starting before it were closed; a record for one of them is
    late. `kept_from_ms`: records for minutes before it are expired. Both only move
    forward, set by `closed`. `revisions`: the last correction emitted per minute, for
    minutes that had one, kept until the minute expires.
    """

    windows: Mapping[WindowId, WindowSummary] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    applied_seqs: Mapping[tuple[str, str], Watermark] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    revisions: Mapping[MinuteId, int] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    open_from_ms: int = 0
    kept_from_ms: int = 0
    expired: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class SlaTargets:
    """What a window must meet. Availability is a ratio; a window with fewer than
    `min_eligible` eligible calls is not judged on availability or overhead."""

    availability_min: float = 0.999
    gateway_overhead_p99_max_ms: float = 50.0
    ingestion_lag_max_ms: float = 5_000.0
    min_eligible: int = 1

    def __post_init__(self) -> None:
        assert 0.0 <= self.availability_min <= 1.0, "availability is a ratio"
        assert self.gateway_overhead_p99_max_ms > 0, "an overhead target is positive"
        assert self.ingestion_lag_max_ms > 0, "a lag target is positive"
        assert self.min_eligible >= 1, "a window is judged on at least one call"


DEFAULT_TARGETS = SlaTargets()


@dataclasses.dataclass(frozen=True, slots=True)
class TargetMissed:
    """A window missed a target: the metric, what was observed, the target, the window.

    availability: observed < target (ratios). gateway_overhead_p99_ms: observed >= target
    (the p99 is read from a sketch, within 1 %). ingestion_lag_ms: observed > target.
    """

    metric: Metric
    observed: float
    target: float
    provider: str
    model_selected: str
    tenant_id: str
    start_ms: int
    end_ms: int
    revision: int


def apply(state: SlaState, record: LineageRecord) -> SlaState:
    """The state after one lineage record; the same state if it was applied before (or
    a later one of its producer for its tenant was) or names no provider. Raises
    ValueError for a negative or non-finite latency, TTFT or overhead (dead-letter it)."""
    return fold((record,), state)


def fold(records: Iterable[LineageRecord], state: SlaState | None = None) -> SlaState:
    """Apply records in order: what the processor and replay both do. The same state as
    `apply` one by one, but the state is copied once and each touched window rebuilt once
    per call, so a processor should fold batches (`stream.take`). A ValueError for one
    record (see `apply`) fails the whole batch: fold it again one by one to find it."""
    before = state if state is not None else SlaState()
    applied = dict(before.applied_seqs)
    expired = before.expired
    touched: dict[WindowId, _Pending] = {}
    for record in records:
        if not record.provider:
            continue
        producer = (record.tenant_id, record.producer_id)
        mark = applied.get(producer)
        if mark is None:
            if record.seq <= 0:
                continue
            applied[producer] = Watermark(record.seq, record.occurred_at)
        elif record.seq <= mark.seq:
            continue
        else:
            latest = max(mark.last_occurred_at, record.occurred_at)
            applied[producer] = Watermark(record.seq, latest)
        start = minute_start(record.occurred_at)
        if start < before.kept_from_ms:
            expired += 1
            continue
        minute = (record.provider, record.model_selected, record.tenant_id, start)
        revision = 0 if start >= before.open_from_ms else before.revisions.get(minute, 0) + 1
        window_id = (*minute, revision)
        pending = touched.get(window_id)
        if pending is None:
            pending = touched[window_id] = _Pending()
        pending.add(record)
    if expired == before.expired and not touched:
        return before
    windows = dict(before.windows)
    for window_id, pending in touched.items():
        window = windows.get(window_id)
        if window is None:
            provider, model, tenant, start, revision = window_id
            window = WindowSummary(provider, model, tenant, start, start + WINDOW_MS, revision)
        windows[window_id] = pending.added_to(window)
    return dataclasses.replace(
        before,
        windows=MappingProxyType(windows),
        applied_seqs=MappingProxyType(applied),
        expired=expired,
    )


@dataclasses.dataclass(slots=True)
class _Pending:
    """What one `fold` adds to one window: a local accumulator, never shared or kept."""

    requests: int = 0
    errors: int = 0
    caller_faults: int = 0
    latency_ms: list[float] = dataclasses.field(default_factory=list)
    ttft_ms: list[float] = dataclasses.field(default_factory=list)
    gateway_overhead_ms: list[float] = dataclasses.field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nanousd: int = 0

    def add(self, record: LineageRecord) -> None:
        outcome = outcome_of(record.http_status, record.error_code)
        self.requests += 1
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.cost_nanousd += record.cost_nanousd
        if outcome == "caller_fault":
            self.caller_faults += 1
            return
        self.errors += outcome == "error"
        self.latency_ms.append(_measured(record, "latency_ms", record.latency_ms))
        self.gateway_overhead_ms.append(
            _measured(record, "gateway_overhead_ms", record.gateway_overhead_ms)
        )
        if record.ttft_ms is not None:
            self.ttft_ms.append(_measured(record, "ttft_ms", record.ttft_ms))

    def added_to(self, window: WindowSummary) -> WindowSummary:
        return WindowSummary(
            window.provider,
            window.model_selected,
            window.tenant_id,
            window.start_ms,
            window.end_ms,
            window.revision,
            requests=window.requests + self.requests,
            errors=window.errors + self.errors,
            caller_faults=window.caller_faults + self.caller_faults,
            latency_ms=window.latency_ms.add_all(self.latency_ms),
            ttft_ms=window.ttft_ms.add_all(self.ttft_ms),
            gateway_overhead_ms=window.gateway_overhead_ms.add_all(self.gateway_overhead_ms),
            prompt_tokens=window.prompt_tokens + self.prompt_tokens,
            completion_tokens=window.completion_tokens + self.completion_tokens,
            cost_nanousd=window.cost_nanousd + self.cost_nanousd,
        )


def _measured(record: LineageRecord, name: str, value: float) -> float:
    if not (0.0 <= value < math.inf):
        raise ValueError(f"record {record.event_id}: {name} must be finite and >= 0, not {value!r}")
    return value


def closed(
    state: SlaState,
    now_ms: int,
    grace_ms: int = DEFAULT_GRACE_MS,
    retention_ms: int = DEFAULT_RETENTION_MS,
) -> tuple[SlaState, tuple[WindowSummary, ...]]:
    """Windows whose end + `grace_ms` is at or before `now_ms`, each returned once (by
    start, tenant, provider, model, revision), and the state without them. Also forgets
    watermarks and revision numbers of minutes more than `retention_ms` behind, so state
    stays bounded by the traffic of grace + retention. `now_ms` going back does nothing."""
    assert grace_ms >= 0, "grace is a duration"
    assert retention_ms >= 0, "retention is a duration"
    open_from = max(state.open_from_ms, minute_start(now_ms - grace_ms))
    kept_from = max(state.kept_from_ms, minute_start(now_ms - grace_ms - retention_ms))
    due = sorted(
        (w for w in state.windows.values() if w.start_ms < open_from),
        key=lambda w: (w.start_ms, w.tenant_id, w.provider, w.model_selected, w.revision),
    )
    if not due and (open_from, kept_from) == (state.open_from_ms, state.kept_from_ms):
        return state, ()
    revisions = {m: r for m, r in state.revisions.items() if m[3] >= kept_from}
    for window in due:
        if window.revision and window.start_ms >= kept_from:
            revisions[_minute(window)] = window.revision
    after = SlaState(
        windows=MappingProxyType(
            {i: w for i, w in state.windows.items() if w.start_ms >= open_from}
        ),
        applied_seqs=MappingProxyType(
            {
                p: m
                for p, m in state.applied_seqs.items()
                if minute_start(m.last_occurred_at) >= kept_from
            }
        ),
        revisions=MappingProxyType(revisions),
        open_from_ms=open_from,
        kept_from_ms=kept_from,
        expired=state.expired,
    )
    return after, tuple(due)


def _minute(window: WindowSummary) -> MinuteId:
    return (window.provider, window.model_selected, window.tenant_id, window.start_ms)


def rollup(summaries: Iterable[WindowSummary]) -> WindowSummary:
    """One summary of many (minutes into an hour, hours into a day, corrections into
    their minute): counts add, sketches merge exactly. It spans the earliest start to
    the latest end, with revision 0; a provider, model or tenant the summaries do not
    share becomes `ALL`. Each summary must be passed once (ValueError on a repeat) and
    they must not overlap (a rollup with its own minutes counts them twice)."""
    items = tuple(summaries)
    if not items:
        raise ValueError("nothing to roll up")
    identities = {(*_minute(s), s.end_ms, s.revision) for s in items}
    if len(identities) != len(items):
        raise ValueError("the same window twice: it would be counted twice")
    return WindowSummary(
        provider=_shared(s.provider for s in items),
        model_selected=_shared(s.model_selected for s in items),
        tenant_id=_shared(s.tenant_id for s in items),
        start_ms=min(s.start_ms for s in items),
        end_ms=max(s.end_ms for s in items),
        revision=0,
        requests=sum(s.requests for s in items),
        errors=sum(s.errors for s in items),
        caller_faults=sum(s.caller_faults for s in items),
        latency_ms=merge_all(s.latency_ms for s in items),
        ttft_ms=merge_all(s.ttft_ms for s in items),
        gateway_overhead_ms=merge_all(s.gateway_overhead_ms for s in items),
        prompt_tokens=sum(s.prompt_tokens for s in items),
        completion_tokens=sum(s.completion_tokens for s in items),
        cost_nanousd=sum(s.cost_nanousd for s in items),
    )


def _shared(values: Iterable[str]) -> str:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else ALL


def breaches(
    summary: WindowSummary,
    targets: SlaTargets = DEFAULT_TARGETS,
    *,
    ingestion_lag_ms: float | None = None,
) -> tuple[TargetMissed, ...]:
    """The targets a window missed. Availability and overhead p99 are judged only with
    at least `targets.min_eligible` eligible calls. Ingestion lag (occurred_at to read,
    measured by the processor, which has the clock) is judged when given, and
    attributed to this window. A correction (revision > 0) holds late records only:
    judge it merged with its minute (`rollup`), or not at all."""
    found: list[TargetMissed] = []

    def breach(metric: Metric, observed: float, target: float) -> None:
        found.append(
            TargetMissed(
                metric,
                observed,
                target,
                summary.provider,
                summary.model_selected,
                summary.tenant_id,
                summary.start_ms,
                summary.end_ms,
                summary.revision,
            )
        )

    if summary.eligible >= targets.min_eligible:
        if summary.availability < targets.availability_min:
            breach("availability", summary.availability, targets.availability_min)
        p99 = summary.gateway_overhead_ms.quantile(0.99)
        if p99 is not None and p99 >= targets.gateway_overhead_p99_max_ms:
            breach("gateway_overhead_p99_ms", p99, targets.gateway_overhead_p99_max_ms)
    if ingestion_lag_ms is not None and ingestion_lag_ms > targets.ingestion_lag_max_ms:
        breach("ingestion_lag_ms", ingestion_lag_ms, targets.ingestion_lag_max_ms)
    return tuple(found)
