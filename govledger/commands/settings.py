"""`govledger settings`: every setting (schemas.settings) as a Markdown table."""

from __future__ import annotations

import argparse
from typing import Any

from schemas.settings import describe


def cmd_settings(args: argparse.Namespace) -> int:
    """Print every setting as a Markdown table."""
    print("| service | variable | default | meaning |\n|---|---|---|---|")
    for service, name, default, doc in describe():
        print(f"| {service} | `{name}` | `{default}` | {doc} |")
    return 0


def add_parser(commands: Any) -> None:
    """`govledger settings`."""
    commands.add_parser("settings", help="print every setting").set_defaults(func=cmd_settings)
