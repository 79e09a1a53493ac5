"""The `govledger` command line: `main` and the command table. Each command group is one
module of `govledger/commands/` that adds its parser; what the groups share is in
`govledger/cli_support.py`."""

from __future__ import annotations

import argparse
import sys

from govledger.cli_support import CliError
from govledger.commands import (
    audit,
    config,
    demo,
    escalations,
    events,
    export,
    keys,
    notify,
    policy,
    prices,
    replay,
    root,
    settings,
    sql,
    up,
    wallets,
)
from govledger.commands import doctor as doctor_command
from schemas.settings import SettingsError

# The order `govledger --help` lists the groups in.
COMMAND_GROUPS = (
    up,
    keys,
    wallets,
    policy,
    config,
    escalations,
    events,
    sql,
    settings,
    audit,
    root,
    replay,
    export,
    demo,
    prices,
    doctor_command,
    notify,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog="govledger", description="Governance ledger for AI traffic."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_parser(commands)
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
