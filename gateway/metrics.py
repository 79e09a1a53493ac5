"""The gateway's Prometheus metrics (docs/metrics.md), recorded once per call from its
lineage record and attempt trail (`call_done`), and read from state at each scrape
(breakers, the lineage outbox, calls in flight). Labels are bounded: models and
providers only as the catalogue names them, error codes only from the error table,
tenants only up to GOVLEDGER_METRICS_TENANT_LABELS_MAX; never a key or user id."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from gateway import errors
from gateway.admission import Admission
from gateway.breakers import BreakerBoard
from gateway.call_record import CallRecord
from gateway.catalogue import Target
from schemas.ids import now_ms
from schemas.metrics import (
    Allowed,
    CounterLike,
    FirstSeen,
    HistogramLike,
    Metrics,
    MetricSpec,
)
from schemas.outbox_publisher import OutboxPublisher
from schemas.records import LineageRecord
from schemas.settings import GatewaySettings

# Finer than call latency: the gateway's own work is well under a millisecond to a few.
OVERHEAD_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)

ROUTE = ("route",)
CALL = ("route", "model", "provider")
GATEWAY_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "govledger_gateway_calls_total",
        "counter",
        (*CALL, "status", "code"),
        "Calls answered, by API route, catalogue model, provider, HTTP status and error code.",
    ),
    MetricSpec(
        "govledger_gateway_call_duration_seconds",
        "histogram",
        CALL,
        "Call latency as the caller saw it (to the lineage record).",
    ),
    MetricSpec(
        "govledger_gateway_ttft_seconds",
        "histogram",
        CALL,
        "Time to the first streamed byte (streamed calls only).",
    ),
    MetricSpec(
        "govledger_gateway_overhead_seconds",
        "histogram",
        ROUTE,
        "Gateway overhead per call: latency minus time waiting on upstream attempts.",
        OVERHEAD_BUCKETS_S,
    ),
    MetricSpec(
        "govledger_gateway_upstream_attempts_total",
        "counter",
        ("provider", "outcome"),
        "Upstream attempts by provider and outcome (ok, breaker_open, timeout, http_5xx, ...).",
    ),
    MetricSpec(
        "govledger_gateway_retries_total",
        "counter",
        ("provider",),
        "Attempts that retried the target the attempt before them failed on.",
    ),
    MetricSpec(
        "govledger_gateway_fallbacks_total",
        "counter",
        ("from_provider", "to_provider"),
        "Moves of a call from one target to the next (a failure or an open breaker).",
    ),
    MetricSpec(
        "govledger_gateway_breaker_state",
        "gauge",
        ("target",),
        "Circuit breaker per provider/model target: 0 closed, 1 half-open, 2 open.",
    ),
    MetricSpec(
        "govledger_gateway_refusals_total",
        "counter",
        ("reason",),
        "Calls refused before any upstream, by reason (budget, rate_limit, policy, auth, ...).",
    ),
    MetricSpec(
        "govledger_gateway_calls_in_flight",
        "gauge",
        (),
        "Calls waiting on an upstream now.",
    ),
    MetricSpec(
        "govledger_gateway_tenant_calls_total",
        "counter",
        ("tenant",),
        "Calls per tenant (the first GOVLEDGER_METRICS_TENANT_LABELS_MAX; the rest `other`).",
    ),
    MetricSpec(
        "govledger_gateway_tenant_cost_nanousd_total",
        "counter",
        ("tenant",),
        "Cost of calls per tenant in nano-USD, as priced in their lineage records.",
    ),
    MetricSpec(
        "govledger_gateway_admission_limit",
        "gauge",
        (),
        "Calls the adaptive admission limit lets in flight now (gateway/admission.py).",
    ),
    MetricSpec(
        "govledger_gateway_admission_in_flight",
        "gauge",
        (),
        "Calls admitted and not yet answered (the admission limit counts these).",
    ),
    MetricSpec(
        "govledger_gateway_loop_lag_seconds",
        "gauge",
        (),
        "Event-loop lag, the lowest sample of the last admission interval.",
    ),
    MetricSpec(
        "govledger_gateway_admission_refusals_total",
        "counter",
        (),
        "Calls refused 503 overloaded by the admission limit (a lagging event loop).",
    ),
    MetricSpec(
        "govledger_lineage_emit_duration_seconds",
        "histogram",
        (),
        "Time to hand one lineage record to the outbox and the broker client.",
        OVERHEAD_BUCKETS_S,
    ),
    MetricSpec(
        "govledger_lineage_outbox_depth",
        "gauge",
        (),
        "Lineage records kept in the outbox (or spool) until the store confirms them.",
    ),
    MetricSpec(
        "govledger_lineage_outbox_oldest_age_seconds",
        "gauge",
        (),
        "Age of the oldest lineage record the store has not confirmed (0 when none).",
    ),
    MetricSpec(
        "govledger_lineage_resends_total",
        "counter",
        (),
        "Lineage records sent again (unconfirmed too long, or the broker came back).",
    ),
)

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
ATTEMPT_OUTCOMES = Allowed(
    (
        "ok",
        "breaker_open",
        "timeout",
        "connect",
        "transport",
        "http_4xx",
        "http_5xx",
        "rate_limited",
        "bad_response",
    )
)
ERROR_CODES = Allowed(kind.code for kind in errors.ALL_KINDS)
# Refusals (no upstream asked) by the step that refused; codes not listed are `invalid`.
REFUSAL_REASONS: dict[str, str] = {
    errors.BUDGET_EXHAUSTED.code: "budget",
    errors.RATE_LIMITED.code: "rate_limit",
    errors.OVERLOADED.code: "overload",
    errors.LINEAGE_UNAVAILABLE.code: "lineage",
    errors.CIRCUIT_OPEN.code: "circuit_open",
    **dict.fromkeys(
        (
            errors.USER_REQUIRED.code,
            errors.ROLE_INSUFFICIENT.code,
            errors.PII_BLOCKED.code,
            errors.CONTENT_BLOCKED.code,
            errors.COST_LIMIT_EXCEEDED.code,
            errors.REVIEW_REQUIRED.code,
            errors.REVIEW_REJECTED.code,
            errors.POLICY_UNAVAILABLE.code,
            errors.ORG_POLICY_VIOLATION.code,
        ),
        "policy",
    ),
    **dict.fromkeys(
        (
            errors.MISSING_API_KEY.code,
            errors.INVALID_API_KEY.code,
            errors.MALFORMED_API_KEY.code,
            errors.KEY_REVOKED.code,
            errors.KEY_EXPIRED.code,
        ),
        "auth",
    ),
    **dict.fromkeys(
        (
            errors.MODEL_NOT_ALLOWED.code,
            errors.PROVIDER_NOT_ALLOWED.code,
            errors.REGION_NOT_ALLOWED.code,
        ),
        "scope",
    ),
}


# A kind of call: route, model, provider, HTTP status, error code (each bounded).
CallKind = tuple[str, str, str, int, str]
# A kind of call's instruments: calls, duration, TTFT, overhead, refusals (or None).
CallSeries = tuple[CounterLike, HistogramLike, HistogramLike, HistogramLike, CounterLike | None]


class GatewayMetrics:
    """The gateway's instruments, with the bounds of their labels."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        models: Iterable[str],
        providers: Iterable[str],
    ) -> None:
        self.metrics = Metrics(GATEWAY_SPECS, enabled=settings.metrics_enabled)
        self.enabled = self.metrics.enabled
        self.model = Allowed(models)
        self.provider = Allowed(providers)
        self.tenant = FirstSeen(settings.metrics_tenant_labels_max)
        m = self.metrics
        self._calls = m["govledger_gateway_calls_total"]
        self._duration = m["govledger_gateway_call_duration_seconds"]
        self._ttft = m["govledger_gateway_ttft_seconds"]
        self._overhead = m["govledger_gateway_overhead_seconds"]
        self._attempts = m["govledger_gateway_upstream_attempts_total"]
        self._retries = m["govledger_gateway_retries_total"]
        self._fallbacks = m["govledger_gateway_fallbacks_total"]
        self._refusals = m["govledger_gateway_refusals_total"]
        self._tenant_calls = m["govledger_gateway_tenant_calls_total"]
        self._tenant_cost = m["govledger_gateway_tenant_cost_nanousd_total"]
        self._emit = m["govledger_lineage_emit_duration_seconds"].histogram()
        self._series: dict[CallKind, CallSeries] = {}

    def call_done(self, call: CallRecord, record: LineageRecord, emit_s: float) -> None:
        """One call answered and recorded (`emit_s`: the lineage publish's time)."""
        self.recorded(call.target, record, emit_s)

    def recorded(self, target: Target | None, record: LineageRecord, emit_s: float) -> None:
        """`call_done` from the record and the call's target (None: none was chosen)."""
        if not self.enabled:
            return
        model = self.model(target.model if target is not None else record.model_requested)
        code = ERROR_CODES(record.error_code) if record.error_code else ""
        # Every value of the key is bounded: so is this cache.
        key = (record.api, model, self.provider(record.provider), record.http_status, code)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._call_series(key, record.decision)
        calls, duration, ttft, overhead, refusals = series
        calls.inc()
        duration.observe(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            ttft.observe(record.ttft_ms / 1000)
        overhead.observe(record.gateway_overhead_ms / 1000)
        self._emit.observe(emit_s)
        if refusals is not None:
            refusals.inc()
        tenant = self.tenant(record.tenant_id)
        self._tenant_calls.child(tenant).inc()
        if record.cost_nanousd:
            self._tenant_cost.child(tenant).inc(record.cost_nanousd)
        before: tuple[str, str] | None = None
        for attempt in record.attempts:
            provider = self.provider(attempt.provider)
            outcome = "ok" if attempt.error_class is None else attempt.error_class
            self._attempts.child(provider, ATTEMPT_OUTCOMES(outcome)).inc()
            here = (attempt.provider, attempt.model)
            if before == here:
                self._retries.child(provider).inc()
            elif before is not None:
                self._fallbacks.child(self.provider(before[0]), provider).inc()
            before = here

    def _call_series(self, key: CallKind, decision: str) -> CallSeries:
        """The instruments one kind of call moves (made once per kind)."""
        route, model, provider, status, code = key
        refused = decision == "rejected" or code == errors.CIRCUIT_OPEN.code
        return (
            self._calls.counter(route, model, provider, str(status), code),
            self._duration.histogram(route, model, provider),
            self._ttft.histogram(route, model, provider),
            self._overhead.histogram(route),
            self._refusals.counter(REFUSAL_REASONS.get(code, "invalid")) if refused else None,
        )

    def watch_routing(
        self, breakers: BreakerBoard, targets: Iterable[Target], in_flight: Callable[[], int]
    ) -> None:
        """Read every catalogue target's breaker, and the calls waiting on an upstream,
        at each scrape."""
        by_name = {f"{t.provider}/{t.upstream_model}": t for t in targets}
        states = self.metrics["govledger_gateway_breaker_state"]
        waiting = self.metrics["govledger_gateway_calls_in_flight"].gauge()

        def refresh() -> None:
            now = now_ms()
            for name, target in by_name.items():
                states.gauge(name).set(BREAKER_STATES[breakers.state(target, now)])
            waiting.set(in_flight())

        self.metrics.on_scrape(refresh)

    def watch_admission(self, admission: Admission) -> None:
        """Read the admission limit, calls in flight, loop lag and refusals at each scrape."""
        m = self.metrics
        limit = m["govledger_gateway_admission_limit"].gauge()
        in_flight = m["govledger_gateway_admission_in_flight"].gauge()
        lag = m["govledger_gateway_loop_lag_seconds"].gauge()
        refusals = m["govledger_gateway_admission_refusals_total"].counter()
        counted = {"refused": 0}

        def refresh() -> None:
            limit.set(int(admission.limit))
            in_flight.set(admission.in_flight)
            lag.set(admission.last_lag_s)
            if (more := admission.refused - counted["refused"]) > 0:
                refusals.inc(more)
                counted["refused"] = admission.refused

        self.metrics.on_scrape(refresh)

    def watch_lineage(self, publisher: OutboxPublisher) -> None:
        """Read the lineage outbox at each scrape: depth, oldest age, resends."""
        depth = self.metrics["govledger_lineage_outbox_depth"].gauge()
        oldest = self.metrics["govledger_lineage_outbox_oldest_age_seconds"].gauge()
        resends = self.metrics["govledger_lineage_resends_total"].counter()
        counted = {"resent": 0}

        def refresh() -> None:
            outboxes = (publisher.outbox, *publisher.adopted.values())
            depth.set(sum(o.unconfirmed for o in outboxes))
            oldest.set(max((o.oldest_age_s() for o in outboxes), default=0.0))
            if (more := publisher.resent - counted["resent"]) > 0:
                resends.inc(more)
                counted["resent"] = publisher.resent

        self.metrics.on_scrape(refresh)


class Routed(Protocol):
    """What the gateway's metrics read of the gateway (gateway.pipeline.Gateway)."""

    settings: GatewaySettings
    catalogue: dict[str, Target]
    groups: dict[str, Any]
    providers: dict[str, Any]
    breakers: BreakerBoard
    upstream_in_flight: int
    admission: Admission


def gateway_metrics(gateway: Routed) -> GatewayMetrics:
    """A gateway's instruments: models as its catalogue and model groups name them, its
    providers; its breakers and calls in flight read at each scrape."""
    metrics = GatewayMetrics(
        gateway.settings,
        models=[*gateway.catalogue, *gateway.groups],
        providers=gateway.providers,
    )
    metrics.watch_routing(
        gateway.breakers, gateway.catalogue.values(), lambda: gateway.upstream_in_flight
    )
    metrics.watch_admission(gateway.admission)
    return metrics
