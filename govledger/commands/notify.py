"""`govledger notify add | list | remove | test`: where alerts and escalations are
delivered (webhooks: CloudEvents, Slack or PagerDuty), through the admin API."""

from __future__ import annotations

import argparse
from typing import Any

from govledger.cli_support import admin_client, request, when
from schemas.notify_events import FORMATS, ROUTE_EVENTS
from schemas.settings import GatewaySettings, load


def cmd_notify(args: argparse.Namespace) -> int:
    """notify add | list | remove | test."""
    settings = load(GatewaySettings)
    with admin_client(settings) as client:
        if args.notify_command == "add":
            body: dict[str, Any] = {
                "events": [e for group in args.on for e in group.split(",") if e],
                "url": args.webhook,
                "secret": args.secret,
                "format": args.format,
            }
            if args.org:
                body["scope"] = "org"
            elif args.tenant:
                body["tenant"] = args.tenant
            route = request(client, "POST", "/v1/admin/notify/routes", json=body)
            events = ",".join(route["events"])
            print(f"route {route['id']}: {events} -> {route['url']} ({route['format']})")
            return 0
        if args.notify_command == "list":
            params = {"tenant": args.tenant} if args.tenant else {}
            rows = request(client, "GET", "/v1/admin/notify/routes", params=params)["data"]
            print("id\tscope\ttenant\tevents\tformat\turl\tadded_at\tadded_by")
            for row in rows:
                events = ",".join(row["events"])
                print(
                    f"{row['id']}\t{row['scope']}\t{row['tenant_id'] or '-'}\t{events}\t"
                    f"{row['format']}\t{row['url']}\t{when(row['added_at_ms'])}\t{row['added_by']}"
                )
            return 0
        path = f"/v1/admin/notify/routes/{args.route_id}"
        if args.notify_command == "remove":
            request(client, "DELETE", path)
            print(f"route {args.route_id}: removed")
            return 0
        answer = request(client, "POST", f"{path}/test")
        if answer["delivered"]:
            print(
                f"route {args.route_id}: delivered (HTTP {answer['http_status']}, "
                f"{answer['latency_ms']:.0f} ms, webhook-id {answer['webhook_id']})"
            )
            return 0
        print(f"route {args.route_id}: not delivered: {answer['error'] or answer['http_status']}")
        return 1


def add_parser(commands: Any) -> None:
    """`govledger notify`."""
    notify = commands.add_parser("notify", help="deliver alerts and escalations to webhooks")
    notify_commands = notify.add_subparsers(dest="notify_command", required=True)
    add = notify_commands.add_parser("add", help="add a route (its URL must be allowed)")
    add.add_argument(
        "--on",
        action="append",
        required=True,
        help=f"event(s) to deliver, repeatable or comma-separated: {', '.join(ROUTE_EVENTS)}",
    )
    add.add_argument("--webhook", required=True, help="destination URL (https)")
    add.add_argument(
        "--secret", required=True, help="HMAC signing secret (pagerduty: the routing key)"
    )
    add.add_argument("--format", default="cloudevents", choices=FORMATS)
    scope = add.add_mutually_exclusive_group()
    scope.add_argument("--tenant", help="the tenant's route (default: yours)")
    scope.add_argument("--org", action="store_true", help="an org route: every tenant's events")
    listing = notify_commands.add_parser("list", help="routes, without their secrets")
    listing.add_argument("--tenant", help="only this tenant's routes")
    remove = notify_commands.add_parser("remove", help="remove a route")
    remove.add_argument("route_id")
    test = notify_commands.add_parser("test", help="send a signed test notification now")
    test.add_argument("route_id")
    notify.set_defaults(func=cmd_notify)
