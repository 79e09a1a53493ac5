"""How the pages write figures: money from integer nano-USD (never through a float for
exact amounts), times in UTC, counts with separators."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

NANOUSD_PER_USD = 1_000_000_000


def usd(nanousd: Any, places: int = 4) -> str:
    """Dollars rounded to `places` for reading ($1.2345); exact amounts are `usd_exact`."""
    amount = int(nanousd or 0)
    unit = NANOUSD_PER_USD // 10**places
    rounded = (abs(amount) + unit // 2) // unit
    whole, frac = divmod(rounded, 10**places)
    return f"{'-' if amount < 0 else ''}${whole:,}.{frac:0{places}d}"


def usd_exact(nanousd: Any) -> str:
    """Exact dollars, nine places."""
    amount = int(nanousd or 0)
    whole, frac = divmod(abs(amount), NANOUSD_PER_USD)
    return f"{'-' if amount < 0 else ''}${whole:,}.{frac:09d}"


def when(ms: Any) -> str:
    """A millisecond timestamp as UTC text; empty for none."""
    if ms in (None, "", 0):
        return ""
    moment = dt.datetime.fromtimestamp(int(ms) / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def count(value: Any) -> str:
    """A count with thousands separators."""
    return f"{int(value or 0):,}"


def millis(value: Any) -> str:
    """A duration in milliseconds."""
    if value is None:
        return ""
    shown = float(value)
    return f"{shown:,.2f} ms" if shown < 10 else f"{shown:,.0f} ms"


def percent(part: Any, whole: Any) -> str:
    """part/whole as a percentage; a dash without a whole."""
    return f"{100 * int(part or 0) / int(whole):.1f}%" if int(whole or 0) else "-"


FILTERS: dict[str, Callable[..., str]] = {
    "usd": usd,
    "usd_exact": usd_exact,
    "when": when,
    "count": count,
    "millis": millis,
}
