"""Requests and tokens per minute per key: token buckets, refilled continuously. Pure:
the caller passes the clock, so tests need no sleeping."""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.settings import SettingsError

SECONDS_PER_MINUTE = 60.0


@dataclass(slots=True)
class Bucket:
    """Holds up to `capacity` units and refills `capacity` per minute."""

    capacity: float
    level: float
    updated_s: float

    def refill(self, now_s: float) -> None:
        """Add what accrued since the last look."""
        elapsed_s = max(now_s - self.updated_s, 0.0)
        self.level = min(self.capacity, self.level + elapsed_s * self.capacity / SECONDS_PER_MINUTE)
        self.updated_s = now_s

    def wait_s(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing * SECONDS_PER_MINUTE / self.capacity


class RateLimiter:
    """Buckets per key: one for requests, one for tokens, each only if the key has a limit."""

    def __init__(self, max_keys: int = 100_000) -> None:
        assert max_keys > 0, "the limiter needs room for at least one key"
        self.max_keys = max_keys
        self._buckets: dict[tuple[str, str], Bucket] = {}

    def _bucket(self, key_id: str, kind: str, per_minute: int, now_s: float) -> Bucket:
        bucket = self._buckets.get((key_id, kind))
        if bucket is None or bucket.capacity != per_minute:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()  # bounded memory; limits restart full, never stricter
            bucket = Bucket(float(per_minute), float(per_minute), now_s)
            self._buckets[(key_id, kind)] = bucket
        bucket.refill(now_s)
        return bucket

    def admit(
        self,
        key_id: str,
        *,
        requests_per_minute: int,
        tokens_per_minute: int,
        tokens: int,
        now_s: float,
    ) -> int:
        """Take one request and `tokens` tokens, or take nothing and return the whole
        seconds to wait (the Retry-After). 0 means admitted."""
        wants: list[tuple[Bucket, float]] = []
        if requests_per_minute > 0:
            wants.append((self._bucket(key_id, "requests", requests_per_minute, now_s), 1.0))
        if tokens_per_minute > 0:
            bucket = self._bucket(key_id, "tokens", tokens_per_minute, now_s)
            wants.append((bucket, float(min(tokens, tokens_per_minute))))
        wait_s = max((bucket.wait_s(amount) for bucket, amount in wants), default=0.0)
        if wait_s > 0:
            return max(1, math.ceil(wait_s))
        for bucket, amount in wants:
            bucket.level -= amount
        return 0


@dataclass(frozen=True, slots=True)
class Limits:
    """Requests and tokens per minute; 0 is unlimited."""

    requests_per_minute: int
    tokens_per_minute: int


def parse_team_limits(text: str) -> dict[tuple[str, str], Limits]:
    """`tenant/team=rpm:tpm;…` as limits per (tenant, team); SettingsError if malformed."""
    limits: dict[tuple[str, str], Limits] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        team_path, _, numbers = entry.partition("=")
        tenant, _, team = team_path.strip().partition("/")
        rpm, _, tpm = numbers.partition(":")
        if not (tenant and team and rpm.strip().isdigit() and tpm.strip().isdigit()):
            raise SettingsError(f"GOVLEDGER_TEAM_RATE_LIMITS: {entry!r} is not tenant/team=rpm:tpm")
        if (tenant, team) in limits:
            raise SettingsError(f"GOVLEDGER_TEAM_RATE_LIMITS: {tenant}/{team} appears twice")
        limits[(tenant, team)] = Limits(int(rpm), int(tpm))
    return limits
