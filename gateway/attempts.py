"""Running a call on its targets in turn: each target's breaker asked first, retryable
failures retried with backoff (Retry-After honoured), the next target tried when one
fails; every attempt recorded on the call."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway import errors
from gateway.breakers import BreakerBoard
from gateway.call_record import CallRecord
from gateway.catalogue import Target
from gateway.errors import GatewayError
from gateway.providers.base import UpstreamError
from gateway.routing import RETRYABLE, backoff_s
from schemas.ids import now_ms
from schemas.settings import GatewaySettings

R = TypeVar("R")


class TargetRunner:
    """Tries a call's targets under their breakers, with retries and fallbacks."""

    def __init__(self, settings: GatewaySettings, breakers: BreakerBoard) -> None:
        self.settings = settings
        self.breakers = breakers
        # Not for security: jitter only spreads retries out.
        self._jitter = random.Random()  # noqa: S311

    async def run(
        self, call: CallRecord, targets: list[Target], run: Callable[[Target], Awaitable[R]]
    ) -> tuple[R, Target, float]:
        """Run on each target in turn, retrying retryable failures with backoff; return the
        first success, its target and when its attempt started. Failed attempts are
        recorded; the last failure is raised when every target failed."""
        retries = self.settings.upstream_retries
        failure: UpstreamError | None = None
        for index, target in enumerate(targets):
            for retry in range(retries + 1):
                if not self.breakers.admit(target, now_ms()):
                    call.attempted(target, time.perf_counter(), 0, "breaker_open")
                    break
                started = time.perf_counter()
                call.trace.attempt_started(target)
                try:
                    result = await run(target)
                except UpstreamError as exc:
                    call.attempted(target, started, exc.status, exc.error_class)
                    self.breakers.record(target, exc.status, exc.error_class, now_ms())
                    failure = exc
                    if exc.error_class not in RETRYABLE:
                        raise
                    if retry < retries:
                        await asyncio.sleep(self._backoff_s(retry, exc.retry_after_s))
                    continue
                self.breakers.record(target, 200, None, now_ms())
                call.target = target
                if index > 0:
                    # Stable words for SQL: a failure moved it on, or only open breakers did.
                    call.selection_reason = "fallback" if failure is not None else "breaker_open"
                return result, target, started
        if failure is None:
            raise GatewayError(
                errors.CIRCUIT_OPEN,
                f"every target for '{call.model_requested}' has an open circuit breaker",
                headers={
                    "Retry-After": str(max(1, round(self.breakers.config.reset_timeout_ms / 1000)))
                },
            )
        raise failure

    def _backoff_s(self, retry: int, retry_after_s: float | None) -> float:
        return backoff_s(
            retry,
            base_s=self.settings.retry_backoff_ms / 1000,
            cap_s=self.settings.retry_max_wait_ms / 1000,
            retry_after_s=retry_after_s,
            jitter=self._jitter.uniform(0.5, 1.0),
        )
