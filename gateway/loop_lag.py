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


async def sample_lag(admission: Admission, clock: Callable[[], float] = time.monotonic) -> None:
    """Feed `admission` lag samples, as often as it asks (`Admission.next_sample_in_s`),
    until cancelled. Wall-clock lag, whatever its cause: a gateway starved of CPU by other
    processes is as late for its callers as one busy with its own work. With no call in
    flight nothing is sampled (nothing to shed, and an idle gateway should not wake): the
    next admitted call starts the sampling again."""
    busy = asyncio.Event()
    admission.on_busy = busy.set
    while True:
        if not admission.in_flight:
            busy.clear()
            await busy.wait()
        asked_s = clock()
        period_s = admission.next_sample_in_s(asked_s)
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
