"""`govledger prices list | set`: model prices by provider, model and date, through the
admin API (org admins). Rates are typed in USD per million tokens, exact decimals, and
sent as integer nano-USD per million tokens."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from govledger.cli_support import CliError, admin_client, request
from schemas.money import format_usd, usd_to_nanousd
from schemas.settings import GatewaySettings, load

PRICES_PATH = "/v1/admin/prices"
# (flag stem, field): each rate's option is --<stem>-usd-per-mtok.
RATE_OPTIONS = (
    ("input", "input_nanousd_per_mtok"),
    ("output", "output_nanousd_per_mtok"),
    ("cached-input", "cached_input_nanousd_per_mtok"),
    ("cache-write", "cache_write_nanousd_per_mtok"),
    ("audio-input", "audio_input_nanousd_per_mtok"),
    ("image-input", "image_input_nanousd_per_mtok"),
    ("reasoning", "reasoning_nanousd_per_mtok"),
    ("audio-output", "audio_output_nanousd_per_mtok"),
)


def _epoch_ms(text: str) -> int:
    """An ISO-8601 time with its offset (e.g. 2027-01-01T00:00:00Z) as epoch ms."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CliError(f"--effective-from {text!r} is not an ISO-8601 time") from exc
    if moment.tzinfo is None:
        raise CliError(f"--effective-from {text!r} needs its UTC offset (e.g. Z)")
    return int(moment.timestamp() * 1000)


def _usd_per_mtok(nanousd: int | None) -> str:
    """A rate as USD per million tokens; '-' when it is the plain rate."""
    return "-" if nanousd is None else format_usd(nanousd).rstrip("0").rstrip(".")


def _show(price: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(price["effective_from_ms"] / 1000).astimezone()
    rates = " ".join(
        f"{stem}={_usd_per_mtok(price[field])}"
        for stem, field in RATE_OPTIONS
        if price[field] is not None
    )
    start = "always" if price["effective_from_ms"] == 0 else when.isoformat(timespec="seconds")
    return f"{price['provider']}\t{price['model']}\tfrom {start}\t{rates} (USD per M tokens)"


def cmd_prices(args: argparse.Namespace) -> int:
    """prices list | set."""
    settings = load(GatewaySettings)
    with admin_client(settings) as client:
        if args.prices_command == "list":
            params = {k: v for k, v in (("provider", args.provider), ("model", args.model)) if v}
            data = request(client, "GET", PRICES_PATH, params=params)
            for price in data["data"]:
                print(_show(price))
            return 0
        body: dict[str, Any] = {"provider": args.provider, "model": args.model}
        if args.effective_from:
            body["effective_from"] = _epoch_ms(args.effective_from)
        for stem, field in RATE_OPTIONS:
            value = getattr(args, f"{stem.replace('-', '_')}_usd_per_mtok")
            if value is not None:
                try:
                    body[field] = usd_to_nanousd(value)
                except ValueError as exc:
                    raise CliError(f"--{stem}-usd-per-mtok: {exc}") from exc
        print(_show(request(client, "PUT", PRICES_PATH, json=body)))
    return 0


def add_parser(commands: Any) -> None:
    """`govledger prices`."""
    prices = commands.add_parser("prices", help="model prices by provider, model and date")
    prices_commands = prices.add_subparsers(dest="prices_command", required=True)
    listing = prices_commands.add_parser("list", help="every price and the date it starts")
    listing.add_argument("--provider")
    listing.add_argument("--model")
    setting = prices_commands.add_parser(
        "set", help="publish a model's price from a date on (default: now; never the past)"
    )
    setting.add_argument("--provider", required=True, help="e.g. openai, anthropic")
    setting.add_argument("--model", required=True, help="the upstream model name")
    setting.add_argument("--effective-from", help="ISO-8601 time with offset, e.g. 2027-01-01Z")
    for stem, _ in RATE_OPTIONS:
        required = stem in ("input", "output")
        setting.add_argument(
            f"--{stem}-usd-per-mtok",
            required=required,
            help=f"USD per million {stem} tokens, exact"
            + ("" if required else " (default: the plain input or output rate)"),
        )
    prices.set_defaults(func=cmd_prices)
