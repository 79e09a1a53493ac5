"""Metrics' pure parts: label bounds (a caller cannot grow the series count), disabled
instruments, and the gauges read from state at each scrape (the lineage outbox, the
escalation queues, quota thresholds, dead-letter reasons)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from gateway.metrics import GatewayMetrics
from schemas.dead_letter import dead_letter_reason
from schemas.metrics import MAX_LABEL_CHARS, OTHER, Allowed, FirstSeen, Metrics, MetricSpec
from schemas.outbox import Outbox
from schemas.outbox_publisher import OutboxPublisher
from schemas.settings import GatewaySettings, load
from streams.metrics import StreamMetrics
from tests.scrape import parse, value
from tests.unit.test_outbox import PRODUCER, sealed_frames

COUNTER = MetricSpec("test_things_total", "counter", ("kind",), "Things.")


def scrape(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return parse(asyncio.run(metrics.exposition()).decode())


def test_allowed_lets_through_only_the_configured_values() -> None:
    model = Allowed(["sim-small", "gpt-4o"])
    assert [model(v) for v in ("sim-small", "gpt-4o", "gpt-4o ", "GPT-4O", "", None)] == [
        "sim-small",
        "gpt-4o",
        OTHER,
        OTHER,
        OTHER,
        OTHER,
    ]


def test_first_seen_keeps_the_first_values_up_to_its_limit() -> None:
    tenant = FirstSeen(2)
    assert [tenant(v) for v in ("acme", "globex", "initech", "acme", "globex")] == [
        "acme",
        "globex",
        OTHER,
        "acme",
        "globex",
    ]
    # Ten thousand hostile values later the label still has three values.
    labels = {tenant(f"tenant-{i}") for i in range(10_000)} | {"acme", "globex"}
    assert labels == {"acme", "globex", OTHER}


def test_first_seen_refuses_long_values_and_a_zero_limit() -> None:
    tenant = FirstSeen(5)
    assert tenant("x" * (MAX_LABEL_CHARS + 1)) == OTHER
    assert tenant("x" * MAX_LABEL_CHARS) == "x" * MAX_LABEL_CHARS
    assert tenant(OTHER) == OTHER
    assert FirstSeen(0)("acme") == OTHER


def test_registries_are_per_process_objects_that_do_not_collide() -> None:
    first, second = Metrics([COUNTER], enabled=True), Metrics([COUNTER], enabled=True)
    first["test_things_total"].counter("a").inc()
    second["test_things_total"].counter("a").inc(3)
    assert value(scrape(first), "test_things_total", kind="a") == 1
    assert value(scrape(second), "test_things_total", kind="a") == 3


def test_disabled_metrics_serve_no_route_and_record_nothing() -> None:
    off = Metrics([COUNTER], enabled=False)
    off["test_things_total"].counter("a").inc()
    assert off.route() == []
    assert scrape(off) == {}


def test_the_gateway_never_exports_a_model_or_tenant_it_was_not_configured_with() -> None:
    settings = load(GatewaySettings, environ={}, metrics_tenant_labels_max=1)
    metrics = GatewayMetrics(settings, models=["sim-small"], providers=["sim"])
    assert metrics.model("made-up-model") == OTHER
    assert metrics.provider("evil") == OTHER
    assert [metrics.tenant(t) for t in ("acme", "globex")] == ["acme", OTHER]


def test_the_outbox_gauges_read_depth_oldest_age_and_resends(tmp_path: Path) -> None:
    clock = [100.0]
    outbox = Outbox(tmp_path, PRODUCER, 1 << 20, clock=lambda: clock[0])
    frames = sealed_frames(3)
    publisher = SimpleNamespace(outbox=outbox, adopted={}, resent=0)
    settings = load(GatewaySettings, environ={})
    metrics = GatewayMetrics(settings, models=[], providers=[])
    metrics.watch_lineage(cast(OutboxPublisher, publisher))

    empty = scrape(metrics.metrics)
    assert value(empty, "govledger_lineage_outbox_depth") == 0
    assert value(empty, "govledger_lineage_outbox_oldest_age_seconds") == 0
    for seq, frame in frames[:2]:
        outbox.append(seq, frame)
    clock[0] = 130.0
    outbox.append(*frames[2])
    publisher.resent = 4
    held = scrape(metrics.metrics)
    assert value(held, "govledger_lineage_outbox_depth") == 3
    assert value(held, "govledger_lineage_outbox_oldest_age_seconds") == 30
    assert value(held, "govledger_lineage_resends_total") == 4
    outbox.confirm(frames[0][0], frames[1][0])  # the two oldest are stored
    publisher.resent = 5
    confirmed = scrape(metrics.metrics)
    assert value(confirmed, "govledger_lineage_outbox_depth") == 1
    assert value(confirmed, "govledger_lineage_outbox_oldest_age_seconds") == 0
    assert value(confirmed, "govledger_lineage_resends_total") == 5
    outbox.close()


def test_escalation_gauges_count_and_age_unresolved_by_priority() -> None:
    metrics = StreamMetrics(enabled=True)
    now_ms = time.time() * 1000
    held: dict[str, Any] | None = None
    metrics.watch_escalations(lambda: held)
    assert "govledger_escalations_open" not in {n for n, _ in scrape(metrics.metrics)}

    held = {
        "e1": SimpleNamespace(priority="P1", opened_at=now_ms - 600_000),
        "e2": SimpleNamespace(priority="P1", opened_at=now_ms - 60_000),
        "e3": SimpleNamespace(priority="P3", opened_at=now_ms - 1_000),
    }
    samples = scrape(metrics.metrics)
    assert value(samples, "govledger_escalations_open", priority="P1") == 2
    assert value(samples, "govledger_escalations_open", priority="P2") == 0
    assert value(samples, "govledger_escalations_open", priority="P3") == 1
    assert 600 <= value(samples, "govledger_escalations_oldest_age_seconds", priority="P1") < 610
    assert value(samples, "govledger_escalations_oldest_age_seconds", priority="P2") == 0


def test_quota_thresholds_and_priorities_are_bounded() -> None:
    metrics = StreamMetrics(enabled=True)
    for threshold in range(1, 101):
        metrics.quota_alert(threshold)
    metrics.sla_breached("P1")
    metrics.sla_breached("P9 injected")
    metrics.sla_target_missed("availability")
    metrics.sla_target_missed("made_up")
    samples = scrape(metrics.metrics)
    thresholds = {
        dict(labels)["threshold"]
        for name, labels in samples
        if name == "govledger_quota_alerts_total"
    }
    assert len(thresholds) == 21 and OTHER in thresholds
    assert value(samples, "govledger_quota_alerts_total") == 100
    assert value(samples, "govledger_sla_breaches_total", priority="P1") == 1
    assert value(samples, "govledger_sla_breaches_total", priority=OTHER) == 1
    missed = "govledger_sla_targets_missed_total"
    assert value(samples, missed, target="availability") == 1
    assert value(samples, missed, target=OTHER) == 1


def test_dead_letter_reasons_are_a_fixed_set() -> None:
    assert dead_letter_reason("forged: bad mac") == "forged"
    assert dead_letter_reason("unauthenticated: no auth header") == "unauthenticated"
    assert dead_letter_reason("store refused the record: type mismatch") == "store_refused"
    assert dead_letter_reason("not an Avro single-object frame (no C3 01)") == "undecodable"


def test_a_gauge_that_cannot_be_read_leaves_the_rest_of_the_page() -> None:
    metrics = Metrics([COUNTER, MetricSpec("test_depth", "gauge", (), "Depth.")], enabled=True)
    metrics["test_things_total"].counter("a").inc()

    def broken() -> None:
        raise RuntimeError("consumer stopped")

    metrics.on_scrape(broken)
    metrics.on_scrape(lambda: metrics["test_depth"].gauge().set(7))
    samples = scrape(metrics)
    assert value(samples, "test_things_total", kind="a") == 1
    assert value(samples, "test_depth") == 7
