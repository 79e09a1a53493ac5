"""The demo's closing report, from what the store shows."""

from __future__ import annotations

import sys
from collections.abc import Iterator

from gateway.providers.sim import FLAKY_MODEL
from govledger.demo.run import Run, ms_text
from govledger.demo.scenario import RESEARCH, TEAMS
from govledger.demo.store import Seen, unreconciled
from schemas.money import format_usd
from streams.wallets.logic import team_wallet_id


def _table(rows: list[list[str]]) -> Iterator[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        yield (
            "  "
            + "  ".join(
                cell.rjust(width) if i and cell[:1].isdigit() else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )


def print_report(run: Run, seen: Seen) -> None:
    """The run as the audit store has it."""
    out: list[str] = [
        "",
        f"report: tenant {run.tenant}, from ClickHouse via {run.settings.query_url}",
        "",
        "calls by team, model and provider",
    ]
    header = ["team", "requested", "served by", "calls", "ok", "refused", "usd"]
    out += _table(
        [header]
        + [
            [
                str(r["team"]),
                str(r["requested"]),
                str(r["served"]),
                str(r["calls"]),
                str(r["ok"]),
                str(r["refused"]),
                format_usd(int(r["cost"])),
            ]
            for r in seen.calls
        ]
    )
    spend: dict[str, int] = {}
    for r in seen.calls:
        spend[str(r["team"])] = spend.get(str(r["team"]), 0) + int(r["cost"])
    out += ["", "spend by team (USD, the sum of cost_nanousd)"]
    out += _table([[team, format_usd(usd)] for team, usd in sorted(spend.items())])
    out += ["", "guardrails (lineage guardrails_triggered)"]
    out += _table(
        [["team", "step", "action", "calls"]]
        + [
            [str(g["team"]), str(g["step"]), str(g["action"]), str(g["calls"])]
            for g in seen.guardrails
        ]
    )
    out += ["", f"breaker sim/{FLAKY_MODEL} (alerts, times UTC) and failovers (lineage)"]
    out += [
        f"  {ms_text(int(c['at_ms']))}  {c['event_type']}  {c['before']} -> {c['after']}"
        for c in seen.circuit
    ] or ["  no breaker alert"]
    out += _table(
        [["selection_reason", "served by", "calls", "failed attempts", "skipped (open)"]]
        + [
            [
                str(f["reason"]),
                str(f["served"]),
                str(f["calls"]),
                str(f["failed"]),
                str(f["skipped"]),
            ]
            for f in seen.failover
        ]
    )
    out += ["", f"quota alerts for {RESEARCH.name} (budget {format_usd(run.budget_nanousd)} USD)"]
    out += [
        f"  {int(q['threshold']):>3} %  {q['alerts']} alert(s) at {ms_text(int(q['at_ms']))}, "
        f"spend then {format_usd(int(q['spent']))} USD "
        f"({int(q['spent']) * 100 // max(int(q['budget']), 1)} %)"
        for q in seen.quota
    ] or ["  no quota alert"]
    out += ["", "escalation"]
    e = seen.escalation
    out.append(
        f"  {e['escalation_id']}  team {e['team_id']}  {e['priority']} {e['category']}  "
        f"reason {e['reason']}  status {e['status']}"
        if e is not None
        else "  none in the store"
    )
    out += ["", "wallets: published balance against the audit trail"]
    rows = [["wallet", "balance", "funded", "spent", "lineage sum", "check"]]
    for team in TEAMS:
        wallet_id = team_wallet_id(run.tenant, team.name)
        w = next((w for w in seen.wallets if w["wallet_id"] == wallet_id), None)
        if w is None:
            rows.append([wallet_id, "-", "-", "-", "-", "no balance published"])
            continue
        problem = unreconciled(seen, wallet_id)
        rows.append(
            [
                wallet_id,
                format_usd(int(w["balance_nanousd"])),
                format_usd(int(w["funded_nanousd"])),
                format_usd(int(w["spent_nanousd"])),
                format_usd(seen.lineage_by_wallet.get(wallet_id, 0)),
                "reconciled" if problem is None else "MISMATCH",
            ]
        )
    out += _table(rows)
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()
