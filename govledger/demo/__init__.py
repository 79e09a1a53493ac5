"""`govledger demo`: realistic traffic through a running stack, then a report from the store.

Three teams of one fresh tenant call the gateway with the `openai` SDK, each under a
different policy pack: a provider outage trips a circuit breaker and calls fail over, a
support agent's prompt carries personal data (redacted) and a prompt injection (escalated
to a human), and a research team spends past 80 % and 100 % of its monthly budget. Every
step says what it did and why; then the demo waits, within a bound, until ClickHouse shows
the effects, and reports them from there, not from what the client saw, because the audit
trail is what the demo is about.

Exit codes: 0 every expected effect is in the store; 1 one is not (named); 2 the stack
cannot be reached.
"""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_CALLS = 3


def cmd_demo(args: argparse.Namespace) -> int:
    """Drive the demo traffic, wait for the store, print the report (the `openai` SDK and
    the rest are imported only when the demo runs)."""
    from govledger.demo.command import run_demo

    return run_demo(args)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_demo_command(commands: Any) -> None:
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
