"""`govledger config push | apply | show | history | revert`: policy packs as
configurations applied from CI, through `PUT /v1/configurations/{name}` (idempotent: the
same content twice publishes one version; `--if-match V` refuses to overwrite a version
the pipeline has not seen). `policy revert` is `config revert` under the pack's name."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from govledger.cli_support import CliError, admin_client, read_text, request, when
from schemas.settings import GatewaySettings, load


def _pack_name(source: str, file_name: str | None) -> str:
    from gateway.policy.pack import PackError, parse_pack

    try:
        return parse_pack(source, default_name=file_name).name
    except PackError as exc:
        lines = "; ".join(f"line {p.line}: {p.message}" for p in exc.errors)
        raise CliError(f"the pack does not lint: {lines}") from exc


def _print_outcome(data: dict[str, Any]) -> None:
    if data["diff"]:
        print(data["diff"], end="" if data["diff"].endswith("\n") else "\n")
        print(f"published {data['pack']} v{data['version']} in {data['tenant']}")
    else:
        print(f"{data['pack']} v{data['version']} in {data['tenant']} is unchanged")


def with_targeting(source: str, teams: list[str], gateways: list[str]) -> str:
    """The pack with a top-level `targeting` for --team/--gateway (every step then runs
    only for those teams, on those gateways); refused when the pack has one already."""
    if not teams and not gateways:
        return source
    if re.search(r"^targeting\s*:", source, flags=re.MULTILINE):
        raise CliError("the pack has a targeting of its own; edit it instead of --team/--gateway")
    lines = ["targeting:"]
    for key, names in (("teams", teams), ("gateways", gateways)):
        if names:  # JSON strings are YAML flow scalars: no name can break out of the list
            lines.append(f"  {key}: [{', '.join(json.dumps(n) for n in names)}]")
    return source.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def _tenant(args: argparse.Namespace) -> dict[str, str]:
    return {"tenant": args.tenant} if args.tenant else {}


def apply_pack(args: argparse.Namespace, source: str, name: str) -> int:
    """PUT the pack under its name; print the diff and the version."""
    headers = {"Content-Type": "application/yaml"}
    if args.if_match is not None:
        headers["If-Match"] = f'"{args.if_match}"'
    with admin_client(load(GatewaySettings)) as client:
        data = request(
            client,
            "PUT",
            f"/v1/configurations/{name}",
            content=source.encode(),
            headers=headers,
            params=_tenant(args),
        )
    _print_outcome(data)
    return 0


def revert(args: argparse.Namespace) -> int:
    """Publish version --to of the pack again as its next version."""
    body = {"to_version": args.to, **_tenant(args)}
    with admin_client(load(GatewaySettings)) as client:
        data = request(client, "POST", f"/v1/admin/policies/{args.name}/revert", json=body)
    _print_outcome(data)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """config push | apply | show | history | revert."""
    from gateway.policy.pack import pack_name_from_file, template_source

    command = args.config_command
    if command == "push":
        source = with_targeting(read_text(args.file), args.team, args.gateway)
        return apply_pack(args, source, _pack_name(source, pack_name_from_file(args.file)))
    if command == "apply":
        try:
            source = template_source(args.template)
        except KeyError as exc:
            raise CliError(
                f"no template {args.template}; see `govledger policy templates`"
            ) from exc
        if args.name:  # the template under another name: a tenant may keep several
            source = source.replace(f"name: {args.template}\n", f"name: {args.name}\n", 1)
        source = with_targeting(source, args.team, args.gateway)
        return apply_pack(args, source, _pack_name(source, args.name))
    if command == "revert":
        return revert(args)
    with admin_client(load(GatewaySettings)) as client:
        if command == "show":
            data = request(client, "GET", f"/v1/configurations/{args.name}", params=_tenant(args))
            print(data["source_yaml"], end="")
            return 0
        path = f"/v1/admin/policies/{args.name}/versions"
        data = request(client, "GET", path, params=_tenant(args))
    print("version\tpublished_at\tpublished_by\tsha256")
    for version in data["data"]:
        print(
            f"{version['version']}\t{when(version['published_at_ms'])}\t"
            f"{version['published_by']}\t{version['source_sha256'][:12]}"
        )
    return 0


def add_revert_arguments(parser: argparse.ArgumentParser) -> None:
    """NAME --to VERSION [--tenant T] (shared with `policy revert`)."""
    parser.add_argument("name")
    parser.add_argument("--to", type=int, required=True, help="the version to bring back")
    parser.add_argument("--tenant")


def add_parser(commands: Any) -> None:
    """`govledger config`."""
    config = commands.add_parser("config", help="apply packs from CI, idempotently; revert")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    push = config_commands.add_parser("push", help="apply a pack file (same content: no-op)")
    push.add_argument("--file", required=True)
    apply = config_commands.add_parser("apply", help="apply a template by name")
    apply.add_argument("--template", required=True)
    apply.add_argument("--name", help="publish the template under this name")
    for parser in (push, apply):
        parser.add_argument("--tenant")
        parser.add_argument(
            "--team", action="append", default=[], help="only this team's calls (repeatable)"
        )
        parser.add_argument(
            "--gateway", action="append", default=[], help="only on this gateway (repeatable)"
        )
        parser.add_argument(
            "--if-match", type=int, help="only if the pack is at this version (0: new)"
        )
    for name, helptext in (("show", "print the version in force"), ("history", "versions")):
        shown = config_commands.add_parser(name, help=helptext)
        shown.add_argument("name")
        shown.add_argument("--tenant")
    add_revert_arguments(config_commands.add_parser("revert", help="bring back a version"))
    config.set_defaults(func=cmd_config)
