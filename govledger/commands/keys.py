"""`govledger keys create | list | revoke`: gateway keys, through the admin API."""

from __future__ import annotations

import argparse
from typing import Any

from govledger.cli_support import admin_client, request, when
from schemas.money import format_usd
from schemas.records import ROLES
from schemas.settings import GatewaySettings, load


def cmd_keys(args: argparse.Namespace) -> int:
    """keys create | list | revoke."""
    settings = load(GatewaySettings)
    with admin_client(settings) as client:
        if args.keys_command == "create":
            body: dict[str, Any] = {
                "team": args.team,
                "role": args.role,
                "models": args.models or "",
                "providers": args.providers or "",
                "regions": args.regions or "",
                "policy_pack": args.policy or "",
                "requests_per_minute": args.rpm,
                "tokens_per_minute": args.tpm,
            }
            if args.tenant:  # else the admin's own tenant, or the default one
                body["tenant"] = args.tenant
            if args.name:
                body["name"] = args.name
            if args.expires_in:
                body["expires_in"] = args.expires_in
            print(request(client, "POST", "/v1/admin/keys", json=body)["key"])
        elif args.keys_command == "list":
            print(
                "key_id\tprefix\ttenant\tteam\tname\tstatus\texpires_at\tlast_used_at\tremaining_usd"
            )
            for key in request(client, "GET", "/v1/admin/keys")["data"]:
                print(
                    f"{key['key_id']}\t{key['key_prefix']}\t{key['tenant']}\t{key['team']}\t"
                    f"{key['name']}\t{key['status']}\t{when(key['expires_at'])}\t"
                    f"{when(key['last_used_at'])}\t{format_usd(key['remaining_nanousd'])}"
                )
        else:
            request(
                client, "POST", f"/v1/admin/keys/{args.key_id}/revoke", json={"reason": args.reason}
            )
            print(f"revoked {args.key_id}")
    return 0


def add_parser(commands: Any) -> None:
    """`govledger keys`."""
    # `tokens`: the seed's name for the same commands (`kt tokens create`).
    keys = commands.add_parser(
        "keys", aliases=["tokens"], help="issue, list and revoke gateway keys (alias: tokens)"
    )
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="issue a key; prints the secret alone")
    create.add_argument("--team", required=True)
    create.add_argument("--tenant")
    create.add_argument("--name")
    create.add_argument("--models", help="comma-separated models the key may call (default all)")
    create.add_argument("--providers", help="comma-separated providers allowed (default all)")
    create.add_argument(
        "--regions", help="comma-separated regions the calls may be served in (default all)"
    )
    create.add_argument("--policy", help="policy pack applied to the key's calls")
    create.add_argument("--expires-in", help="lifetime such as 90d, 12h, 30m")
    create.add_argument("--rpm", type=int, default=0, help="requests per minute (0: unlimited)")
    create.add_argument("--tpm", type=int, default=0, help="tokens per minute (0: unlimited)")
    create.add_argument(
        "--role",
        default="developer",
        choices=ROLES,
        help="role for rbac policies; admin roles may use the admin API",
    )
    keys_commands.add_parser("list", help="list keys (prefix, team, status)")
    revoke = keys_commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    revoke.add_argument("--reason", default="revoked by admin")
    keys.set_defaults(func=cmd_keys)
