"""Every panel of the Prometheus dashboards under compose/grafana/dashboards/ queries only
what the services export: each PromQL expression is tokenized and parsed for its
selectors (a metric name, its label matchers, a range), and each metric it selects is a
series some service's registry exports (docs/metrics.md), with labels that metric has.

The parser knows PromQL's shape, not all of it: tokens (strings, numbers, durations,
names, operators), balanced brackets, function calls, aggregations with `by`/`without`,
selectors with matchers and ranges; enough to find every metric name an expression reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from schemas.metrics import MetricSpec
from tests.unit.test_metrics_docs import SERVICES

DASHBOARDS = Path(__file__).resolve().parents[2] / "compose" / "grafana" / "dashboards"
PROMETHEUS_DASHBOARDS = ["gateway-pipeline.json"]

TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<duration>\[(?:\d+(?:ms|[smhdwy]))+\]|\[\$\w+\])
    |(?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)
    |(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
    |(?P<matcher_op>=~|!~|!=)
    |(?P<op>==|<=|>=|[-+*/%^<>=,])
    |(?P<open>[({])
    |(?P<close>[)}])""",
    re.VERBOSE,
)
FUNCTIONS = {
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "abs",
    "clamp_min",
    "clamp_max",
    "max_over_time",
    "min_over_time",
    "avg_over_time",
    "delta",
    "deriv",
    "time",
    "vector",
    "scalar",
    "label_replace",
}
AGGREGATIONS = {"sum", "max", "min", "avg", "count", "topk", "bottomk", "quantile"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
KEYWORDS |= {"and", "or", "unless"}


@dataclass(frozen=True)
class Selector:
    """A metric an expression reads, with the label names its matchers use."""

    metric: str
    labels: frozenset[str]


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) of every token; an unknown character fails."""
    found: list[tuple[str, str]] = []
    at = 0
    while at < len(expr):
        match = TOKEN.match(expr, at)
        assert match is not None, f"cannot read {expr[at:]!r} in {expr!r}"
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            found.append((kind, match.group()))
        at = match.end()
    return found


def selectors(expr: str) -> list[Selector]:
    """The metric selectors of an expression, checking its brackets balance, that every
    name is a function, an aggregation, a keyword or a metric, and every call has `(`."""
    toks = tokens(expr)
    depth: list[str] = []
    found: list[Selector] = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        after = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if kind == "open":
            depth.append(text)
        elif kind == "close":
            assert depth and {"(": ")", "{": "}"}[depth.pop()] == text, f"unbalanced: {expr}"
        elif kind == "name" and text in KEYWORDS:
            if text in {"by", "without", "on", "ignoring"}:
                i = _skip_label_list(toks, i + 1, expr)
                continue
        elif kind == "name" and (text in FUNCTIONS or text in AGGREGATIONS):
            nxt = after
            if nxt[1] in {"by", "without"}:  # sum by (le) (...)
                i = _skip_label_list(toks, i + 2, expr)
                assert toks[i][1] == "(", f"{text} without its argument: {expr}"
                continue
            assert nxt[1] == "(", f"{text} is not called: {expr}"
        elif kind == "name":
            assert after[1] != "(", f"unknown function {text}: {expr}"
            if after[1] == "{":  # its matchers, read whole: on past the `}`
                i, labels = _matchers(toks, i + 2, expr)
                found.append(Selector(text, frozenset(labels)))
                continue
            found.append(Selector(text, frozenset()))
        i += 1
    assert not depth, f"unclosed bracket: {expr}"
    return found


def _skip_label_list(toks: list[tuple[str, str]], at: int, expr: str) -> int:
    """Past `(label, label)` after by/without/on/ignoring."""
    assert toks[at][1] == "(", f"label list expected: {expr}"
    at += 1
    while toks[at][1] != ")":
        assert toks[at][0] == "name" or toks[at][1] == ",", f"bad label list: {expr}"
        at += 1
    return at + 1


def _matchers(toks: list[tuple[str, str]], at: int, expr: str) -> tuple[int, set[str]]:
    """The label names of `{a="x", b!~"y"}` from just past `{`; the index past `}`."""
    labels: set[str] = set()
    while toks[at][1] != "}":
        name, op, literal = toks[at], toks[at + 1], toks[at + 2]
        assert name[0] == "name" and literal[0] == "string", f"bad matcher: {expr}"
        assert op[0] == "matcher_op" or op[1] == "=", f"bad matcher: {expr}"
        labels.add(name[1])
        at += 3
        if toks[at][1] == ",":
            at += 1
    return at + 1, labels


def exported() -> dict[str, MetricSpec]:
    """Every series name a service exports, with its metric's declaration."""
    names: dict[str, MetricSpec] = {}
    for _, specs in SERVICES:
        for spec in specs:
            if spec.kind == "histogram":
                for suffix in ("_bucket", "_sum", "_count"):
                    names[spec.name + suffix] = spec
            else:
                names[spec.name] = spec
    return names


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside rows too."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_the_parser_finds_selectors_and_refuses_what_is_not_promql() -> None:
    expr = 'sum by (le) (rate(a_bucket{route="/", code!~"4.."}[5m])) / on (le) b + 1e9'
    assert selectors(expr) == [
        Selector("a_bucket", frozenset({"route", "code"})),
        Selector("b", frozenset()),
    ]
    for broken in ("sum(rate(a[5m])", "nosuch_fn(a)", "a{b=1}", "rate(a[5 m])"):
        with pytest.raises(AssertionError):
            selectors(broken)


@pytest.mark.parametrize("name", PROMETHEUS_DASHBOARDS)
def test_every_panel_reads_only_exported_metrics_and_their_labels(name: str) -> None:
    dashboard = json.loads((DASHBOARDS / name).read_text())
    names = exported()
    read: set[str] = set()
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for selector in selectors(target["expr"]):
                assert selector.metric in names, f"{panel['title']}: {selector.metric}"
                spec = names[selector.metric]
                allowed = set(spec.labels) | ({"le"} if spec.kind == "histogram" else set())
                assert selector.labels <= allowed, f"{panel['title']}: {selector}"
                read.add(spec.name)
    # The dashboard shows every metric the services export, not a handful.
    assert read == {spec.name for spec in names.values()}
