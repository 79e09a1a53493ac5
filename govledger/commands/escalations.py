"""`govledger escalations list | claim | reassign | resolve`: the review queues, through the
admin API."""

from __future__ import annotations

import argparse
from typing import Any

from govledger.cli_support import admin_client, request, when
from schemas.escalation_listing import DEFAULT_ESCALATION_STATUS, ESCALATION_STATUSES
from schemas.settings import GatewaySettings, load


def _age(ms: int) -> str:
    """A duration for people: 42s, 5m07s, 3h02m, 2d04h."""
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86_400:
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    return f"{seconds // 86_400}d{seconds // 3600 % 24:02d}h"


def cmd_escalations(args: argparse.Namespace) -> int:
    """escalations list | claim | reassign | resolve."""
    settings = load(GatewaySettings)
    with admin_client(settings) as client:
        if args.escalations_command == "list":
            params = {"status": args.status}
            if args.queue:
                params["queue"] = args.queue
            rows = request(client, "GET", "/v1/admin/escalations", params=params)["data"]
            print("escalation_id\ttenant\tteam\tqueue\tpriority\tstatus\tclaimed_by\tage\tdeadline")
            for row in rows:
                deadline = when(row["deadline_at_ms"]) + (" OVERDUE" if row["overdue"] else "")
                print(
                    f"{row['escalation_id']}\t{row['tenant_id']}\t{row['team_id']}\t{row['queue']}\t"
                    f"{row['priority']}\t{row['status']}\t{row['claimed_by'] or '-'}\t"
                    f"{_age(row['age_ms'])}\t{deadline}"
                )
            return 0
        path = f"/v1/admin/escalations/{args.escalation_id}/{args.escalations_command}"
        if args.escalations_command == "claim":
            data = request(client, "POST", path)
            print(f"{args.escalation_id}: claimed by {data['claimed_by']}")
        elif args.escalations_command == "reassign":
            body = {"queue": args.queue, "reviewer": args.reviewer or ""}
            data = request(client, "POST", path, json=body)
            owner = f", claimed by {data['claimed_by']}" if data["claimed_by"] else ""
            print(f"{args.escalation_id}: reassigned to {data['queue']}{owner}")
        else:
            request(client, "POST", path, json={"decision": args.decision, "note": args.note})
            print(f"{args.escalation_id}: {args.decision}")
    return 0


def add_parser(commands: Any) -> None:
    """`govledger escalations`."""
    escalations = commands.add_parser("escalations", help="list, claim, reassign and decide")
    escalation_commands = escalations.add_subparsers(dest="escalations_command", required=True)
    listing = escalation_commands.add_parser("list", help="escalations, most urgent first")
    listing.add_argument("--status", default=DEFAULT_ESCALATION_STATUS, choices=ESCALATION_STATUSES)
    listing.add_argument("--queue", help="only this queue (team:T or central)")
    claim = escalation_commands.add_parser("claim", help="take an escalation for review")
    claim.add_argument("escalation_id")
    reassign = escalation_commands.add_parser("reassign", help="move an escalation to a queue")
    reassign.add_argument("escalation_id")
    reassign.add_argument("--queue", required=True)
    reassign.add_argument("--reviewer", help="claim it for this reviewer too")
    resolve = escalation_commands.add_parser("resolve", help="approve or reject an escalation")
    resolve.add_argument("escalation_id")
    resolve.add_argument("--decision", required=True, choices=["approve", "reject"])
    resolve.add_argument("--note", default="")
    escalations.set_defaults(func=cmd_escalations)
