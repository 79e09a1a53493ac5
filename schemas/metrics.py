"""Prometheus metrics, shared by every service: one registry per process (never the
client's global one, so several apps in one test process do not collide), the metric
declarations each service exports (`MetricSpec`, listed in docs/metrics.md by
`metrics_table`), the `/metrics` aiohttp handler, and label values bounded so a hostile or
busy caller cannot grow the series count (`Allowed`, `FirstSeen`).

Disabled (GOVLEDGER_METRICS_ENABLED=0), a service gets no-op instruments and no route:
recording costs one no-op method call. Instruments are asyncio-only: the services touch
them from their event loop, so caching labelled children in plain dicts needs no lock.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import prometheus_client
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = structlog.get_logger(__name__)

OTHER = "other"
"""The label value of everything a bound does not let through."""
MAX_LABEL_CHARS = 64
"""Longest label value kept as is (tenant ids are short); longer counts as `other`."""
METRICS_PATH = "/metrics"
# The text format every Prometheus (2.x and 3.x) reads; our names need no escaping.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Latency buckets (seconds) from 1 ms to 2 min: gateway overhead sits in the first ones,
# model calls in the last ones.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)

# `_created` series double the count for nothing a dashboard reads.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric a service exports: its name, type, label names and meaning."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    doc: str
    buckets: tuple[float, ...] = LATENCY_BUCKETS_S


class CounterLike(Protocol):
    """What recording code needs of a counter (or its no-op)."""

    def inc(self, amount: float = 1) -> None: ...


class GaugeLike(Protocol):
    """What recording code needs of a gauge (or its no-op)."""

    def set(self, value: float) -> None: ...


class HistogramLike(Protocol):
    """What recording code needs of a histogram (or its no-op)."""

    def observe(self, amount: float) -> None: ...


class _Noop:
    """Every instrument, doing nothing: metrics switched off."""

    def inc(self, amount: float = 1) -> None:
        return None

    def set(self, value: float) -> None:
        return None

    def observe(self, amount: float) -> None:
        return None


NOOP = _Noop()


class Family:
    """A declared metric: its labelled children, made once per label values and kept (the
    values are bounded, so the cache is too)."""

    def __init__(self, spec: MetricSpec, metric: Any) -> None:
        self.spec = spec
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def child(self, *values: str) -> Any:
        """The instrument for these label values (in the spec's order)."""
        found = self._children.get(values)
        if found is None:
            if self._metric is None:
                found = NOOP
            elif self.spec.labels:
                found = self._metric.labels(*values)
            else:
                found = self._metric
            self._children[values] = found
        return found

    def counter(self, *values: str) -> CounterLike:
        """The counter child for these label values."""
        child: CounterLike = self.child(*values)
        return child

    def gauge(self, *values: str) -> GaugeLike:
        """The gauge child for these label values."""
        child: GaugeLike = self.child(*values)
        return child

    def histogram(self, *values: str) -> HistogramLike:
        """The histogram child for these label values."""
        child: HistogramLike = self.child(*values)
        return child

    def clear(self) -> None:
        """Forget every labelled series (a gauge re-read whole at each scrape)."""
        self._children.clear()
        if self._metric is not None and self.spec.labels:
            self._metric.clear()


Refresh = Callable[[], Awaitable[None] | None]


class Metrics:
    """One process's registry of the declared metrics, with what to read at each scrape
    (gauges of state other objects keep: queue depths, breaker states, consumer lag)."""

    def __init__(self, specs: Iterable[MetricSpec], *, enabled: bool) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=True)
        self.families: dict[str, Family] = {}
        self._refreshers: list[Refresh] = []
        for spec in specs:
            self.add(spec)

    def add(self, spec: MetricSpec) -> Family:
        """Declare one more metric (once per name)."""
        assert spec.name not in self.families, f"{spec.name} declared twice"
        metric: Any = None
        if self.enabled:
            metric = _instrument(spec, self.registry)
        family = Family(spec, metric)
        self.families[spec.name] = family
        return family

    def __getitem__(self, name: str) -> Family:
        return self.families[name]

    def on_scrape(self, refresh: Refresh) -> None:
        """Run `refresh` (sync or async) before each scrape, to set gauges from state."""
        if self.enabled:
            self._refreshers.append(refresh)

    async def exposition(self) -> bytes:
        """The registry in Prometheus' text format, gauges refreshed first."""
        for refresh in self._refreshers:
            try:
                done = refresh()
                if inspect.isawaitable(done):
                    await done
            except Exception as exc:  # noqa: BLE001 - one unreadable gauge keeps the page up
                log.warning("metrics gauge not refreshed", error=repr(exc))
        return prometheus_client.generate_latest(self.registry)

    async def handler(self, request: web.Request) -> web.Response:
        """`GET /metrics`."""
        body = await self.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    def route(self) -> list[web.RouteDef]:
        """The `/metrics` route, or none when metrics are off."""
        return [web.get(METRICS_PATH, self.handler)] if self.enabled else []


def _instrument(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    labels = list(spec.labels)
    if spec.kind == "counter":
        return Counter(spec.name, spec.doc, labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.doc, labels, registry=registry)
    return Histogram(spec.name, spec.doc, labels, registry=registry, buckets=spec.buckets)


class Allowed:
    """A label bounded to values known from configuration (catalogue models, providers,
    error codes); anything else is `other`."""

    def __init__(self, values: Iterable[str]) -> None:
        self._values = frozenset(values)

    def __call__(self, value: str | None) -> str:
        if value is not None and value in self._values:
            return value
        return OTHER


class FirstSeen:
    """A label bounded by count: the first `limit` distinct values get their own series
    (tenants, thresholds); later ones, and any value over MAX_LABEL_CHARS, are `other`."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 0)
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit or len(value) > MAX_LABEL_CHARS or value == OTHER:
            return OTHER
        self._seen.add(value)
        return value


def metrics_table(services: Sequence[tuple[str, Sequence[MetricSpec]]]) -> str:
    """The Markdown table of docs/metrics.md: one row per metric a service exports."""
    rows = [
        "| service | metric | type | labels | meaning |",
        "|---|---|---|---|---|",
    ]
    for service, specs in services:
        for spec in specs:
            labels = ", ".join(f"`{label}`" for label in spec.labels) or "—"
            rows.append(f"| {service} | `{spec.name}` | {spec.kind} | {labels} | {spec.doc} |")
    return "\n".join(rows) + "\n"
