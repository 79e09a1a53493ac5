"""`govledger demo`: its arguments here; the scenario, imported when it runs, in
`govledger.demo` (which imports the openai SDK)."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_CALLS = 3


def cmd_demo(args: argparse.Namespace) -> int:
    """Drive the demo traffic, wait for the store, print the report."""
    from govledger.demo.command import run_demo

    return run_demo(args)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_parser(commands: Any) -> None:
    """`govledger demo`."""
    demo = commands.add_parser(
        "demo", help="drive demo traffic through a running stack and report from ClickHouse"
    )
    demo.add_argument(
        "--calls",
        type=_positive,
        default=DEFAULT_CALLS,
        help=f"ordinary calls per team (default {DEFAULT_CALLS})",
    )
    demo.add_argument(
        "--tenant", help="tenant to run in (default: a new demo-<id>, so budgets alert afresh)"
    )
    demo.set_defaults(func=cmd_demo)
