"""The `govledger` command line."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from schemas.escalation_listing import DEFAULT_ESCALATION_STATUS, ESCALATION_STATUSES
from schemas.money import format_usd
from schemas.settings import (
    CommonSettings,
    GatewaySettings,
    RuntimeSettings,
    SettingsError,
    SinkSettings,
    StreamSettings,
    describe,
    load,
)

ADMIN_TIMEOUT_S = 30.0


class CliError(Exception):
    """A failure to report on stderr with exit code 1."""


def _admin(settings: CommonSettings) -> httpx.Client:
    from govledger.admin_token import resolve_admin_token

    try:
        token = resolve_admin_token(settings, create=False)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from exc
    return httpx.Client(
        base_url=settings.gateway_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=ADMIN_TIMEOUT_S,
    )


def _checked(response: httpx.Response) -> Any:
    try:
        data = response.json()
    except ValueError:
        data = {}
    if response.status_code >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise CliError(
            f"{response.status_code} {error.get('code', '')}: {error.get('message', response.text)}"
        )
    return data


def _request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        return _checked(client.request(method, path, **kwargs))
    except httpx.HTTPError as exc:
        raise CliError(
            f"cannot reach the gateway at {client.base_url}: {exc} (is `govledger up` running?)"
        ) from exc


def _when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "never"
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat(timespec="seconds")


def cmd_up(args: argparse.Namespace) -> int:
    """Run the whole stack until Ctrl-C or SIGTERM."""
    from govledger.logs import configure
    from govledger.runtime import Stack

    settings = load(RuntimeSettings)
    configure(settings.log_level, "runtime")
    stack = Stack(settings)
    stopping = False

    def request_stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print("starting govledger (broker, store, processors, gateway)…", file=sys.stderr)
    stack.start()
    print(
        f"govledger is up\n  gateway  {settings.gateway_url}/v1\n"
        f"  query    {settings.query_url}/?query=SELECT+1\n"
        f"  data     {settings.data_path}\n  logs     {stack.log_dir}\n"
        "Ctrl-C stops everything.",
        flush=True,
    )
    try:
        while not stopping:
            dead = stack.dead_child()
            if dead is not None:
                print(
                    f"{dead.name} exited with {dead.process.returncode}; stopping "
                    f"(see {stack.log_dir}/{dead.name}.log)",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.2)
    finally:
        print("stopping…", file=sys.stderr)
        stack.stop()
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    """Run one service in the foreground."""
    from govledger import services
    from govledger.logs import configure

    if args.command == "gateway":
        gateway_settings = load(GatewaySettings)
        configure(gateway_settings.log_level, "gateway")
        services.run(services.gateway_main(gateway_settings))
    elif args.command == "sink":
        sink_settings = load(SinkSettings)
        configure(sink_settings.log_level, "sink")
        services.run(services.sink_main(sink_settings))
    else:
        stream_settings = load(StreamSettings)
        configure(stream_settings.log_level, "worker")
        services.worker_main(stream_settings)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """keys create | list | revoke."""
    settings = load(GatewaySettings)
    with _admin(settings) as client:
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
            print(_request(client, "POST", "/v1/admin/keys", json=body)["key"])
        elif args.keys_command == "list":
            print(
                "key_id\tprefix\ttenant\tteam\tname\tstatus\texpires_at\tlast_used_at\tremaining_usd"
            )
            for key in _request(client, "GET", "/v1/admin/keys")["data"]:
                print(
                    f"{key['key_id']}\t{key['key_prefix']}\t{key['tenant']}\t{key['team']}\t"
                    f"{key['name']}\t{key['status']}\t{_when(key['expires_at'])}\t"
                    f"{_when(key['last_used_at'])}\t{format_usd(key['remaining_nanousd'])}"
                )
        else:
            _request(
                client, "POST", f"/v1/admin/keys/{args.key_id}/revoke", json={"reason": args.reason}
            )
            print(f"revoked {args.key_id}")
    return 0


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
    with _admin(settings) as client:
        if args.wallets_command in ("allocate", "refund", "correct", "limit"):
            _wallet_change(client, args, tenant)
            return 0
        if args.wallets_command == "budget":
            body: dict[str, Any] = {"team": args.team, "tenant": tenant, "usd": args.usd}
            if args.thresholds:
                body["thresholds"] = args.thresholds
            data = _request(client, "POST", "/v1/admin/wallets/budget", json=body)
            thresholds = ",".join(str(t) for t in data["thresholds_percent"])
            print(
                f"budget of {data['wallet_id']} set to {data['budget_usd']} USD a month, "
                f"alerts at {thresholds} %"
            )
        elif args.wallets_command == "fund":
            data = _request(
                client,
                "POST",
                "/v1/admin/wallets/fund",
                json={**_wallet_body(args, tenant), "usd": args.usd, "memo": args.memo},
            )
            print(f"funded {data['wallet_id']} with {format_usd(data['amount_nanousd'])} USD")
        else:
            data = _request(
                client, "GET", "/v1/admin/wallets/balance", params=_wallet_body(args, tenant)
            )
            print(data["balance_usd"])
    return 0


def _wallet_change(client: httpx.Client, args: argparse.Namespace, tenant: str) -> None:
    """wallets allocate | refund | correct | limit: one admin call each."""
    body = {**_wallet_body(args, tenant), "usd": args.usd}
    command = args.wallets_command
    if command == "allocate":
        data = _request(
            client, "POST", "/v1/admin/wallets/allocate", json={**body, "memo": args.memo}
        )
        print(
            f"allocated {format_usd(data['amount_nanousd'])} USD from {data['from_wallet_id']} "
            f"to {data['to_wallet_id']} ({data['status']})"
        )
    elif command == "refund":
        body |= {"call_event_id": args.call, "reason": args.reason}
        data = _request(client, "POST", "/v1/admin/wallets/refund", json=body)
        print(
            f"refunded {format_usd(data['amount_nanousd'])} USD to {data['wallet_id']} "
            f"for call {data['call_event_id']}"
        )
    elif command == "correct":
        body |= {"entry_event_id": args.entry, "reason": args.reason}
        data = _request(client, "POST", "/v1/admin/wallets/correct", json=body)
        print(
            f"corrected {data['wallet_id']} by {format_usd(data['amount_nanousd'])} USD "
            f"({data['status']})"
        )
    else:
        data = _request(client, "POST", "/v1/admin/wallets/limit", json=body)
        print(f"overdraft limit of {data['wallet_id']} set to {data['overdraft_limit_usd']} USD")


def cmd_policy(args: argparse.Namespace) -> int:
    """policy lint | push | list | templates | baseline."""
    from gateway.policy.baseline import lint_against
    from gateway.policy.pack import template_names, template_source
    from govledger import policy_cli

    if args.policy_command == "baseline":
        return policy_cli.cmd_baseline(args)

    if args.policy_command == "templates":
        if args.name:
            try:
                print(template_source(args.name), end="")
            except KeyError as exc:
                raise CliError(
                    f"no template {args.name}; see `govledger policy templates`"
                ) from exc
        else:
            print("\n".join(template_names()))
        return 0
    if args.policy_command == "lint":
        failed = 0
        baseline = policy_cli.baseline_for_lint(args)
        for path in args.files:
            problems = lint_against(baseline, _read_text(path))
            for problem in problems:
                print(f"{path}:{problem.line}: {problem.message}", file=sys.stderr)
            failed += bool(problems)
            if not problems:
                print(f"{path}: ok")
        return 1 if failed else 0
    settings = load(GatewaySettings)
    with _admin(settings) as client:
        if args.policy_command == "list":
            print("tenant\tpack\tversion\tsteps")
            for pack in _request(client, "GET", "/v1/admin/policies")["data"]:
                steps = ",".join(pack["steps"])
                print(f"{pack['tenant']}\t{pack['pack']}\t{pack['version']}\t{steps}")
            return 0
        body: dict[str, Any] = {"source_yaml": _read_text(args.file)}
        if args.tenant:
            body["tenant"] = args.tenant
        data = _request(client, "POST", "/v1/admin/policies", json=body)
        if data["diff"]:
            print(data["diff"], end="" if data["diff"].endswith("\n") else "\n")
            print(f"published {data['pack']} v{data['version']} in {data['tenant']}")
        else:
            print(f"{data['pack']} v{data['version']} in {data['tenant']} is unchanged")
    return 0


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
    with _admin(settings) as client:
        if args.escalations_command == "list":
            params = {"status": args.status}
            if args.queue:
                params["queue"] = args.queue
            rows = _request(client, "GET", "/v1/admin/escalations", params=params)["data"]
            print("escalation_id\ttenant\tteam\tqueue\tpriority\tstatus\tclaimed_by\tage\tdeadline")
            for row in rows:
                deadline = _when(row["deadline_at_ms"]) + (" OVERDUE" if row["overdue"] else "")
                print(
                    f"{row['escalation_id']}\t{row['tenant_id']}\t{row['team_id']}\t{row['queue']}\t"
                    f"{row['priority']}\t{row['status']}\t{row['claimed_by'] or '-'}\t"
                    f"{_age(row['age_ms'])}\t{deadline}"
                )
            return 0
        path = f"/v1/admin/escalations/{args.escalation_id}/{args.escalations_command}"
        if args.escalations_command == "claim":
            data = _request(client, "POST", path)
            print(f"{args.escalation_id}: claimed by {data['claimed_by']}")
        elif args.escalations_command == "reassign":
            body = {"queue": args.queue, "reviewer": args.reviewer or ""}
            data = _request(client, "POST", path, json=body)
            owner = f", claimed by {data['claimed_by']}" if data["claimed_by"] else ""
            print(f"{args.escalation_id}: reassigned to {data['queue']}{owner}")
        else:
            _request(client, "POST", path, json={"decision": args.decision, "note": args.note})
            print(f"{args.escalation_id}: {args.decision}")
    return 0


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc


def cmd_sql(args: argparse.Namespace) -> int:
    """Run a read-only query against the store; TSV on stdout."""
    from govledger.admin_token import resolve_admin_token

    settings = load(SinkSettings)
    try:
        token = resolve_admin_token(settings, create=False)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from exc
    try:
        response = httpx.post(
            f"{settings.query_url}/",
            content=args.query.encode(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=ADMIN_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the query API at {settings.query_url}: {exc}") from exc
    if response.status_code >= 400:
        _checked(response)
    sys.stdout.write(response.text)
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    """Print every setting as a Markdown table."""
    print("| service | variable | default | meaning |\n|---|---|---|---|")
    for service, name, default, doc in describe():
        print(f"| {service} | `{name}` | `{default}` | {doc} |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog="govledger", description="Governance ledger for AI traffic."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "up", help="run the whole stack (embedded broker and store by default)"
    ).set_defaults(func=cmd_up)
    for name, text in (
        ("gateway", "run a gateway"),
        ("sink", "run the sink and query API"),
        ("worker", "run the stream processors"),
    ):
        commands.add_parser(name, help=text).set_defaults(func=cmd_service)

    keys = commands.add_parser("keys", help="issue, list and revoke gateway keys")
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
        choices=["viewer", "developer", "tenant-admin", "org-admin"],
        help="role for rbac policies; admin roles may use the admin API",
    )
    keys_commands.add_parser("list", help="list keys (prefix, team, status)")
    revoke = keys_commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    revoke.add_argument("--reason", default="revoked by admin")
    keys.set_defaults(func=cmd_keys)

    wallets = commands.add_parser(
        "wallets", help="fund, allocate, refund and correct wallets; read balances"
    )
    wallets_commands = wallets.add_subparsers(dest="wallets_command", required=True)

    def wallet_args(parser: argparse.ArgumentParser, *, team_required: bool = False) -> None:
        parser.add_argument(
            "--team", required=team_required, help="the team's wallet (else the org's)"
        )
        parser.add_argument("--key", help="a key's wallet (key_id), under --team")
        parser.add_argument("--tenant")

    fund = wallets_commands.add_parser("fund", help="credit the org's, a team's or a key's wallet")
    wallet_args(fund)
    fund.add_argument("--usd", required=True, help="exact amount, e.g. 25 or 0.125")
    fund.add_argument("--memo", default="")
    balance = wallets_commands.add_parser("balance", help="print a wallet's balance in USD")
    wallet_args(balance)
    allocate = wallets_commands.add_parser(
        "allocate", help="move money from the parent wallet: org → --team, team → --key"
    )
    wallet_args(allocate, team_required=True)
    allocate.add_argument("--usd", required=True, help="exact amount, e.g. 25 or 0.125")
    allocate.add_argument("--memo", default="")
    refund = wallets_commands.add_parser("refund", help="credit a call's charge back")
    wallet_args(refund)
    refund.add_argument("--call", required=True, help="event_id of the gateway.call refunded")
    refund.add_argument("--usd", required=True, help="exact amount credited back")
    refund.add_argument("--reason", default="")
    correct = wallets_commands.add_parser(
        "correct", help="add a signed correction entry (entries are never edited)"
    )
    wallet_args(correct)
    correct.add_argument("--entry", required=True, help="event_id of the entry corrected")
    correct.add_argument("--usd", required=True, help="signed amount; negative debits")
    correct.add_argument("--reason", required=True)
    limit = wallets_commands.add_parser(
        "limit", help="set how far below zero a wallet may go (0: not at all)"
    )
    wallet_args(limit)
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

    policy = commands.add_parser("policy", help="lint, publish and list policy packs")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    lint_parser = policy_commands.add_parser("lint", help="check packs; errors with line numbers")
    lint_parser.add_argument("files", nargs="+")
    from govledger import policy_cli

    policy_cli.add_lint_baseline_arguments(lint_parser)
    push = policy_commands.add_parser("push", help="publish a pack as its next version")
    push.add_argument("file")
    push.add_argument("--tenant")
    policy_commands.add_parser("list", help="published packs and their versions")
    templates = policy_commands.add_parser("templates", help="list templates, or print one")
    templates.add_argument("name", nargs="?")
    policy_cli.add_baseline_command(policy_commands)
    policy.set_defaults(func=cmd_policy)

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

    sql = commands.add_parser("sql", help="run a read-only SQL query; prints TSV")
    sql.add_argument("query")
    sql.set_defaults(func=cmd_sql)
    commands.add_parser("settings", help="print every setting").set_defaults(func=cmd_settings)

    from govledger import audit_verify

    audit = commands.add_parser("audit", help="audit the ledger")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="verify every producer's hash chain; exit 1 if tampered"
    )
    audit_verify.add_arguments(verify)
    verify.set_defaults(func=audit_verify.cmd_verify)
    verify_export = audit_commands.add_parser(
        "verify-export",
        help="check an export file against its rows' raw bytes (and its manifest); exit 1 "
        "if tampered",
    )
    audit_verify.add_export_arguments(verify_export)
    verify_export.set_defaults(func=audit_verify.cmd_verify_export)

    from govledger import replay_cli, root_cli

    root_cli.add_commands(commands, audit_commands)
    replay_cli.add_audit_commands(audit_commands)
    replay_cli.add_replay_command(commands)
    from govledger import export_cli

    export_cli.add_export_command(commands)
    from govledger.demo import add_demo_command

    add_demo_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except (CliError, SettingsError) as exc:
        print(f"govledger: {exc}", file=sys.stderr)
        return 1
