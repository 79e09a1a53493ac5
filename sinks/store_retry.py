"""The sink's patience with an unwell store: a store call is tried until the store
answers, with a backoff between tries, a log line per failed try, and figures that say
whether the store is being waited for, since when and why. Whose fault a failure is
(the record's or the store's) is decided by `sinks/store_faults.py`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from schemas.ids import now_ms
from sinks.store_faults import Backoff, FaultKind, StoreFault, classify

log = structlog.get_logger(__name__)


class RunsCalls(Protocol):
    """Runs a store call off the event loop (`sinks.store.Store`)."""

    async def run(self, function: Any, *args: Any) -> Any:
        """The call's result, or its exception."""


@dataclass(slots=True)
class StoreHealth:
    """The store as the sink last found it."""

    retries: int = 0  # failed tries of an unwell store, ever
    retrying_since_ms: int = 0  # 0 while the store answers
    error: str = ""
    disk_full: bool = False

    def state(self) -> dict[str, object]:
        """For the ingestion figures: ok, or retrying since when and why."""
        return {
            "state": "retrying" if self.retrying_since_ms else "ok",
            "retrying_since_ms": self.retrying_since_ms or None,
            "error": self.error or None,
            "disk_full": self.disk_full,
            "retries": self.retries,
        }


class StoreRetry:
    """Store calls tried until the store answers (never given up: the caller holds its
    offsets meanwhile, so waiting loses nothing)."""

    def __init__(
        self,
        store: RunsCalls,
        backoff: Backoff,
        health: StoreHealth,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._backoff = backoff
        self.health = health
        self._sleep = sleep

    async def answer(self, call: Any, *args: Any) -> Any:
        """The result of a call with no record in it (a look-up, the columns): every
        failure is the store's, so it is tried until it succeeds."""
        attempt = 0
        while True:
            try:
                result = await self._store.run(call, *args)
            except Exception as exc:  # noqa: BLE001 - the store is waited out
                await self._wait(classify(exc), attempt)
                attempt += 1
            else:
                self._answered()
                return result

    async def refused(self, call: Any, *args: Any, **context: Any) -> StoreFault | None:
        """Run a call that carries records until the store answers: None once it
        succeeded, the fault when the store refused the records' data."""
        attempt = 0
        while True:
            try:
                await self._store.run(call, *args)
            except Exception as exc:  # noqa: BLE001 - classified: the records' or the store's
                fault = classify(exc)
                if fault.kind is FaultKind.RECORD:
                    self._answered()
                    return fault
                await self._wait(fault, attempt, **context)
                attempt += 1
            else:
                self._answered()
                return None

    async def _wait(self, fault: StoreFault, attempt: int, **context: Any) -> None:
        health = self.health
        health.retries += 1
        health.retrying_since_ms = health.retrying_since_ms or now_ms()
        health.error, health.disk_full = fault.reason, fault.disk_full
        delay_ms = self._backoff.delay_ms(attempt)
        log.warning(
            "store unwell; retrying",
            error=fault.reason,
            code=fault.code,
            disk_full=fault.disk_full,
            attempt=attempt + 1,
            retry_in_ms=delay_ms,
            **context,
        )
        await self._sleep(delay_ms / 1000)

    def _answered(self) -> None:
        health = self.health
        if health.retrying_since_ms:
            log.info(
                "store answers again",
                waited_ms=now_ms() - health.retrying_since_ms,
                retries=health.retries,
            )
            health.retrying_since_ms, health.error, health.disk_full = 0, "", False
