"""The worker's Prometheus metrics (docs/metrics.md), served on the Faust web port at
`/metrics`: consumer lag of the intake and of the Faust agents, dead letters, fold lag of
each processor, commit stalls, and the ledger's escalations, quota alerts and SLA
breaches. One registry per Faust app (`install`, called by `streams.app.create_app`);
agents reach it with `of(app)`, a disabled one when none was installed (unit tests).
Labels are bounded: topics, partitions and processors are ours, priorities are P1..P4,
thresholds the first few distinct percentages seen."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from schemas.dead_letter import dead_letter_reason
from schemas.metrics import CONTENT_TYPE, METRICS_PATH, OTHER, FirstSeen, Metrics, MetricSpec

SERVICE = "streams"
AGENTS_SERVICE = "streams-agents"
PRIORITIES = ("P1", "P2", "P3", "P4")
SLA_TARGETS = ("availability", "gateway_overhead_p99_ms", "ingestion_lag_ms")
THRESHOLD_LABELS_MAX = 20
_ATTRIBUTE = "_govledger_metrics"

STREAM_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "govledger_consumer_lag",
        "gauge",
        ("service", "topic", "partition"),
        "Records on the broker not yet processed and committed, per assigned partition "
        "(service: streams for the intake, streams-agents for the Faust agents).",
    ),
    MetricSpec(
        "govledger_dead_letters_total",
        "counter",
        ("service", "reason"),
        "Records dead-lettered, by the processor that refused them and reason.",
    ),
    MetricSpec(
        "govledger_processor_fold_lag_seconds",
        "gauge",
        ("processor",),
        "Age of the newest record a processor folded, when it folded it (from occurred_at).",
    ),
    MetricSpec(
        "govledger_commit_stalls_total",
        "counter",
        ("service",),
        "Partitions whose Faust commit position stalled (see streams/commit_watch.py).",
    ),
    MetricSpec(
        "govledger_escalations_open",
        "gauge",
        ("priority",),
        "Unresolved (open or claimed) escalations held by this worker, by priority.",
    ),
    MetricSpec(
        "govledger_escalations_oldest_age_seconds",
        "gauge",
        ("priority",),
        "Age of the oldest unresolved escalation by priority (0 when none).",
    ),
    MetricSpec(
        "govledger_quota_alerts_total",
        "counter",
        ("threshold",),
        "Quota threshold alerts published, by threshold percent (the first 20 distinct).",
    ),
    MetricSpec(
        "govledger_sla_breaches_total",
        "counter",
        ("priority",),
        "Escalations that missed their review deadline (SLA alerts), by priority.",
    ),
    MetricSpec(
        "govledger_sla_targets_missed_total",
        "counter",
        ("target",),
        "Minute windows that missed an SLA target (availability, gateway_overhead_p99_ms, "
        "ingestion_lag_ms), as sla.breached alerts.",
    ),
    MetricSpec(
        "govledger_sla_outbox_records",
        "gauge",
        (),
        "SLA windows and alerts sent or to send that the store has not confirmed yet.",
    ),
    MetricSpec(
        "govledger_sla_outbox_overflowed_total",
        "counter",
        (),
        "SLA records past GOVLEDGER_SLA_OUTBOX_MAX_BYTES: kept only until the broker's ack.",
    ),
)


class StreamMetrics:
    """The worker's instruments."""

    def __init__(self, enabled: bool) -> None:
        self.metrics = Metrics(STREAM_SPECS, enabled=enabled)
        self.enabled = enabled
        m = self.metrics
        self._lag = m["govledger_consumer_lag"]
        self._dead_letters = m["govledger_dead_letters_total"]
        self._fold_lag = m["govledger_processor_fold_lag_seconds"]
        self._stalls = m["govledger_commit_stalls_total"].counter(SERVICE)
        self._open = m["govledger_escalations_open"]
        self._oldest = m["govledger_escalations_oldest_age_seconds"]
        self._quota_alerts = m["govledger_quota_alerts_total"]
        self._breaches = m["govledger_sla_breaches_total"]
        self._targets_missed = m["govledger_sla_targets_missed_total"]
        self._sla_outbox = m["govledger_sla_outbox_records"].gauge()
        self._sla_overflowed = m["govledger_sla_outbox_overflowed_total"].counter()
        self._threshold = FirstSeen(THRESHOLD_LABELS_MAX)
        self._lag_readers: list[Callable[[], Iterable[tuple[str, str, int, int]]]] = []
        m.on_scrape(self._refresh_lag)

    def dead_lettered(self, service: str, error: str) -> None:
        """One record a processor dead-lettered (`service`: its consumer name)."""
        self._dead_letters.counter(service, dead_letter_reason(error)).inc()

    def folded(self, processor: str, newest_occurred_at_ms: int) -> None:
        """A processor folded a batch whose newest record occurred at this time."""
        if self.enabled:
            lag_s = max(time.time() * 1000 - newest_occurred_at_ms, 0) / 1000
            self._fold_lag.gauge(processor).set(lag_s)

    def commit_stalled(self) -> None:
        """A partition's commit position stalled."""
        self._stalls.inc()

    def quota_alert(self, threshold_percent: int) -> None:
        """A quota threshold alert was published."""
        self._quota_alerts.counter(self._threshold(str(threshold_percent))).inc()

    def sla_breached(self, priority: str) -> None:
        """An escalation missed its deadline (its alert was published)."""
        self._breaches.counter(priority if priority in PRIORITIES else OTHER).inc()

    def sla_target_missed(self, target: str) -> None:
        """A minute window missed an SLA target (its alert is being published)."""
        self._targets_missed.counter(target if target in SLA_TARGETS else OTHER).inc()

    def sla_outbox_waiting(self, records: int) -> None:
        """Records in the SLA outboxes the store has not confirmed."""
        self._sla_outbox.set(records)

    def sla_outbox_overflowed(self, records: int) -> None:
        """Records past the SLA outbox's bound, dropped on the broker's ack."""
        self._sla_overflowed.inc(records)

    def watch_lag(self, read: Callable[[], Iterable[tuple[str, str, int, int]]]) -> None:
        """Add a source of (service, topic, partition, lag) read at each scrape."""
        self._lag_readers.append(read)

    def watch_escalations(self, unresolved: Callable[[], Mapping[str, Any] | None]) -> None:
        """Read the unresolved escalations (`Escalation`s by id, or None before the queues
        are rebuilt) at each scrape: counts and oldest age per priority."""

        def refresh() -> None:
            held = unresolved()
            if held is None:
                return
            now_ms = time.time() * 1000
            counts = dict.fromkeys(PRIORITIES, 0)
            oldest = dict.fromkeys(PRIORITIES, now_ms)
            for escalation in held.values():
                priority = escalation.priority
                if priority in counts:
                    counts[priority] += 1
                    oldest[priority] = min(oldest[priority], escalation.opened_at)
            for priority in PRIORITIES:
                self._open.gauge(priority).set(counts[priority])
                self._oldest.gauge(priority).set(max(now_ms - oldest[priority], 0) / 1000)

        self.metrics.on_scrape(refresh)

    def _refresh_lag(self) -> None:
        self._lag.clear()  # revoked partitions leave the page
        for read in self._lag_readers:
            for service, topic, partition, lag in read():
                self._lag.gauge(service, topic, str(partition)).set(max(lag, 0))


def consumer_lag(
    service: str, consumer: Any = None, committed: Mapping[Any, int] | None = None
) -> Iterable[tuple[str, str, int, int]]:
    """(service, topic, partition, lag) of an aiokafka consumer's assigned partitions:
    the end offset it last fetched minus what it committed (partitions it has not both
    fetched and committed yet are left out)."""
    if consumer is None or committed is None:
        return
    for tp in consumer.assignment():
        end, done = consumer.highwater(tp), committed.get(tp)
        if end is not None and done is not None:
            yield service, tp.topic, tp.partition, end - done


def of(app: Any) -> StreamMetrics:
    """The app's metrics; a disabled set when none was installed (or no app)."""
    if app is None:
        return StreamMetrics(enabled=False)
    found = getattr(app, _ATTRIBUTE, None)
    if found is None:
        found = StreamMetrics(enabled=False)
        setattr(app, _ATTRIBUTE, found)
    assert isinstance(found, StreamMetrics)
    return found


def install(app: Any, enabled: bool) -> StreamMetrics:
    """Give the Faust app its registry, the Faust agents' lag, and (enabled) the
    `/metrics` page on its web port."""
    metrics = StreamMetrics(enabled)
    setattr(app, _ATTRIBUTE, metrics)
    if not enabled:
        return metrics

    def agents_lag() -> Iterable[tuple[str, str, int, int]]:
        # Faust's monitor keeps end and committed offsets of the agents' partitions.
        monitor = app.monitor
        ends, committed = monitor.tp_end_offsets, monitor.tp_committed_offsets
        try:
            assigned = app.consumer.assignment()
        except Exception:  # noqa: BLE001 - no consumer yet (starting): no lag to show
            return
        for tp in assigned:
            if tp in ends and tp in committed:
                yield AGENTS_SERVICE, tp.topic, tp.partition, ends[tp] - committed[tp]

    metrics.watch_lag(agents_lag)

    @app.page(METRICS_PATH)  # type: ignore[untyped-decorator]
    async def metrics_page(web: Any, _request: Any) -> Any:
        body = await metrics.metrics.exposition()
        return web.bytes(body, headers={"Content-Type": CONTENT_TYPE})

    return metrics
