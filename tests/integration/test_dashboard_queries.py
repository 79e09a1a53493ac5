"""Every ClickHouse query of the Grafana dashboards (compose/grafana/dashboards/) runs on the
store: a migrated chDB store with a known workload, each panel's SQL after Grafana's
ClickHouse data source would have expanded its macros, for every tenant and for one. The
spend panels give the workload's figures. chDB allows one engine per process: this module
opens its own and closes it at the end (about 1.5 s)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sinks.store import Store

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).resolve().parents[2] / "compose" / "grafana" / "dashboards"
CLICKHOUSE = "grafana-clickhouse-datasource"
NOW = datetime.now(UTC).replace(microsecond=0)
FROM_S = int(NOW.timestamp()) - 86_400
TO_S = int(NOW.timestamp()) + 60
INTERVAL_S = 300
FROM_DAY = datetime.fromtimestamp(FROM_S, UTC).date().isoformat()
TO_DAY = datetime.fromtimestamp(TO_S, UTC).date().isoformat()


def _type(datasource: Any) -> str | None:
    return datasource.get("type") if isinstance(datasource, dict) else None


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries() -> list[tuple[str, str]]:
    """(where, SQL) of every ClickHouse query: panel targets and template variables (the
    other boards' Prometheus queries are tested with the metrics)."""
    found: list[tuple[str, str]] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        found.extend(
            (f"{path.name} variable {variable['name']}", variable["query"])
            for variable in board.get("templating", {}).get("list", [])
            if _type(variable.get("datasource")) == CLICKHOUSE
        )
        found.extend(
            (f"{path.name} panel {panel['title']!r}", target["rawSql"])
            for panel in _panels(board.get("panels", []))
            for target in panel.get("targets", [])
            if _type(target.get("datasource") or panel.get("datasource")) == CLICKHOUSE
        )
    return found


QUERIES = _queries()


def _call(sql: str, name: str) -> tuple[str, list[str], int, int]:
    """The first `$__name(...)` in sql: its text, its arguments, start and end."""
    start = sql.index(f"$__{name}(")
    depth, at, args, begun = 0, start + len(name) + 3, [], start + len(name) + 4
    for at in range(start + len(name) + 3, len(sql)):
        char = sql[at]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                break
        elif char == "," and depth == 1:
            args.append(sql[begun:at].strip())
            begun = at + 1
    args.append(sql[begun:at].strip())
    return sql[start : at + 1], args, start, at + 1


def render(sql: str, tenants: list[str] | None) -> str:
    """The SQL as the ClickHouse data source sends it (its README's macro table): the
    panel's time range, a 5 min interval, and `tenants` chosen (None: All)."""
    chosen = ",".join(f"'{t}'" for t in tenants or [])
    sql = sql.replace("${tenant:singlequote}", chosen)
    while "$__conditionalAll(" in sql:
        _, (condition, _variable), start, end = _call(sql, "conditionalAll")
        sql = sql[:start] + (condition if tenants is not None else "1=1") + sql[end:]
    expansions: dict[str, Callable[[str], str]] = {
        "timeFilter": lambda c: f"{c} >= toDateTime({FROM_S}) AND {c} <= toDateTime({TO_S})",
        "dateFilter": lambda c: f"{c} >= toDate('{FROM_DAY}') AND {c} <= toDate('{TO_DAY}')",
        "timeInterval": lambda c: (
            f"toStartOfInterval(toDateTime({c}), INTERVAL {INTERVAL_S} second)"
        ),
    }
    for name, expand in expansions.items():
        while f"$__{name}(" in sql:
            _, (column,), start, end = _call(sql, name)
            sql = sql[:start] + expand(column) + sql[end:]
    sql = sql.replace("$__fromTime", f"toDateTime({FROM_S})").replace(
        "$__toTime", f"toDateTime({TO_S})"
    )
    assert "$" not in sql, f"a macro or variable this test does not expand: {sql}"
    return sql


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("dashboards") / "chdb"
    store = Store(f"chdb://{path}")
    store.migrate()
    _workload(store)
    yield store
    store.close()


ENVELOPE = "event_id, event_type, occurred_at, tenant_id, producer_id, seq, record_hash, raw"


def _envelope(event_type: str, seconds_ago: int, tenant: str = "acme") -> str:
    return (
        # From NOW, not the engine's now(): the module may run minutes after NOW was taken
        # (a busy test process), and the panels' window is NOW's.
        f"generateUUIDv7(), '{event_type}', toDateTime64({int(NOW.timestamp())}, 3) - "
        f"{seconds_ago}, '{tenant}', 'p', 0, 'h', ''"
    )


def _workload(store: Store) -> None:
    """acme: 3 calls (team a on openai, team b on anthropic, one refused on a budget) with
    guardrails, a budget and a balance, a refund, two escalations (one resolved) and
    alerts; beta: a call, so that a tenant's panels leave it out."""
    calls = [
        # tenant, team, model, provider, cost, decision, error, guardrails
        ("acme", "a", "gpt-4o", "openai", 2_000_000_000, "allowed", "NULL", "[('pii', 'redact')]"),
        ("acme", "b", "claude", "anthropic", 500_000_000, "allowed", "NULL", "[]"),
        ("acme", "b", "claude", "", 0, "rejected", "'budget_exceeded'", "[('jail', 'block')]"),
        ("beta", "c", "gpt-4o", "openai", 7_000_000_000, "allowed", "NULL", "[]"),
    ]
    for i, (tenant, team, model, provider, cost, decision, error, guards) in enumerate(calls):
        store.command(
            f"INSERT INTO lineage ({ENVELOPE}, team_id, key_id, wallet_id, model_requested, "
            "model_selected, provider, decision, error_code, cost_nanousd, http_status, "
            "guardrails_triggered, attempts, policies_applied) VALUES "
            f"({_envelope('gateway.call', 60 * (i + 1), tenant)}, '{team}', 'k', 'w-{team}', "
            f"'{model}', '{model if provider else ''}', '{provider}', '{decision}', {error}, "
            f"{cost}, {403 if error != 'NULL' else 200}, {guards}, [], [])"
        )
    store.command(
        f"INSERT INTO control_events ({ENVELOPE}, wallet_id, team_id, budget_nanousd) VALUES "
        f"({_envelope('wallet.budget_set', 600)}, 'w-a', 'a', 4000000000)"
    )
    store.command(
        f"INSERT INTO wallet_state ({ENVELOPE}, wallet_id, team_id, balance_nanousd, "
        "spent_nanousd, period_spent_nanousd, entry_count, revision) VALUES "
        f"({_envelope('wallet.balance', 50)}, 'w-a', 'a', 8000000000, 2000000000, "
        "2000000000, 2, 2)"
    )
    for escalation, priority in (("esc-1", "P1"), ("esc-2", "P3")):
        store.command(
            f"INSERT INTO escalation_events ({ENVELOPE}, escalation_id, team_id, priority, "
            f"category) VALUES ({_envelope('escalation.opened', 300)}, '{escalation}', 'b', "
            f"'{priority}', 'fraud')"
        )
    store.command(
        f"INSERT INTO control_events ({ENVELOPE}, wallet_id, team_id, amount_nanousd, "
        "call_event_id, refunded_by, reason) VALUES "
        f"({_envelope('wallet.refunded', 45)}, 'w-a', 'a', 250000000, 'call-1', 'ops', 'dup')"
    )
    store.command(
        f"INSERT INTO control_events ({ENVELOPE}, escalation_id, decision) VALUES "
        f"({_envelope('escalation.resolved', 100)}, 'esc-2', 'approve')"
    )
    store.command(
        f"INSERT INTO alerts ({ENVELOPE}, wallet_id, team_id, threshold_percent, "
        "spent_nanousd, budget_nanousd) VALUES "
        f"({_envelope('quota.threshold', 40)}, 'w-a', 'a', 50, 2000000000, 4000000000)"
    )
    store.command(
        f"INSERT INTO alerts ({ENVELOPE}, provider, model, metric, observed, target) VALUES "
        f"({_envelope('sla.breached', 30)}, 'openai', 'gpt-4o', 'latency_p99_ms', 900, 500)"
    )
    store.command(
        f"INSERT INTO alerts ({ENVELOPE}, escalation_id, queue, priority) VALUES "
        f"({_envelope('escalation.sla_breached', 20)}, 'esc-1', 'central', 'P1')"
    )


def _rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in store.client.query(sql).result_rows]


def test_the_dashboards_query_clickhouse() -> None:
    assert len(QUERIES) >= 15, QUERIES  # the spend and governance board at least


@pytest.mark.parametrize("tenants", [None, ["acme"], ["nobody"]], ids=["all", "acme", "none"])
def test_every_panels_sql_runs_on_the_store(store: Store, tenants: list[str] | None) -> None:
    for where, sql in QUERIES:
        try:
            rows = _rows(store, render(sql, tenants))
        except Exception as exc:  # name the panel whose SQL failed
            pytest.fail(f"{where}: {exc}")
        if tenants != ["nobody"]:
            assert rows, f"{where} found nothing in the workload"


def _panel(title: str) -> str:
    (sql,) = [sql for where, sql in QUERIES if where.endswith(f"panel {title!r}")]
    return sql


def test_the_panels_give_the_workloads_figures(store: Store) -> None:
    acme = ["acme"]
    assert _rows(store, render(_panel("Spend in range"), acme)) == [(2.5,)]
    assert _rows(store, render(_panel("Spend in range"), None)) == [(9.5,)]
    assert _rows(store, render(_panel("Calls in range"), acme)) == [(3,)]
    assert _rows(store, render(_panel("Refused calls in range"), acme)) == [(1,)]
    assert _rows(store, render(_panel("Open escalations"), acme)) == [(1,)]
    assert _rows(store, render(_panel("Open escalations by priority"), acme)) == [("P1", 1)]
    assert _rows(store, render(_panel("Budget use this period"), acme)) == [("acme / w-a", 50.0)]
    by_provider = _rows(store, render(_panel("Spend by provider"), acme))
    totals: dict[str, float] = {}
    for _time, provider, usd in by_provider:
        totals[provider] = totals.get(provider, 0.0) + usd
    assert totals == {"openai": 2.0, "anthropic": 0.5, "(none: refused)": 0.0}
    assert sorted(_rows(store, render(_panel("Refusals by reason and team"), acme))) == [
        ("budget_exceeded", "b", 1)
    ]
    guardrails = _rows(store, render(_panel("Guardrail triggers by name"), acme))
    assert sorted((name, action, n) for name, action, n, _teams in guardrails) == [
        ("jail", "block", 1),
        ("pii", "redact", 1),
    ]
    refunds = _rows(store, render(_panel("Refunds and corrections"), acme))
    assert [(kind, usd, of) for _t, _tenant, _w, kind, usd, of, _by, _why in refunds] == [
        ("refund", 0.25, "call-1")
    ]
    breaches = _rows(store, render(_panel("SLA breaches"), acme))
    assert sorted(kind for kind, *_ in breaches) == ["escalation.sla_breached", "sla.breached"]
    daily = _rows(store, render(_panel("Spend by team and model (daily rollup)"), None))
    assert sum(row[-1] for row in daily) == 9.5


def test_the_macro_expansion_fails_on_what_it_does_not_know() -> None:
    with pytest.raises(AssertionError, match="does not expand"):
        render("SELECT 1 WHERE $__timeFilter_ms(t) AND $__unknown", None)
    assert re.search(r"toStartOfInterval\(toDateTime\(x\)", render("$__timeInterval(x)", None))
