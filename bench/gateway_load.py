"""Open-loop load of the gateway benchmark: calls sent on a fixed schedule that ignores
the answers, latency from each call's scheduled send time, and the figures of a run."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench.common import percentile, rounded
from bench.gateway_procs import machine_busy_seconds

MODEL = "gpt-4o-mini"  # priced in the gateway's catalogue; LiteLLM knows it too
MAX_INFLIGHT = 1_024
KEEPS_UP_RATIO = 0.97  # completions per second against the offered rate
KEEPS_UP_DRIFT_MS = 25.0  # median latency of the last fifth over the first fifth
REQUEST_BODY = orjson.dumps(
    {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a concise analyst."},
            {"role": "user", "content": "Summarise the spend of cost centre 42 this month."},
        ],
        "max_tokens": 32,
    }
)


@dataclass(slots=True)
class Shot:
    due: float
    sent: float = math.nan
    returned: float = math.nan
    status: int = 0  # HTTP status; -1 for a transport error or timeout


@dataclass
class Phase:
    """One run of the load against one target and its figures."""

    label: str
    target: str
    rate: float
    duration_s: float
    shots: list[Shot] = field(default_factory=list, repr=False)
    shed: int = 0
    lag_max_ms: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    window_s: float = math.nan
    machine_busy: float = math.nan  # fraction of all CPUs during the window
    first_due: float = math.nan
    last_return: float = math.nan
    abort_backlog_s: float | None = None  # give up once this much load is outstanding
    aborted: bool = False

    @property
    def ok(self) -> int:
        return sum(1 for s in self.shots if s.status == 200)

    @property
    def errors(self) -> int:
        return len(self.shots) - self.ok + self.shed

    @property
    def latencies_ms(self) -> list[float]:
        return [(s.returned - s.due) * 1000 for s in self.shots if s.status == 200]

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    @property
    def achieved_per_s(self) -> float:
        """Answered calls per second, from the first scheduled send to the last answer."""
        if not self.ok or math.isnan(self.last_return):
            return 0.0
        return self.ok / (self.last_return - self.first_due)

    @property
    def drift_ms(self) -> float:
        """Median latency of the last fifth of the calls minus that of the first fifth."""
        fifth = max(len(self.shots) // 5, 1)
        early = [(s.returned - s.due) * 1000 for s in self.shots[:fifth] if s.status == 200]
        late = [(s.returned - s.due) * 1000 for s in self.shots[-fifth:] if s.status == 200]
        return percentile(late, 50) - percentile(early, 50)

    @property
    def keeps_up(self) -> bool:
        """No errors, answers as fast as asked, and latency not growing over the run."""
        return (
            self.errors == 0
            and self.achieved_per_s >= KEEPS_UP_RATIO * self.rate
            and not self.drift_ms > KEEPS_UP_DRIFT_MS
        )

    def cpu_ms_per_call(self, name: str) -> float:
        """CPU per call; NaN for a run that did not keep up (its work spills past it)."""
        calls = self.rate * self.window_s if self.keeps_up else 0
        return self.cpu_s.get(name, math.nan) / calls * 1000 if calls else math.nan

    def cpu_percent(self, name: str) -> float:
        return self.cpu_s.get(name, math.nan) / self.window_s * 100

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "target": self.target,
            "rate_per_s": self.rate,
            "duration_s": self.duration_s,
            "calls": len(self.shots) + self.shed,
            "ok": self.ok,
            "errors": self.errors,
            "achieved_per_s": rounded(self.achieved_per_s, 1),
            "p50_ms": rounded(self.pct(50), 2),
            "p90_ms": rounded(self.pct(90), 2),
            "p99_ms": rounded(self.pct(99), 2),
            "max_ms": rounded(max(self.latencies_ms, default=math.nan), 2),
            "drift_ms": rounded(self.drift_ms, 2),
            "keeps_up": self.keeps_up,
            "scheduler_lag_max_ms": rounded(self.lag_max_ms, 2),
            "cpu_percent": {k: rounded(self.cpu_percent(k), 1) for k in self.cpu_s},
            "cpu_ms_per_call": {k: rounded(self.cpu_ms_per_call(k), 3) for k in self.cpu_s},
            "machine_busy_percent": rounded(self.machine_busy * 100, 1),
        }

    def line(self) -> str:
        cpu = self.cpu_s.get(self.target)
        cpu_text = (
            f"  {self.target} CPU {self.cpu_percent(self.target):5.1f}% "
            f"{self.cpu_ms_per_call(self.target):.3f} ms/call"
            if cpu is not None
            else ""
        )
        return (
            f"[{self.label}] {self.rate:g}/s x {self.duration_s:g}s: {self.ok} ok, "
            f"{self.errors} errors, {self.achieved_per_s:.1f}/s answered, "
            f"p50 {self.pct(50):.2f} p99 {self.pct(99):.2f} max "
            f"{max(self.latencies_ms, default=math.nan):.2f} ms, drift {self.drift_ms:.1f} ms"
            f"{cpu_text}, machine {self.machine_busy * 100:.0f}% busy"
            f"{'' if self.keeps_up else '  (does not keep up)'}"
            f"{'; probe stopped early, backlog over 1 s' if self.aborted else ''}"
        )


async def _fire(session: aiohttp.ClientSession, url: str, shot: Shot) -> None:
    shot.sent = time.perf_counter()
    try:
        async with session.post(url, data=REQUEST_BODY) as reply:
            await reply.read()
            shot.status = reply.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        shot.status = -1
    shot.returned = time.perf_counter()


async def open_loop(
    phase: Phase,
    url: str,
    headers: dict[str, str],
    warmup_s: float,
    watch: dict[str, Callable[[], float]],
) -> Phase:
    """Send `phase.rate` calls a second on a fixed schedule for warmup + duration; keep the
    calls scheduled after the warm-up, and the CPU each watched process used meanwhile."""
    connector = aiohttp.TCPConnector(limit=MAX_INFLIGHT, force_close=False)
    timeout = aiohttp.ClientTimeout(total=20)
    headers = {**headers, "Content-Type": "application/json"}
    session = aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout)
    inflight: set[asyncio.Task[None]] = set()
    warm = int(phase.rate * warmup_s)
    total = warm + int(phase.rate * phase.duration_s)
    cpu_before: dict[str, float] = {}
    busy_before = (0.0, 0.0)
    try:
        t0 = time.perf_counter() + 0.02
        for i in range(total):
            due = t0 + i / phase.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if i == warm:
                phase.first_due = due
                cpu_before = {name: read() for name, read in watch.items()}
                busy_before = machine_busy_seconds()
            if i >= warm:
                phase.lag_max_ms = max(phase.lag_max_ms, (time.perf_counter() - due) * 1000)
            if phase.abort_backlog_s is not None and len(inflight) > max(
                50, phase.rate * phase.abort_backlog_s
            ):
                # A probe this far behind has failed: count the rest as errors, stop.
                phase.aborted = True
                phase.shed += total - max(i, warm)
                break
            if len(inflight) >= MAX_INFLIGHT:
                phase.shed += i >= warm  # open loop: a full window drops the call
                continue
            shot = Shot(due)
            if i >= warm:
                phase.shots.append(shot)
            task = asyncio.create_task(_fire(session, url, shot))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        # CPU over the measured schedule (steady state: about one call's work per call).
        if cpu_before:
            phase.window_s = min(t0 + total / phase.rate, time.perf_counter()) - phase.first_due
            cpu_after = {name: read() for name, read in watch.items()}
            busy_after = machine_busy_seconds()
            phase.cpu_s = {name: cpu_after[name] - cpu_before[name] for name in watch}
            busy = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1])
            phase.machine_busy = busy
        if inflight and not phase.aborted:
            await asyncio.wait(set(inflight), timeout=30)
    finally:
        for task in inflight:
            task.cancel()
        if inflight:
            await asyncio.wait(set(inflight), timeout=5)
        await session.close()
    phase.last_return = max((s.returned for s in phase.shots if s.status == 200), default=math.nan)
    return phase
