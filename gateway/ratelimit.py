"""Requests and tokens per minute per key: token buckets, refilled continuously. Pure:
the caller passes the clock, so tests need no sleeping.

A gateway of N processes on one port (GOVLEDGER_GATEWAY_PROCESSES) shares no bucket
between them, so each process refills at limit / N: together they never admit more than
the limit per minute, beyond one burst of at most N x max(limit / N, one call) (each
bucket holds at least one call, or a limit below N could never admit one). A client
whose calls all reach one process (one keep-alive connection: the kernel spreads
connections, not calls) gets limit / N: strict, never over (docs/failures.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.settings import SettingsError

SECONDS_PER_MINUTE = 60.0


@dataclass(slots=True)
class Bucket:
    """Holds up to `capacity` units and refills `per_minute` (by default `capacity`)."""

    capacity: float
    level: float
    updated_s: float
    per_minute: float = 0.0

    def __post_init__(self) -> None:
        self.per_minute = self.per_minute or self.capacity

    def refill(self, now_s: float) -> None:
        """Add what accrued since the last look."""
        elapsed_s = max(now_s - self.updated_s, 0.0)
        self.level = min(
            self.capacity, self.level + elapsed_s * self.per_minute / SECONDS_PER_MINUTE
        )
        self.updated_s = now_s

    def wait_s(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing * SECONDS_PER_MINUTE / self.per_minute


def process_share(per_minute: int, processes: int) -> tuple[float, float]:
    """One process's (capacity, refill per minute) of a limit that `processes` processes
    enforce between them: limit / N each, the capacity never below one unit."""
    assert per_minute > 0 and processes >= 1, "a limit, shared by at least one process"
    share = per_minute / processes
    return max(share, 1.0), share


class RateLimiter:
    """Buckets per key: one for requests, one for tokens, each only if the key has a limit."""

    def __init__(self, max_keys: int = 100_000, *, processes: int = 1) -> None:
        assert max_keys > 0, "the limiter needs room for at least one key"
        assert processes >= 1, "at least this process enforces the limit"
        self.max_keys = max_keys
        self.processes = processes  # this process enforces its share: limit / processes
        self._buckets: dict[tuple[str, str], Bucket] = {}

    def _bucket(self, key_id: str, kind: str, per_minute: int, now_s: float) -> Bucket:
        bucket = self._buckets.get((key_id, kind))
        capacity, refill = process_share(per_minute, self.processes)
        if bucket is None or bucket.per_minute != refill:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()  # bounded memory; limits restart full, never stricter
            bucket = Bucket(capacity, capacity, now_s, refill)
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
            wants.append((bucket, min(float(tokens), bucket.capacity)))
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
