"""Durations as people type them: '90d', '12h', '30m', '45s'. One parser for every surface
that takes one (the admin API's key expiry, the query API's report windows).

The text is hostile input: only ASCII digits and one unit letter, at most
`MAX_DURATION_CHARS` characters, a whole number above zero. `str.isdigit` alone would let
'²d' or Arabic-Indic digits through, so the allow-list is spelled out."""

from __future__ import annotations

import re

DURATION_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# Ten digits of days is already far beyond any window or expiry we honour; the bound
# keeps `int()` from ever seeing a long digit string.
MAX_DURATION_CHARS = 12
_DURATION = re.compile(r"([0-9]+)([smhd])")


def parse_duration_ms(text: str) -> int:
    """'90d', '12h', '30m' or '45s' in milliseconds; ValueError for anything else."""
    matched = _DURATION.fullmatch(text) if len(text) <= MAX_DURATION_CHARS else None
    if matched is None or int(matched.group(1)) <= 0:
        raise ValueError(f"not a duration like 90d, 12h, 30m or 45s: {text[:32]!r}")
    return int(matched.group(1)) * DURATION_UNITS_MS[matched.group(2)]
