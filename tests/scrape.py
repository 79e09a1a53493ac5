"""Reading a `/metrics` page as Prometheus does (its own parser): samples by name and
labels, so a test can compare two scrapes."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, /, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def moved(before: Samples, after: Samples, name: str, /, **labels: str) -> float:
    """How much the samples of `name` with these labels grew between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)


def families(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    """The sample names present."""
    return {name for name, _ in samples}
