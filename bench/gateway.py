"""Gateway performance benchmark: what the gateway adds over calling the upstream directly.

Every call goes to one upstream, an OpenAI-compatible server in its own process
(bench/upstream.py) that answers after a fixed 50 ms with a small completion and its
usage. This process is the load generator: open loop at a constant rate (calls are sent
on a schedule that ignores the answers, and latency runs from each call's scheduled send
time, so a slow answer cannot hide the calls queued behind it). Around it, as child
processes: a Tansu broker, the stream worker (it publishes the wallet balances the
gateway's budget check reads), the upstream, and one gateway process
(bench/gateway_runner.py: the real GatewayProcess from GOVLEDGER_* settings).

Figures, each a ratio or a difference against a baseline measured in the same run:
  1. added latency at one client (default 20 calls/s): gateway p50/p99 minus direct p50/p99
  2. one gateway process at --rate (default 1,000/s): no errors, keeps up, p99 added;
     if it does not sustain that rate, a short step search for the highest rate it does
  3. lineage emission on vs off (a bench-only no-op publisher): throughput ratio, from the
     gateway's CPU per call at the same rate (a single event loop's capacity is
     1 / CPU per call), and from the step searches when they ran
  4. LiteLLM proxy (in its own virtualenv bench/.venv/litellm) on the same upstream,
     under the same loads: added latency and throughput beside govledger's

Run from the repository root:  .venv/bin/python bench/gateway.py   (or `make bench-gateway`)
Flags: --duration-s, --rate, --single-rate, --skip-litellm, --quick (smoke run), --profile.
Prints each phase as it ends, then the figures table, the raw phases, and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import httpx
import orjson

from bench.common import (
    REPO_ROOT,
    cpu_count,
    cpu_seconds,
    interrupt_on_sigint_and_sigterm,
    percentile,
    rounded,
    top_functions,
)

MODEL = "gpt-4o-mini"  # priced in the gateway's catalogue; LiteLLM knows it too
TEAM = "bench"
FUND_USD = "100000"
UPSTREAM_DELAY_MS = 50.0
BAR_ADDED_P50_MS = 2.0
BAR_ADDED_P99_MS = 5.0
BAR_RATE_PER_S = 1_000.0
BAR_RATE_ADDED_P99_MS = 10.0
BAR_LINEAGE_RATIO = 0.9
MAX_INFLIGHT = 1_024
KEEPS_UP_RATIO = 0.97  # completions per second against the offered rate
KEEPS_UP_DRIFT_MS = 25.0  # median latency of the last fifth over the first fifth
SEARCH_STEP = 25.0
SEARCH_PROBES = 5
LITELLM_VENV = REPO_ROOT / "bench" / ".venv" / "litellm"
LITELLM_KEY = "sk-bench-" + secrets.token_hex(8)
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration-s", type=float, default=15.0, help="measured seconds a run")
    parser.add_argument("--rate", type=float, default=BAR_RATE_PER_S, help="calls/s, figure 2")
    parser.add_argument("--single-rate", type=float, default=20.0, help="calls/s, figure 1")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="unmeasured lead-in a run")
    parser.add_argument("--search-duration-s", type=float, default=6.0, help="a search probe")
    parser.add_argument("--skip-litellm", action="store_true", help="leave out figure 4")
    parser.add_argument("--skip-search", action="store_true", help="no step searches")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 3 s runs, no step searches"
    )
    parser.add_argument(
        "--profile", action="store_true", help="finally, cProfile the gateway at --rate"
    )
    args = parser.parse_args()
    if args.quick:
        args.skip_search = True
        args.duration_s = min(args.duration_s, 3.0)
        args.warmup_s = min(args.warmup_s, 1.0)
        args.search_duration_s = min(args.search_duration_s, 2.0)
    return args


# --- child processes ---------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the benchmark dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    group: bool  # leads its own process group (started here), so the group is signalled


class Children:
    """Every process this benchmark started; stopped in reverse order, always."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.log_path(name).open("ab")
        process = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run at spawn time
        )
        self.children.append(Child(name, process, log, group=True))
        return process

    def adopt(self, name: str, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        self.children.append(Child(name, process, log, group=False))

    def pid(self, name: str) -> int:
        return next(c.process.pid for c in self.children if c.name == name)

    def stop(self, name: str) -> None:
        for child in [c for c in self.children if c.name == name]:
            self._stop(child)
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            self._stop(child)
        self.children.clear()

    @staticmethod
    def _signal(child: Child, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if child.group:
                os.killpg(child.process.pid, signum)
            else:
                child.process.send_signal(signum)

    def _stop(self, child: Child) -> None:
        if child.process.poll() is None:
            self._signal(child, signal.SIGTERM)
            try:
                child.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._signal(child, signal.SIGKILL)
                child.process.wait()
        elif child.group:  # the leader is gone; make sure nothing it started lingers
            self._signal(child, signal.SIGKILL)
        child.log.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env() -> dict[str, str]:
    """This environment without any GOVLEDGER_* variable (the settings reject strays)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GOVLEDGER_")}


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in family:
                family.add(child)
                frontier.append(child)
    return sum(v for p in family if not math.isnan(v := cpu_seconds(p)))


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


# --- open-loop load ----------------------------------------------------------------------


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


# --- the benchmark -----------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    children: Children
    data_dir: Path
    bootstrap: str = ""
    upstream_url: str = ""
    admin_token: str = field(default_factory=lambda: "adm_" + secrets.token_urlsafe(24))
    gateway_url: str = ""
    gateway_name: str = ""
    key: str = ""
    litellm_url: str = ""
    phases: list[Phase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # --- processes ---

    def start_broker_and_upstream(self) -> None:
        from govledger.broker import start_tansu, wait_for_port
        from schemas.kafka import ensure_topics

        port = free_port()
        log = self.children.log_path("broker").open("ab")
        self.children.adopt("broker", start_tansu(port, log), log)
        self.bootstrap = f"127.0.0.1:{port}"
        asyncio.run(ensure_topics(self.bootstrap, 4))

        port = free_port()
        self.children.spawn(
            "upstream",
            [
                sys.executable,
                str(REPO_ROOT / "bench" / "upstream.py"),
                "--port",
                str(port),
                "--delay-ms",
                str(UPSTREAM_DELAY_MS),
            ],
            base_env(),
        )
        wait_for_port("127.0.0.1", port, 20)
        self.upstream_url = f"http://127.0.0.1:{port}/v1"

    def govledger_env(self, **extra: str) -> dict[str, str]:
        env = base_env()
        env.update(
            {
                "GOVLEDGER_KAFKA_BOOTSTRAP": self.bootstrap,
                "GOVLEDGER_DATA_DIR": str(self.data_dir),
                "GOVLEDGER_ADMIN_TOKEN": self.admin_token,
                "GOVLEDGER_LOG_LEVEL": "info",
            }
        )
        env.update(extra)
        return env

    def start_worker(self) -> None:
        """The stream worker: it turns fundings and settlements into the wallet balances
        the gateway's budget check reads (without it every call is budget_exhausted)."""
        env = self.govledger_env(GOVLEDGER_WORKER_WEB_PORT="0")
        self.children.spawn("worker", [sys.executable, "-m", "govledger", "worker"], env)

    def start_gateway(self, lineage: str, profile: Path | None = None) -> None:
        from govledger.runtime import wait_for_http

        port = free_port()
        env = self.govledger_env(
            GOVLEDGER_GATEWAY_PORT=str(port),
            GOVLEDGER_UPSTREAM_BASE_URL=self.upstream_url,
            GOVLEDGER_UPSTREAM_MODELS=MODEL,
            GOVLEDGER_UPSTREAM_API_KEY="sk-upstream-bench",
        )
        argv = [sys.executable, str(REPO_ROOT / "bench" / "gateway_runner.py")]
        argv += ["--lineage", lineage]
        if profile is not None:
            argv += ["--profile", str(profile)]
        self.gateway_name = f"gateway-lineage-{lineage}"
        process = self.children.spawn(self.gateway_name, argv, env)
        self.gateway_url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{self.gateway_url}/healthz", 60, process)

    def stop_gateway(self) -> None:
        self.children.stop(self.gateway_name)

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(
            method,
            f"{self.gateway_url}{path}",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
            **kwargs,
        )
        if response.status_code >= 400:
            raise RuntimeError(f"admin {method} {path}: {response.status_code} {response.text}")
        return response.json()

    def issue_key_and_fund(self) -> None:
        self.key = self.admin("POST", "/v1/admin/keys", json={"team": TEAM})["key"]
        self.admin("POST", "/v1/admin/wallets/fund", json={"team": TEAM, "usd": FUND_USD})
        funded = int(FUND_USD) * 1_000_000_000
        deadline = time.monotonic() + 120
        while True:
            balance = self.admin("GET", "/v1/admin/wallets/balance", params={"team": TEAM})
            if int(balance["balance_nanousd"]) >= funded:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not publish the funded balance in 120 s")
            if self.children.children and any(
                c.process.poll() is not None for c in self.children.children
            ):
                dead = [c.name for c in self.children.children if c.process.poll() is not None]
                raise RuntimeError(f"{dead} exited; see {self.children.log_dir}")
            time.sleep(0.2)

    # --- runs ---

    def watchers(self, target: str) -> dict[str, Callable[[], float]]:
        """CPU readers: the process under test first, then the rest for context."""
        watch: dict[str, Callable[[], float]] = {}
        for child in self.children.children:
            if child.name == "litellm":
                pid = child.process.pid
                watch["litellm"] = lambda pid=pid: tree_cpu_seconds(pid)
            else:
                watch[child.name] = lambda pid=child.process.pid: cpu_seconds(pid)
        watch["load generator"] = lambda: cpu_seconds(os.getpid())
        assert target in watch, f"no process {target}"
        return watch

    def run(
        self,
        label: str,
        target: str,
        rate: float,
        duration_s: float,
        *,
        quiet: bool = False,
        probe: bool = False,
    ) -> Phase:
        import uvloop

        if target == "upstream":
            url, headers = f"{self.upstream_url}/chat/completions", {}
        elif target == "litellm":
            url = f"{self.litellm_url}/v1/chat/completions"
            headers = {"Authorization": f"Bearer {LITELLM_KEY}"}
        else:
            url = f"{self.gateway_url}/v1/chat/completions"
            headers = {"Authorization": f"Bearer {self.key}"}
        phase = Phase(label, target, rate, duration_s, abort_backlog_s=1.0 if probe else None)
        watch = self.watchers(target)
        uvloop.run(open_loop(phase, url, headers, self.args.warmup_s, watch))
        self.phases.append(phase)
        if not quiet:
            print(phase.line(), flush=True)
        self.settle(watch[target])
        return phase

    @staticmethod
    def settle(cpu: Callable[[], float], quiet_percent: float = 10.0) -> None:
        """Wait until the process under test is idle: an overloaded run leaves calls it
        keeps working on after the load generator gave up, and the next run must not
        inherit them."""
        deadline = time.monotonic() + 90
        quiet, before = 0, cpu()
        while quiet < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            now = cpu()
            quiet = quiet + 1 if (now - before) / 0.5 * 100 < quiet_percent else 0
            before = now

    def sanity(self, target: str) -> None:
        """One call: it must answer 200 with usage, or the benchmark measures errors."""
        if target == "upstream":
            url, auth = f"{self.upstream_url}/chat/completions", ""
        elif target == "litellm":
            url, auth = f"{self.litellm_url}/v1/chat/completions", LITELLM_KEY
        else:
            url, auth = f"{self.gateway_url}/v1/chat/completions", self.key
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        response = httpx.post(url, content=REQUEST_BODY, headers=headers, timeout=60)
        if response.status_code != 200 or "usage" not in response.json():
            raise RuntimeError(
                f"{target}: {response.status_code} {response.text[:300]} "
                f"(log: {self.children.log_path(target)})"
            )

    def search(self, label: str, target: str, lo: float, hi: float) -> tuple[float, list[Phase]]:
        """Highest rate between `lo` (kept up with, or 0) and `hi` (not) that `target` keeps
        up with, by bisection in steps of SEARCH_STEP; 0 if every probe failed."""
        probes: list[Phase] = []
        for _ in range(SEARCH_PROBES):
            mid = round((lo + hi) / 2 / SEARCH_STEP) * SEARCH_STEP
            if mid <= lo or mid >= hi:
                break
            phase = self.run(f"{label} probe", target, mid, self.args.search_duration_s, probe=True)
            probes.append(phase)
            if phase.keeps_up:
                lo = mid
            else:
                hi = mid
        return lo, probes

    # --- LiteLLM ---

    def ensure_litellm(self) -> Path | None:
        """The litellm command in bench/.venv/litellm, installed on first use; None (and a
        note saying why) if that fails."""
        exe = LITELLM_VENV / "bin" / "litellm"
        if exe.exists():
            return exe
        python = shutil.which("python3.11") or sys.executable
        log = self.children.log_path("litellm-install")
        print(f"[litellm] installing litellm[proxy] into {LITELLM_VENV} (log {log})", flush=True)
        with log.open("ab") as out:
            steps = [
                [python, "-m", "venv", str(LITELLM_VENV)],
                [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "litellm[proxy]"],
            ]
            for step in steps:
                try:
                    done = subprocess.run(
                        step, check=False, stdout=out, stderr=subprocess.STDOUT, timeout=900
                    )
                except (OSError, subprocess.TimeoutExpired) as exc:
                    self.notes.append(f"LiteLLM not installed: {' '.join(step)}: {exc}")
                    return None
                if done.returncode != 0:
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                    self.notes.append(
                        f"LiteLLM not installed: `{' '.join(step)}` exited {done.returncode}: "
                        + " | ".join(tail)
                    )
                    return None
        if not exe.exists():
            self.notes.append(f"LiteLLM not installed: no {exe} after pip install")
            return None
        return exe

    def start_litellm(self, exe: Path) -> bool:
        """LiteLLM proxy (one worker) on the same upstream; False (with a note) on failure."""
        port = free_port()
        config = self.data_dir / "litellm.json"  # JSON is YAML: no YAML writer needed
        config.write_text(
            json.dumps(
                {
                    "model_list": [
                        {
                            "model_name": MODEL,
                            "litellm_params": {
                                "model": f"openai/{MODEL}",
                                "api_base": self.upstream_url,
                                "api_key": "sk-upstream-bench",
                            },
                        }
                    ],
                    "litellm_settings": {"drop_params": True, "set_verbose": False},
                    "general_settings": {"master_key": LITELLM_KEY},
                },
                indent=2,
            )
        )
        env = base_env()
        env.update(
            {
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch from the internet
                "LITELLM_LOG": "ERROR",
                "LITELLM_MODE": "PRODUCTION",
                "LITELLM_TELEMETRY": "False",
            }
        )
        argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--num_workers", "1"]
        process = self.children.spawn("litellm", argv, env)
        self.litellm_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = self.children.log_path("litellm").read_text(errors="replace")
                self.notes.append(
                    f"LiteLLM exited with {process.returncode} at start: "
                    + " | ".join(tail.strip().splitlines()[-3:])
                )
                self.children.stop("litellm")
                return False
            try:
                if httpx.get(f"{self.litellm_url}/health/liveliness", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.notes.append("LiteLLM did not answer /health/liveliness within 180 s")
        self.children.stop("litellm")
        return False


def litellm_version() -> str:
    python = LITELLM_VENV / "bin" / "python"
    try:
        done = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def added(gateway: Phase | None, direct: Phase | None, q: float) -> float:
    if gateway is None or direct is None:
        return math.nan
    return gateway.pct(q) - direct.pct(q)


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "NOT met")


def benchmark(bench: Bench) -> dict[str, Any]:
    args = bench.args
    dur = args.duration_s
    figures: dict[str, Any] = {}
    rows: list[tuple[str, str, str, str]] = []

    litellm_exe = None
    if not args.skip_litellm:
        litellm_exe = bench.ensure_litellm()  # before anything runs: it may take minutes

    busy, total = machine_busy_seconds()
    time.sleep(2)
    busy_after, total_after = machine_busy_seconds()
    background = (busy_after - busy) / (total_after - total)
    figures["machine_busy_before_start_percent"] = rounded(background * 100, 1)
    print(
        f"[setup] machine busy before anything started: {background * 100:.0f}% of "
        f"{cpu_count()} CPUs (other work on this machine shares them with the benchmark)",
        flush=True,
    )
    started = time.perf_counter()
    bench.start_broker_and_upstream()
    bench.start_worker()
    bench.start_gateway("on")
    bench.issue_key_and_fund()
    for target in ("upstream", bench.gateway_name):
        bench.sanity(target)
    print(
        f"[setup] broker, worker, upstream ({UPSTREAM_DELAY_MS:g} ms) and gateway up, key "
        f"funded in {time.perf_counter() - started:.1f}s (logs in {bench.children.log_dir})",
        flush=True,
    )
    gw_on = bench.gateway_name

    # --- 1. added latency at one client --------------------------------------------------
    single = args.single_rate
    direct_1 = bench.run("1 direct", "upstream", single, dur)
    gateway_1 = bench.run("1 gateway", gw_on, single, dur)
    p50_added = added(gateway_1, direct_1, 50)
    p99_added = added(gateway_1, direct_1, 99)
    ok_1 = gateway_1.errors == 0
    rows.append(
        (
            f"1. added p50 @ {single:g}/s",
            f"<= {BAR_ADDED_P50_MS:g} ms",
            f"{p50_added:.2f} ms",
            verdict(ok_1 and p50_added <= BAR_ADDED_P50_MS),
        )
    )
    rows.append(
        (
            f"1. added p99 @ {single:g}/s",
            f"<= {BAR_ADDED_P99_MS:g} ms",
            f"{p99_added:.2f} ms",
            verdict(ok_1 and p99_added <= BAR_ADDED_P99_MS),
        )
    )
    figures["added_p50_ms_single"] = rounded(p50_added, 2)
    figures["added_p99_ms_single"] = rounded(p99_added, 2)

    # --- 2. one gateway process at --rate ------------------------------------------------
    rate = args.rate
    direct_2 = bench.run("2 direct", "upstream", rate, dur)
    gateway_2 = bench.run("2 gateway", gw_on, rate, dur)
    p99_added_2 = added(gateway_2, direct_2, 99)
    met_2 = gateway_2.keeps_up and p99_added_2 <= BAR_RATE_ADDED_P99_MS and rate >= BAR_RATE_PER_S
    rows.append(
        (
            f"2. one process @ {rate:g}/s",
            f">= {BAR_RATE_PER_S:g}/s, 0 errors, p99 added <= {BAR_RATE_ADDED_P99_MS:g} ms",
            f"{gateway_2.achieved_per_s:.0f}/s answered, {gateway_2.errors} errors, "
            f"p99 added {p99_added_2:.2f} ms",
            verdict(met_2),
        )
    )
    figures["rate_achieved_per_s"] = rounded(gateway_2.achieved_per_s, 1)
    figures["rate_errors"] = gateway_2.errors
    figures["rate_added_p50_ms"] = rounded(added(gateway_2, direct_2, 50), 2)
    figures["rate_added_p99_ms"] = rounded(p99_added_2, 2)
    figures["rate_keeps_up"] = gateway_2.keeps_up
    on_best = rate if gateway_2.keeps_up else math.nan
    lineage_rate = rate
    if not gateway_2.keeps_up and not args.skip_search:
        on_best, probes = bench.search("2 gateway", gw_on, 0.0, rate)
        at_best = f"{on_best:g}/s"
        if on_best > 0:
            probe = next(p for p in probes if p.rate == on_best)
            direct_best = bench.run("2 direct at best", "upstream", on_best, args.search_duration_s)
            at_best += (
                f" (p50 added {added(probe, direct_best, 50):.2f} ms, "
                f"p99 added {added(probe, direct_best, 99):.2f} ms)"
            )
            lineage_rate = on_best
        rows.append(("2. highest rate without errors", "(info)", at_best, "n/a"))
        figures["highest_sustained_per_s"] = on_best

    # --- 3. lineage on vs off ------------------------------------------------------------
    # Compared where the gateway keeps up: --rate, else the highest rate found, else the
    # single-client rate.
    if gateway_2.keeps_up:
        on_3 = gateway_2
    elif on_best > 0:
        on_3 = bench.run("3 gateway lineage on", gw_on, lineage_rate, dur)
        if not on_3.keeps_up:  # the search's probe was shorter: step down once
            lineage_rate = max(round(lineage_rate * 0.75 / SEARCH_STEP) * SEARCH_STEP, 25.0)
            on_3 = bench.run("3 gateway lineage on", gw_on, lineage_rate, dur)
    else:
        lineage_rate, on_3 = single, gateway_1
    bench.stop_gateway()
    bench.start_gateway("off")
    gw_off = bench.gateway_name
    bench.sanity(gw_off)
    off_1 = bench.run("3 gateway lineage off", gw_off, single, dur)
    rows.append(
        (
            f"3. added @ {single:g}/s, lineage off",
            "(info)",
            f"p50 {added(off_1, direct_1, 50):.2f} ms, p99 {added(off_1, direct_1, 99):.2f} ms "
            f"(on: {p50_added:.2f} / {p99_added:.2f} ms)",
            "n/a",
        )
    )
    figures["lineage_off_added_p50_ms_single"] = rounded(added(off_1, direct_1, 50), 2)
    figures["lineage_off_added_p99_ms_single"] = rounded(added(off_1, direct_1, 99), 2)
    off_3 = off_1
    if lineage_rate != single:
        off_3 = bench.run("3 gateway lineage off", gw_off, lineage_rate, dur)
    cpu_on, cpu_off = on_3.cpu_ms_per_call(gw_on), off_3.cpu_ms_per_call(gw_off)
    ratio_cpu = cpu_off / cpu_on
    rows.append(
        (
            "3. lineage on/off throughput",
            f">= {BAR_LINEAGE_RATIO:g}",
            f"{ratio_cpu:.3f} = CPU/call off {cpu_off:.3f} ms / on {cpu_on:.3f} ms "
            f"@ {lineage_rate:g}/s",
            verdict(on_3.keeps_up and off_3.keeps_up and ratio_cpu >= BAR_LINEAGE_RATIO),
        )
    )
    figures["lineage_ratio_cpu_capacity"] = rounded(ratio_cpu, 3)
    figures["lineage_on_cpu_ms_per_call"] = rounded(cpu_on, 3)
    figures["lineage_off_cpu_ms_per_call"] = rounded(cpu_off, 3)
    figures["lineage_off_added_p99_ms"] = rounded(added(off_3, direct_2, 99), 2)
    if 0 < on_best < rate and off_3.keeps_up:
        # The on gateway's highest rate came from a search: search the off one as well.
        probe = bench.run(
            "3 gateway lineage off probe", gw_off, rate, args.search_duration_s, probe=True
        )
        off_best, more = rate, "+"
        if not probe.keeps_up:
            off_best, _ = bench.search("3 gateway lineage off", gw_off, lineage_rate, rate)
            more = ""
        ratio_rate = on_best / off_best
        rows.append(
            (
                "3. (highest rates w/o errors)",
                f">= {BAR_LINEAGE_RATIO:g}",
                f"{ratio_rate:.3f}{'-' if more else ''} = on {on_best:g}/s / "
                f"off {off_best:g}/s{more}",
                verdict(ratio_rate >= BAR_LINEAGE_RATIO and (None if more else True)),
            )
        )
        figures["lineage_ratio_highest_rates"] = rounded(ratio_rate, 3)
    bench.stop_gateway()

    # --- 4. LiteLLM on the same upstream -------------------------------------------------
    if litellm_exe is not None and bench.start_litellm(litellm_exe):
        try:
            bench.sanity("litellm")
        except (RuntimeError, httpx.HTTPError) as exc:
            bench.notes.append(f"LiteLLM answered wrongly, figure 4 left out: {exc}")
            bench.children.stop("litellm")
        else:
            version = litellm_version()
            lite_1 = bench.run("4 litellm", "litellm", single, dur)
            lite_2 = bench.run("4 litellm", "litellm", rate, dur)
            rows.append(
                (
                    f"4. LiteLLM {version} added @ {single:g}/s",
                    "(beside 1.)",
                    f"p50 {added(lite_1, direct_1, 50):.2f} ms, "
                    f"p99 {added(lite_1, direct_1, 99):.2f} ms, {lite_1.errors} errors, "
                    f"{lite_1.cpu_ms_per_call('litellm'):.3f} ms CPU/call (govledger "
                    f"{p50_added:.2f} / {p99_added:.2f} ms, "
                    f"{gateway_1.cpu_ms_per_call(gw_on):.3f} ms CPU/call)",
                    "n/a",
                )
            )
            rows.append(
                (
                    f"4. LiteLLM @ {rate:g}/s",
                    "(beside 2.)",
                    f"{lite_2.achieved_per_s:.0f}/s answered, {lite_2.errors} errors, "
                    f"p99 added {added(lite_2, direct_2, 99):.2f} ms "
                    f"(govledger {gateway_2.achieved_per_s:.0f}/s, {gateway_2.errors} errors, "
                    f"{p99_added_2:.2f} ms)",
                    "n/a",
                )
            )
            figures["litellm_version"] = version
            figures["litellm_added_p50_ms_single"] = rounded(added(lite_1, direct_1, 50), 2)
            figures["litellm_added_p99_ms_single"] = rounded(added(lite_1, direct_1, 99), 2)
            figures["litellm_rate_achieved_per_s"] = rounded(lite_2.achieved_per_s, 1)
            figures["litellm_rate_errors"] = lite_2.errors
            figures["litellm_rate_added_p99_ms"] = rounded(added(lite_2, direct_2, 99), 2)
            figures["litellm_cpu_ms_per_call_single"] = rounded(
                lite_1.cpu_ms_per_call("litellm"), 3
            )
            if not lite_2.keeps_up and not args.skip_search:
                lite_best, _ = bench.search("4 litellm", "litellm", 0.0, rate)
                rows.append(
                    (
                        "4. LiteLLM highest rate w/o errors",
                        "(beside 2.)",
                        f"{lite_best:g}/s (govledger {on_best:g}/s)",
                        "n/a",
                    )
                )
                figures["litellm_highest_sustained_per_s"] = lite_best
            bench.children.stop("litellm")
    elif args.skip_litellm:
        bench.notes.append("LiteLLM left out (--skip-litellm)")

    # --- optional profile of the gateway under load --------------------------------------
    profile_rows: list[str] = []
    if args.profile:
        stats = bench.data_dir / "gateway.prof"
        bench.start_gateway("on", profile=stats)
        # Half the compared rate: cProfile about doubles the CPU a call costs, and the
        # profile should show a gateway that keeps up, not one drowning in its backlog.
        profiled_rate = max(round(lineage_rate / 2 / SEARCH_STEP) * SEARCH_STEP, 10.0)
        bench.run("profile gateway (cProfile)", bench.gateway_name, profiled_rate, dur)
        bench.stop_gateway()
        profile_rows = top_functions(str(stats), 30)  # pstats.Stats reads the file
        kept = REPO_ROOT / "bench" / "results"
        kept.mkdir(exist_ok=True)
        shutil.copy(stats, kept / "gateway.prof")
        bench.notes.append(f"profile stats kept in {kept / 'gateway.prof'}")

    return {"figures": figures, "rows": rows, "profile": profile_rows}


def report(bench: Bench, outcome: dict[str, Any], result: dict[str, Any]) -> None:
    print()
    print("== phases (latency from each call's scheduled send time) ==")
    names = ("upstream", "load generator", "broker", "worker")
    header = (
        f"{'phase':28} {'rate/s':>7} {'calls':>6} {'err':>4} {'answered/s':>10} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>8} {'CPU% tgt':>8} {'ms/call':>7} "
        f"{'CPU% up/load/broker/worker':>26} {'busy%':>5} keeps up"
    )
    print(header)
    for phase in bench.phases:
        others = "/".join(f"{phase.cpu_percent(n):.0f}" if n in phase.cpu_s else "-" for n in names)
        print(
            f"{phase.label:28} {phase.rate:7g} {len(phase.shots) + phase.shed:6} "
            f"{phase.errors:4} {phase.achieved_per_s:10.1f} {phase.pct(50):7.2f} "
            f"{phase.pct(99):7.2f} {max(phase.latencies_ms, default=math.nan):8.2f} "
            f"{phase.cpu_percent(phase.target):8.1f} "
            f"{phase.cpu_ms_per_call(phase.target):7.3f} {others:>26} "
            f"{phase.machine_busy * 100:5.0f} {'yes' if phase.keeps_up else 'NO'}"
        )
    if outcome["profile"]:
        print("\n== gateway profile (cProfile, by own time) ==\n tottime  cumtime     calls")
        print("\n".join(outcome["profile"]))
    print()
    print("== figures ==")
    rows = [("figure", "bar", "measured", "result"), *outcome["rows"]]
    widths = [max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)]
    print(f"{'figure':{widths[0]}}  {'bar':{widths[1]}}  result   measured")
    for figure, bar, measured, met in outcome["rows"]:
        print(f"{figure:{widths[0]}}  {bar:{widths[1]}}  {met:7}  {measured}")
    for note in bench.notes:
        print(f"note: {note}")
    print()
    print(json.dumps(result, separators=(",", ":"), default=str))


def main() -> int:
    args = parse_args()
    interrupt_on_sigint_and_sigterm()
    data_dir = Path(tempfile.mkdtemp(prefix="govledger-gwbench-"))
    bench = Bench(args, Children(data_dir), data_dir)
    result: dict[str, Any] = {
        "machine": {
            "cpus": cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": " ".join(sys.argv),
    }
    started = time.perf_counter()
    keep_logs = True
    try:
        outcome = benchmark(bench)
        keep_logs = False
    except KeyboardInterrupt:
        print("interrupted; stopping everything started", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.children.stop_all()
        if keep_logs:
            print(f"logs kept in {data_dir}", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    result["figures"] = outcome["figures"]
    result["phases"] = [p.summary() for p in bench.phases]
    result["notes"] = bench.notes
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    report(bench, outcome, result)
    shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
