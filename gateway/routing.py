"""Which targets a call may go to, in order, and how long to wait between attempts."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.catalogue import Target
from schemas.settings import SettingsError

# Failures worth another attempt: the upstream may answer next time, or another may.
# A 4xx other than 429 says the request itself is wrong; no other target would differ.
RETRYABLE = frozenset({"timeout", "connect", "transport", "http_5xx", "rate_limited"})
MAX_CHAIN = 8


def parse_fallbacks(text: str) -> dict[str, tuple[str, ...]]:
    """`model=fallback1|fallback2;other=…` as a mapping; SettingsError if malformed."""
    chains: dict[str, tuple[str, ...]] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        model, _, rest = entry.partition("=")
        chain = tuple(filter(None, (m.strip() for m in rest.split("|"))))
        if not model.strip() or not chain or len(chain) > MAX_CHAIN:
            raise SettingsError(f"GOVLEDGER_FALLBACKS: {entry!r} is not model=fallback|…")
        chains[model.strip()] = chain
    return chains


def plan(
    model: str, catalogue: Mapping[str, Target], fallbacks: Mapping[str, tuple[str, ...]]
) -> list[Target]:
    """The primary target, then each fallback the catalogue serves, once each."""
    names = [model, *fallbacks.get(model, ())]
    return [catalogue[name] for name in dict.fromkeys(names) if name in catalogue]


def backoff_s(
    retry: int, *, base_s: float, cap_s: float, retry_after_s: float | None, jitter: float
) -> float:
    """Seconds before retry number `retry` (0-based): the upstream's Retry-After when it
    sent one, else exponential backoff scaled by `jitter` in [0.5, 1]; never past cap_s."""
    assert 0.5 <= jitter <= 1.0, "jitter scales the backoff by half to whole"
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), cap_s)
    return min(cap_s, base_s * 2.0**retry) * jitter
