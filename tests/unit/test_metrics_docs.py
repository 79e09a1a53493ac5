"""docs/metrics.md lists every metric each service exports, with its labels, exactly as
the code declares them (schemas.metrics.metrics_table over each service's specs), and
each service's registry exports exactly its declared metrics."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.metrics import GATEWAY_SPECS, GatewayMetrics
from schemas.metrics import MetricSpec, metrics_table
from schemas.settings import GatewaySettings, load
from sinks.metrics import QUERY_SPECS, SINK_SPECS, SinkMetrics
from streams.metrics import STREAM_SPECS, StreamMetrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
SERVICES: list[tuple[str, tuple[MetricSpec, ...]]] = [
    ("gateway", GATEWAY_SPECS),
    ("query API and sink", (*QUERY_SPECS, *SINK_SPECS)),
    ("worker", STREAM_SPECS),
]


def exported_names(registry: CollectorRegistry) -> set[str]:
    """The metric names a registry exports (counters with their `_total`)."""
    return {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in registry.collect()
    }


def registries() -> dict[str, CollectorRegistry]:
    """Each service's registry, as its process builds it."""
    settings = load(GatewaySettings, environ={})
    gateway = GatewayMetrics(settings, models=["sim-small"], providers=["sim"])
    return {
        "gateway": gateway.metrics.registry,
        "query API and sink": SinkMetrics(enabled=True).metrics.registry,
        "worker": StreamMetrics(enabled=True).metrics.registry,
    }


def all_exported() -> set[str]:
    """Every metric name some service exports."""
    return {name for registry in registries().values() for name in exported_names(registry)}


def test_docs_list_every_metric_with_its_labels() -> None:
    expected = metrics_table(SERVICES)
    assert expected in DOC.read_text(), "regenerate docs/metrics.md's table:\n" + expected


def test_each_registry_exports_exactly_its_declared_metrics() -> None:
    built = registries()
    for service, specs in SERVICES:
        assert exported_names(built[service]) == {spec.name for spec in specs}, service


def test_no_metric_is_labelled_by_key_or_user() -> None:
    for _, specs in SERVICES:
        for spec in specs:
            assert not {"key", "key_id", "user", "user_id", "trace_id"} & set(spec.labels)
