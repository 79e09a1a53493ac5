"""`govledger policy lint | push | list | templates | baseline`: policy packs, and the org
baseline `policy lint` checks packs against.

`policy lint` checks each pack against an org baseline as well as on its own:
`--baseline FILE` names a baseline document, `--remote` fetches the one in force from the
admin API (GOVLEDGER_GATEWAY_URL, admin token); without either, the built-in default
baseline that a fresh stack runs (`policy baseline show` prints the one in force). `policy
push` is checked by the admin API against the baseline in force, whatever lint used."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from govledger.cli_support import CliError, admin_client, read_text, request
from schemas.settings import GatewaySettings, load

if TYPE_CHECKING:  # the policy parser (yaml and the templates) loads when a command runs
    from gateway.policy.baseline import OrgBaseline

BASELINE_PATH = "/v1/admin/policies/baseline"


def add_lint_baseline_arguments(parser: argparse.ArgumentParser) -> None:
    """`policy lint`'s choice of baseline."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--baseline", metavar="FILE", help="check against this org baseline document"
    )
    source.add_argument(
        "--remote",
        action="store_true",
        help="check against the baseline in force, fetched from the admin API",
    )


def add_baseline_command(policy_commands: Any) -> None:
    """`policy baseline show | push FILE | lint FILE`."""
    baseline = policy_commands.add_parser(
        "baseline", help="show, publish (org admins) or lint the org baseline"
    )
    commands = baseline.add_subparsers(dest="baseline_command", required=True)
    commands.add_parser("show", help="print the baseline in force")
    push = commands.add_parser("push", help="publish a baseline as its next version")
    push.add_argument("file")
    lint = commands.add_parser("lint", help="check a baseline document; errors with lines")
    lint.add_argument("file")


def baseline_for_lint(args: argparse.Namespace) -> OrgBaseline:
    """The baseline `policy lint` checks packs against."""
    from gateway.policy.baseline import DEFAULT_BASELINE, parse_baseline
    from gateway.policy.pack import PackError

    if args.baseline:
        try:
            return parse_baseline(read_text(args.baseline))
        except PackError as exc:
            raise CliError(f"{args.baseline} is not a valid org baseline: {exc}") from exc
    if args.remote:
        with admin_client(load(GatewaySettings)) as client:
            source = request(client, "GET", BASELINE_PATH)["source_yaml"]
        try:
            return parse_baseline(source)
        except PackError as exc:
            raise CliError(f"the baseline in force does not parse here: {exc}") from exc
    return DEFAULT_BASELINE


def _describe(data: dict[str, Any]) -> str:
    version = "built-in default" if data["default"] else f"v{data['version']}"
    steps = ",".join(data["required_steps"]) or "none"
    return (
        f"org baseline {data['name']} ({version}): required steps {steps}; retention floor "
        f"{data['retention_floor_days'] or 'none'} days; role ceiling {data['role_ceiling']}"
    )


def cmd_baseline(args: argparse.Namespace) -> int:
    """policy baseline show | push | lint."""
    from gateway.policy.baseline import lint_baseline

    if args.baseline_command == "lint":
        problems = lint_baseline(read_text(args.file))
        for problem in problems:
            print(f"{args.file}:{problem.line}: {problem.message}", file=sys.stderr)
        if not problems:
            print(f"{args.file}: ok")
        return 1 if problems else 0
    with admin_client(load(GatewaySettings)) as client:
        if args.baseline_command == "show":
            data = request(client, "GET", BASELINE_PATH)
            print(data["source_yaml"], end="")
            print(_describe(data), file=sys.stderr)
            return 0
        data = request(client, "PUT", BASELINE_PATH, json={"source_yaml": read_text(args.file)})
    if data["diff"]:
        print(data["diff"], end="" if data["diff"].endswith("\n") else "\n")
    print(_describe(data))
    for below in data["packs_below_baseline"]:
        print(
            f"note: {below['tenant']}/{below['pack']} says less than the baseline, which holds "
            f"over it: {below['message']}"
        )
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    """policy lint | push | list | templates | baseline."""
    from gateway.policy.baseline import lint_against
    from gateway.policy.pack import pack_name_from_file, template_names, template_source

    if args.policy_command == "baseline":
        return cmd_baseline(args)
    if args.policy_command == "revert":
        from govledger.commands.config import revert

        return revert(args)

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
        baseline = baseline_for_lint(args)
        for path in args.files:
            problems = lint_against(baseline, read_text(path), pack_name_from_file(path))
            for problem in problems:
                print(f"{path}:{problem.line}: {problem.message}", file=sys.stderr)
            failed += bool(problems)
            if not problems:
                print(f"{path}: ok")
        return 1 if failed else 0
    settings = load(GatewaySettings)
    with admin_client(settings) as client:
        if args.policy_command == "list":
            print("tenant\tpack\tversion\tsteps")
            for pack in request(client, "GET", "/v1/admin/policies")["data"]:
                steps = ",".join(pack["steps"])
                print(f"{pack['tenant']}\t{pack['pack']}\t{pack['version']}\t{steps}")
            return 0
        body: dict[str, Any] = {"source_yaml": read_text(args.file)}
        file_name = pack_name_from_file(args.file)
        if file_name is not None:  # names the pack only if it has no name of its own
            body["name"] = file_name
        if args.tenant:
            body["tenant"] = args.tenant
        data = request(client, "POST", "/v1/admin/policies", json=body)
        if data["diff"]:
            print(data["diff"], end="" if data["diff"].endswith("\n") else "\n")
            print(f"published {data['pack']} v{data['version']} in {data['tenant']}")
        else:
            print(f"{data['pack']} v{data['version']} in {data['tenant']} is unchanged")
    return 0


def add_parser(commands: Any) -> None:
    """`govledger policy`."""
    policy = commands.add_parser("policy", help="lint, publish and list policy packs")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    lint_parser = policy_commands.add_parser("lint", help="check packs; errors with line numbers")
    lint_parser.add_argument("files", nargs="+")
    add_lint_baseline_arguments(lint_parser)
    push = policy_commands.add_parser("push", help="publish a pack as its next version")
    push.add_argument("file")
    push.add_argument("--tenant")
    policy_commands.add_parser("list", help="published packs and their versions")
    templates = policy_commands.add_parser("templates", help="list templates, or print one")
    templates.add_argument("name", nargs="?")
    add_baseline_command(policy_commands)
    from govledger.commands.config import add_revert_arguments

    add_revert_arguments(
        policy_commands.add_parser("revert", help="publish an earlier version again, as the next")
    )
    policy.set_defaults(func=cmd_policy)
