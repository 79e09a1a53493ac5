"""`govledger sql QUERY`: a read-only query through the sink's query API; TSV on stdout."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from govledger.cli_support import ADMIN_TIMEOUT_S, CliError, checked
from schemas.settings import SinkSettings, load


def cmd_sql(args: argparse.Namespace) -> int:
    """Run a read-only query against the store; TSV on stdout."""
    import httpx

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
        checked(response)
    sys.stdout.write(response.text)
    return 0


def add_parser(commands: Any) -> None:
    """`govledger sql`."""
    sql = commands.add_parser("sql", help="run a read-only SQL query; prints TSV")
    sql.add_argument("query")
    sql.set_defaults(func=cmd_sql)
