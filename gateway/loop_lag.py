"""The event loop's lag, sampled for the admission limit (gateway/admission.py): a timer
asked to fire every period fires late by however long ready work waited before the loop
got to it, which is what a call arriving now would wait too."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway.admission import Admission

# Samples per admission interval: enough that the interval's lowest sample means a
# standing queue, few enough to cost nothing (a wake-up each period).
SAMPLES_PER_INTERVAL = 10


async def sample_lag(admission: Admission, clock: Callable[[], float] = time.monotonic) -> None:
    """Feed `admission` one lag sample a period, until cancelled. Wall-clock lag, whatever
    its cause: a gateway starved of CPU by other processes is as late for its callers as
    one busy with its own work (an idle one is not shed: gateway/admission.py)."""
    busy_period_s = admission.config.interval_s / SAMPLES_PER_INTERVAL
    while True:
        # With no call in flight there is nothing to shed (and a call arriving finds the
        # limit as the last busy interval left it): one wake-up an interval, not ten, so
        # an idle gateway costs almost nothing.
        period_s = busy_period_s if admission.in_flight else admission.config.interval_s
        asked_s = clock()
        await asyncio.sleep(period_s)
        now_s = clock()
        admission.observe_lag(now_s - asked_s - period_s, now_s)


def lag_sampling(admission: Admission) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context running `sample_lag` while the app serves (nothing when
    admission is off)."""

    async def sampling(app: web.Application) -> AsyncIterator[None]:
        if not admission.config.enabled:
            yield
            return
        task = asyncio.create_task(sample_lag(admission))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return sampling
