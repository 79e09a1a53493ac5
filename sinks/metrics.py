"""The store owner's Prometheus metrics (docs/metrics.md): the sink's rows, inserts, dead
letters and consumer lag, and the query API's requests. One registry for the process
(sink and query API share it), served by the query API at `/metrics`. Labels are
bounded: tables and topics are ours, routes are the app's declared ones (an unmatched
path is `other`), dead-letter reasons are a fixed set."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from schemas.dead_letter import dead_letter_reason
from schemas.metrics import OTHER, Metrics, MetricSpec

QUERY_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "govledger_query_requests_total",
        "counter",
        ("route", "status"),
        "Query API requests by declared route (`other`: no route matched) and HTTP status.",
    ),
    MetricSpec(
        "govledger_query_duration_seconds",
        "histogram",
        ("route",),
        "Query API request latency by declared route.",
    ),
)
SINK_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "govledger_sink_rows_total",
        "counter",
        ("table",),
        "Rows the sink inserted, by store table.",
    ),
    MetricSpec(
        "govledger_sink_insert_duration_seconds",
        "histogram",
        ("table",),
        "Time to store one insert, waits for an unwell store included.",
    ),
    MetricSpec(
        "govledger_dead_letters_total",
        "counter",
        ("service", "reason"),
        "Records dead-lettered, by service (sink, streams) and reason "
        "(forged, unauthenticated, undecodable, store_refused).",
    ),
    MetricSpec(
        "govledger_consumer_lag",
        "gauge",
        ("service", "topic", "partition"),
        "Records on the broker not yet processed and committed, per assigned partition.",
    ),
    MetricSpec(
        "govledger_sink_commit_failures_total",
        "counter",
        (),
        "Offset commits the broker refused after the rows were stored (a redelivery dedupes).",
    ),
)

SERVICE = "sink"


class SinkMetrics:
    """The store owner's instruments."""

    def __init__(self, enabled: bool) -> None:
        self.metrics = Metrics((*QUERY_SPECS, *SINK_SPECS), enabled=enabled)
        self.enabled = enabled
        m = self.metrics
        self._requests = m["govledger_query_requests_total"]
        self._request_duration = m["govledger_query_duration_seconds"]
        self._rows = m["govledger_sink_rows_total"]
        self._insert_duration = m["govledger_sink_insert_duration_seconds"]
        self._dead_letters = m["govledger_dead_letters_total"]
        self._commit_failures = m["govledger_sink_commit_failures_total"].counter()
        self._lag = m["govledger_consumer_lag"]
        self.clock = time.perf_counter

    def inserted(self, table: str, rows: int, started: float) -> None:
        """One insert stored (`started`: `clock()` before it)."""
        if self.enabled:
            self._insert_duration.histogram(table).observe(self.clock() - started)
            self._rows.counter(table).inc(rows)

    def dead_lettered(self, error: str) -> None:
        """One record dead-lettered with this error."""
        self._dead_letters.counter(SERVICE, dead_letter_reason(error)).inc()

    def middleware(self) -> Any:
        """The query API's middleware counting and timing each request by route."""

        @web.middleware
        async def measured(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                route = _route_of(request)
                self._requests.counter(route, str(status)).inc()
                self._request_duration.histogram(route).observe(time.perf_counter() - started)

        return measured

    def watch_writer(self, writer: Any) -> None:
        """Read the sink's consumer lag (end offset minus committed, per assigned
        partition) and its refused commits at each scrape (`sinks.writer.SinkWriter`)."""
        counted = {"commit_failures": 0}

        def refresh() -> None:
            self._lag.clear()  # revoked partitions leave the page
            consumer = writer._consumer  # the writer's own consumer
            if consumer is not None:
                committed = writer._committed  # offsets it committed
                for tp in consumer.assignment():
                    end, done = consumer.highwater(tp), committed.get(tp)
                    if end is None or done is None:
                        continue  # nothing fetched or committed by this process yet
                    lag = max(end - done, 0)
                    self._lag.gauge(SERVICE, tp.topic, str(tp.partition)).set(lag)
            failures = writer.stats.commit_failures
            if (more := failures - counted["commit_failures"]) > 0:
                self._commit_failures.inc(more)
                counted["commit_failures"] = failures

        self.metrics.on_scrape(refresh)


def _route_of(request: web.Request) -> str:
    """The declared route that served the request (its pattern), `other` when none did."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else OTHER
