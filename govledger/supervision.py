"""The restart policy of `govledger up` (pure: no clock, no processes).

A part that exits is restarted after a backoff that doubles with each restart inside the
crash-loop window; a part restarted more than `limit` times within `window_s` seconds is
in a crash loop, and the stack stops with that reason (see govledger.runtime.Stack).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.settings import RuntimeSettings


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How often, and how soon, a part that exited is started again."""

    limit: int
    window_s: float
    backoff_s: float
    backoff_max_s: float

    def __post_init__(self) -> None:
        assert self.limit >= 0 and self.window_s > 0, "a crash loop needs a window"
        assert 0 <= self.backoff_s <= self.backoff_max_s, "backoff within its cap"


@dataclass(frozen=True, slots=True)
class Restart:
    """Start the part again after `delay_s`; this is its restart number `number`."""

    number: int
    delay_s: float


@dataclass(frozen=True, slots=True)
class CrashLoop:
    """Give up: the part restarted too often; `reason` says so for the operator."""

    reason: str


def restart_policy(settings: RuntimeSettings) -> RestartPolicy:
    """The policy the GOVLEDGER_RESTART_* settings say."""
    return RestartPolicy(
        settings.restart_limit,
        settings.restart_window_s,
        settings.restart_backoff_s,
        settings.restart_backoff_max_s,
    )


def how_it_ended(returncode: int) -> str:
    """An exit status as the operator reads it: 'exit code 3' or 'signal SIGKILL'
    (Popen reports a death by signal N as -N)."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


def recent(restarts_at_s: Sequence[float], now_s: float, window_s: float) -> int:
    """How many of the restarts happened within the window that ends now."""
    return sum(1 for at in restarts_at_s if now_s - at < window_s)


def decide(
    policy: RestartPolicy, part: str, restarts_at_s: Sequence[float], now_s: float
) -> Restart | CrashLoop:
    """What to do about `part`, which just exited, given when it was restarted before."""
    in_window = recent(restarts_at_s, now_s, policy.window_s)
    if in_window >= policy.limit:
        return CrashLoop(
            f"{part} crash loop: it exited after {in_window} restarts within "
            f"{policy.window_s:g} s (GOVLEDGER_RESTART_LIMIT={policy.limit}, "
            f"GOVLEDGER_RESTART_WINDOW_S={policy.window_s:g})"
        )
    delay_s = min(policy.backoff_s * 2**in_window, policy.backoff_max_s)
    return Restart(len(restarts_at_s) + 1, delay_s)
