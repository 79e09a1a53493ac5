"""What the store shows after the demo's traffic: polled from the query API, within a
bound, until every expected effect is there."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gateway.providers.sim import FLAKY_MODEL
from govledger.demo.run import Run, say
from govledger.demo.scenario import POLL_S, RESEARCH, TEAMS
from streams.wallets.logic import month_start_ms, team_wallet_id

# The store normally shows everything within a couple of seconds; the bound is for a
# loaded machine, and a run that hits it says which effect never arrived.
STORE_WAIT_S = 60.0


@dataclass
class Seen:
    """The effects of one run as ClickHouse has them."""

    calls: list[dict[str, Any]]
    guardrails: list[dict[str, Any]]
    failover: list[dict[str, Any]]
    circuit: list[dict[str, Any]]
    quota: list[dict[str, Any]]
    escalation: dict[str, Any] | None
    wallets: list[dict[str, Any]]
    lineage_by_wallet: dict[str, int]
    funded_by_wallet: dict[str, int]

    @property
    def recorded_calls(self) -> int:
        """Lineage records of the run's keys."""
        return sum(int(row["calls"]) for row in self.calls)


def look(run: Run) -> Seen:
    """Every query the report needs, once."""
    keys = ",".join(run.key_ids)  # key ids are key_<hex>: no comma in them
    calls = run.rows(
        "SELECT team_id AS team, model_requested AS requested, "
        "if(http_status = 200, concat(provider, '/', model_selected), '-') AS served, "
        "count() AS calls, countIf(http_status = 200) AS ok, "
        "countIf(decision = 'rejected') AS refused, sum(cost_nanousd) AS cost "
        "FROM lineage WHERE tenant_id = {tenant:String} "
        "AND has(splitByChar(',', {keys:String}), key_id) "
        "GROUP BY team, requested, served "
        "ORDER BY team, requested, served",
        tenant=run.tenant,
        keys=keys,
    )
    guardrails = run.rows(
        "SELECT team_id AS team, tupleElement(g, 1) AS step, tupleElement(g, 2) AS action, "
        "count() AS calls FROM lineage ARRAY JOIN guardrails_triggered AS g "
        "WHERE tenant_id = {tenant:String} AND has(splitByChar(',', {keys:String}), key_id) "
        "GROUP BY team, step, action ORDER BY team, step, action",
        tenant=run.tenant,
        keys=keys,
    )
    failover = run.rows(
        "SELECT selection_reason AS reason, concat(provider, '/', model_selected) AS served, "
        "count() AS calls, "
        "sum(arrayCount(a -> tupleElement(a, 2) = {model:String} "
        "AND tupleElement(a, 3) >= 500, attempts)) AS failed, "
        "sum(arrayCount(a -> tupleElement(a, 5) = 'breaker_open', attempts)) AS skipped "
        "FROM lineage WHERE tenant_id = {tenant:String} "
        "AND has(splitByChar(',', {keys:String}), key_id) "
        "AND model_requested = {model:String} "
        "GROUP BY reason, served ORDER BY reason, served",
        tenant=run.tenant,
        keys=keys,
        model=FLAKY_MODEL,
    )
    # Breakers are shared by every tenant (targets are), so their alerts carry none.
    circuit = run.rows(
        "SELECT event_type, before, after, toUnixTimestamp64Milli(coalesce(at, occurred_at)) "
        "AS at_ms FROM alerts WHERE event_type IN ('circuit.opened', 'circuit.closed') "
        "AND provider = 'sim' AND model = {model:String} "
        "AND occurred_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC') ORDER BY at_ms",
        model=FLAKY_MODEL,
        since=run.started_ms,
    )
    quota = run.rows(
        "SELECT threshold_percent AS threshold, count() AS alerts, "
        "min(spent_nanousd) AS spent, max(budget_nanousd) AS budget, "
        "toUnixTimestamp64Milli(min(occurred_at)) AS at_ms FROM alerts "
        "WHERE event_type = 'quota.threshold' AND tenant_id = {tenant:String} "
        "AND wallet_id = {wallet:String} "
        "AND period_start_at = fromUnixTimestamp64Milli({period:Int64}, 'UTC') "
        "GROUP BY threshold ORDER BY threshold",
        tenant=run.tenant,
        wallet=team_wallet_id(run.tenant, RESEARCH.name),
        period=month_start_ms(run.started_ms),
    )
    escalations = run.report("/v1/escalations", tenant=run.tenant, status="all")["data"]
    escalation = next((e for e in escalations if e["escalation_id"] == run.escalation_id), None)
    wallets = run.report("/v1/wallets/balance", tenant=run.tenant)["wallets"]
    lineage_by_wallet = {
        str(row["wallet_id"]): int(row["spent"])
        for row in run.rows(
            "SELECT wallet_id, sum(cost_nanousd) AS spent FROM lineage "
            "WHERE tenant_id = {tenant:String} GROUP BY wallet_id",
            tenant=run.tenant,
        )
    }
    funded_by_wallet = {
        str(row["wallet_id"]): int(row["funded"])
        for row in run.rows(
            "SELECT wallet_id, sum(amount_nanousd) AS funded FROM control_events "
            "WHERE tenant_id = {tenant:String} AND event_type = 'wallet.funded' "
            "GROUP BY wallet_id",
            tenant=run.tenant,
        )
    }
    return Seen(
        calls,
        guardrails,
        failover,
        circuit,
        quota,
        escalation,
        wallets,
        lineage_by_wallet,
        funded_by_wallet,
    )


def missing(run: Run, seen: Seen) -> list[str]:
    """What the store does not (yet) show of what the demo did."""
    problems: list[str] = []
    if seen.recorded_calls != run.calls:
        problems.append(f"lineage holds {seen.recorded_calls} of the {run.calls} calls made")
    if not any(g["step"] == "pii-detector" and g["action"] == "redact" for g in seen.guardrails):
        problems.append("no redaction (pii-detector, redact) in lineage")
    reasons = {str(row["reason"]) for row in seen.failover}
    if not reasons & {"fallback", "breaker_open"}:
        problems.append(f"no failover away from {FLAKY_MODEL} in lineage")
    kinds = [str(row["event_type"]) for row in seen.circuit]
    if "circuit.opened" not in kinds:
        problems.append(f"no circuit.opened alert for sim/{FLAKY_MODEL}")
    if run.recovery_tried and "circuit.closed" not in kinds:
        problems.append(f"no circuit.closed alert for sim/{FLAKY_MODEL}")
    alerted = {int(row["threshold"]): int(row["alerts"]) for row in seen.quota}
    for threshold in (80, 100):
        count = alerted.get(threshold, 0)
        if count != 1:
            problems.append(f"{count} quota alerts at {threshold} % for research (expected 1)")
    if seen.escalation is None:
        problems.append(f"escalation {run.escalation_id or '(none opened)'} not in the store")
    for wallet_id in (team_wallet_id(run.tenant, team.name) for team in TEAMS):
        problem = unreconciled(seen, wallet_id)
        if problem:
            problems.append(problem)
    return problems


def unreconciled(seen: Seen, wallet_id: str) -> str | None:
    published = next((w for w in seen.wallets if w["wallet_id"] == wallet_id), None)
    if published is None:
        return f"no published balance for {wallet_id}"
    settled = seen.lineage_by_wallet.get(wallet_id, 0)
    funded = seen.funded_by_wallet.get(wallet_id, 0)
    if int(published["spent_nanousd"]) != settled:
        return f"{wallet_id} spent {published['spent_nanousd']} but lineage sums to {settled}"
    if int(published["funded_nanousd"]) != funded:
        return f"{wallet_id} funded {published['funded_nanousd']} but the admin log has {funded}"
    if int(published["balance_nanousd"]) != funded - settled:
        return f"{wallet_id} balance {published['balance_nanousd']} is not funded minus spent"
    return None


def wait_for_store(run: Run) -> tuple[Seen, list[str]]:
    """Poll the store until it shows every effect, or the bound passes."""
    say(
        "store",
        f"waiting for ClickHouse to show the {run.calls} calls, the alerts and the "
        f"balances (up to {STORE_WAIT_S:.0f} s)",
    )
    deadline = time.monotonic() + STORE_WAIT_S
    while True:
        seen = look(run)
        problems = missing(run, seen)
        if not problems or time.monotonic() >= deadline:
            return seen, problems
        time.sleep(POLL_S)
