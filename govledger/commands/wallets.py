"""`govledger wallets fund | balance | budget | allocate | refund | correct | limit`: the
wallet tree, through the admin API."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from govledger.cli_support import admin_client, request
from schemas.money import format_usd
from schemas.settings import GatewaySettings, load

if TYPE_CHECKING:
    import httpx


def _wallet_body(args: argparse.Namespace, tenant: str) -> dict[str, Any]:
    """The wallet a command names: the tenant's org wallet, a team's (--team) or a key's
    (--team and --key)."""
    body: dict[str, Any] = {"tenant": tenant}
    if getattr(args, "team", None):
        body["team"] = args.team
    if getattr(args, "key", None):
        body["key"] = args.key
    return body


def cmd_wallets(args: argparse.Namespace) -> int:
    """wallets fund | balance | budget | allocate | refund | correct | limit."""
    settings = load(GatewaySettings)
    tenant = args.tenant or settings.default_tenant
    with admin_client(settings) as client:
        if args.wallets_command in ("allocate", "refund", "correct", "limit"):
            _wallet_change(client, args, tenant)
            return 0
        if args.wallets_command == "budget":
            body: dict[str, Any] = {"team": args.team, "tenant": tenant, "usd": args.usd}
            if args.thresholds:
                body["thresholds"] = args.thresholds
            data = request(client, "POST", "/v1/admin/wallets/budget", json=body)
            thresholds = ",".join(str(t) for t in data["thresholds_percent"])
            print(
                f"budget of {data['wallet_id']} set to {data['budget_usd']} USD a month, "
                f"alerts at {thresholds} %"
            )
        elif args.wallets_command == "fund":
            data = request(
                client,
                "POST",
                "/v1/admin/wallets/fund",
                json={**_wallet_body(args, tenant), "usd": args.usd, "memo": args.memo},
            )
            print(f"funded {data['wallet_id']} with {format_usd(data['amount_nanousd'])} USD")
        else:
            data = request(
                client, "GET", "/v1/admin/wallets/balance", params=_wallet_body(args, tenant)
            )
            print(data["balance_usd"])
    return 0


def _wallet_change(client: httpx.Client, args: argparse.Namespace, tenant: str) -> None:
    """wallets allocate | refund | correct | limit: one admin call each."""
    body = {**_wallet_body(args, tenant), "usd": args.usd}
    command = args.wallets_command
    if command == "allocate":
        data = request(
            client, "POST", "/v1/admin/wallets/allocate", json={**body, "memo": args.memo}
        )
        print(
            f"allocated {format_usd(data['amount_nanousd'])} USD from {data['from_wallet_id']} "
            f"to {data['to_wallet_id']} ({data['status']})"
        )
    elif command == "refund":
        body |= {"call_event_id": args.call, "reason": args.reason}
        data = request(client, "POST", "/v1/admin/wallets/refund", json=body)
        print(
            f"refunded {format_usd(data['amount_nanousd'])} USD to {data['wallet_id']} "
            f"for call {data['call_event_id']}"
        )
    elif command == "correct":
        body |= {"entry_event_id": args.entry, "reason": args.reason}
        data = request(client, "POST", "/v1/admin/wallets/correct", json=body)
        print(
            f"corrected {data['wallet_id']} by {format_usd(data['amount_nanousd'])} USD "
            f"({data['status']})"
        )
    else:
        data = request(client, "POST", "/v1/admin/wallets/limit", json=body)
        print(f"overdraft limit of {data['wallet_id']} set to {data['overdraft_limit_usd']} USD")


def _wallet_args(parser: argparse.ArgumentParser, *, team_required: bool = False) -> None:
    parser.add_argument("--team", required=team_required, help="the team's wallet (else the org's)")
    parser.add_argument("--key", help="a key's wallet (key_id), under --team")
    parser.add_argument("--tenant")


def add_parser(commands: Any) -> None:
    """`govledger wallets`."""
    wallets = commands.add_parser(
        "wallets", help="fund, allocate, refund and correct wallets; read balances"
    )
    wallets_commands = wallets.add_subparsers(dest="wallets_command", required=True)
    fund = wallets_commands.add_parser("fund", help="credit the org's, a team's or a key's wallet")
    _wallet_args(fund)
    fund.add_argument("--usd", required=True, help="exact amount, e.g. 25 or 0.125")
    fund.add_argument("--memo", default="")
    balance = wallets_commands.add_parser("balance", help="print a wallet's balance in USD")
    _wallet_args(balance)
    allocate = wallets_commands.add_parser(
        "allocate", help="move money from the parent wallet: org → --team, team → --key"
    )
    _wallet_args(allocate, team_required=True)
    allocate.add_argument("--usd", required=True, help="exact amount, e.g. 25 or 0.125")
    allocate.add_argument("--memo", default="")
    refund = wallets_commands.add_parser("refund", help="credit a call's charge back")
    _wallet_args(refund)
    refund.add_argument("--call", required=True, help="event_id of the gateway.call refunded")
    refund.add_argument("--usd", required=True, help="exact amount credited back")
    refund.add_argument("--reason", default="")
    correct = wallets_commands.add_parser(
        "correct", help="add a signed correction entry (entries are never edited)"
    )
    _wallet_args(correct)
    correct.add_argument("--entry", required=True, help="event_id of the entry corrected")
    correct.add_argument("--usd", required=True, help="signed amount; negative debits")
    correct.add_argument("--reason", required=True)
    limit = wallets_commands.add_parser(
        "limit", help="set how far below zero a wallet may go (0: not at all)"
    )
    _wallet_args(limit)
    limit.add_argument("--usd", required=True, help="overdraft limit, e.g. 5")
    budget = wallets_commands.add_parser(
        "budget", help="set a team's monthly budget and alert thresholds (0 removes it)"
    )
    budget.add_argument("--team", required=True)
    budget.add_argument("--tenant")
    budget.add_argument("--usd", required=True, help="exact monthly amount, e.g. 500 or 0.25")
    budget.add_argument(
        "--thresholds", help="comma-separated percentages that alert (default 50,80,100)"
    )
    wallets.set_defaults(func=cmd_wallets)
