"""`govledger up`: the whole stack as child processes — broker (embedded unless
GOVLEDGER_KAFKA_BOOTSTRAP is set), sink with the store (chDB unless
GOVLEDGER_CLICKHOUSE_DSN is set), stream worker, gateway — supervised (a part that exits
is restarted, see govledger.supervision), and a clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import IO

import structlog

from gateway.processes import child_env, part_index, part_name, resolve_processes, usable_cores
from govledger.admin_token import resolve_admin_token
from govledger.broker import start_tansu
from govledger.supervision import CrashLoop, RestartPolicy, decide, how_it_ended
from schemas.authn import resolve_keyring
from schemas.kafka import ensure_topics
from schemas.settings import (
    ConsoleSettings,
    GatewaySettings,
    NotifySettings,
    RuntimeSettings,
    env_name,
    load,
)
from streams.intake import READY_PATH

STOP_GRACE_S = 30.0
SUPERVISE_EVERY_S = 0.1
# The parts that run on the broker, in start order; a restarted broker restarts them all.
CLIENT_PARTS = ("sink", "worker", "gateway")
NOTIFIER_PARTS = ("notifier",)

log = structlog.get_logger(__name__)


class CrashLoopError(RuntimeError):
    """A part kept exiting: the stack gives up on it (the message says which and why)."""


class Stopping(RuntimeError):  # noqa: N818 - a signal to unwind, not a fault
    """The stack is stopping: a restart in progress is abandoned."""


@dataclass
class Child:
    """A started service."""

    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]


def wait_for_http(
    url: str,
    timeout_s: float,
    process: subprocess.Popen[bytes],
    abort: threading.Event | None = None,
) -> None:
    """Block until url answers 200, or fail if the process died first (or `abort` is set)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if abort is not None and abort.is_set():
            raise Stopping(f"stopped while waiting for {url}")
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} was up")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback URL
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not up after {timeout_s}s")


def wait_for_gateway(
    url: str,
    index: int | None,
    timeout_s: float,
    process: subprocess.Popen[bytes],
    abort: threading.Event | None = None,
) -> None:
    """Block until the gateway's /healthz answers 200 from process `index` (None: any).
    The processes share the port and the kernel picks one per connection, so each try
    (a new connection) reaches process `index` with a chance of 1 in N."""
    deadline = time.monotonic() + timeout_s
    while True:
        wait_for_http(url, max(deadline - time.monotonic(), 0.1), process, abort)
        if index is None:
            return
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback URL
                if json.loads(response.read()).get("process") == index:
                    return
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gateway process {index} not up at {url} after {timeout_s}s")
        time.sleep(0.02)


class Stack:
    """The embedded runtime's children, started in dependency order, stopped in reverse;
    once `start_supervising` runs, a child that exits is restarted (see `supervise_once`)."""

    def __init__(self, settings: RuntimeSettings, environ: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = dict(os.environ if environ is None else environ)
        self.children: list[Child] = []
        self.bootstrap = settings.kafka_bootstrap
        self.log_dir = settings.data_path / "logs"
        self.policy = RestartPolicy(
            settings.restart_limit,
            settings.restart_window_s,
            settings.restart_backoff_s,
            settings.restart_backoff_max_s,
        )
        # Per part: when the supervisor restarted it (monotonic seconds), and how many
        # restarts are done (counted once the part is ready again).
        self.restarts_at_s: dict[str, list[float]] = {}
        self.restarts: Counter[str] = Counter()
        # One line per restart, as logged: which part, how it ended, which restart.
        self.restart_log: list[str] = []
        # Why supervision gave up (a crash loop); the stack is then left to be stopped.
        self.gave_up: str | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        # GOVLEDGER_GATEWAY_PROCESSES: gateway processes on one port, each a part that is
        # restarted alone ("gateway", "gateway-2", …; see gateway/processes.py).
        configured = load(GatewaySettings, self.environ).gateway_processes
        self.gateway_processes = resolve_processes(configured, usable_cores())
        gateways = tuple(part_name(i) for i in range(1, self.gateway_processes + 1))
        self.client_parts = ("sink", "worker", *gateways)  # CLIENT_PARTS, N gateways

    def _open_log(self, name: str) -> IO[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return (self.log_dir / f"{name}.log").open("ab")

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.environ.items() if k != env_name("broker_port")}
        env[env_name("kafka_bootstrap")] = self.bootstrap
        env[env_name("clickhouse_dsn")] = self.settings.effective_clickhouse_dsn
        env[env_name("data_dir")] = str(self.settings.data_path)
        env[env_name("admin_token")] = resolve_admin_token(self.settings, create=True)
        # Made once here, before the children start, so none of them races to make it.
        resolve_keyring(self.settings.data_path, self.settings.root_secret_file, create=True)
        env.pop(env_name("start_timeout_s"), None)
        return env

    def _spawn(self, name: str) -> Child:
        log_file = self._open_log(name)
        env = self._child_env()
        if name == "console":
            # The console acts with its users' keys only: it is not given the admin token.
            env.pop(env_name("admin_token"))
            # The Overview reads the worker's /metrics (commit stalls) on the port `up` gave it.
            web_port = env.get(env_name("worker_web_port"), "6066")
            worker_url = f"http://127.0.0.1:{web_port}" if web_port != "0" else ""
            env.setdefault(env_name("console_worker_urls"), worker_url)
        index = part_index(name)
        if index and self.gateway_processes > 1:
            env = child_env(env, self.gateway_processes, index)
        elif index:  # one gateway: it serves alone (not 0, "by cores", again)
            env[env_name("gateway_processes")] = "1"
        process = subprocess.Popen(
            [sys.executable, "-m", "govledger", "gateway" if index else name],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        child = Child(name, process, log_file)
        self._put(child)
        return child

    def _put(self, child: Child) -> None:
        """Add a child, or put it in the place of the one of that name it replaces."""
        for i, known in enumerate(self.children):
            if known.name == child.name:
                known.log.close()
                self.children[i] = child
                return
        self.children.append(child)

    def _start_broker(self) -> None:
        log_file = self._open_log("broker")
        broker = start_tansu(self.settings.broker_port, log_file)
        self._put(Child("broker", broker, log_file))
        self.bootstrap = f"127.0.0.1:{self.settings.broker_port}"
        asyncio.run(ensure_topics(self.bootstrap, self.settings.topic_partitions))

    def _launch(self, names: tuple[str, ...]) -> None:
        """Start these parts (of CLIENT_PARTS, in its order) and wait until each is ready:
        the sink answers before anything else starts (it restores an empty broker first),
        then the worker and the gateway start together."""
        timeout = self.settings.start_timeout_s
        started = {}
        for name in names:
            started[name] = self._spawn(name)
            if name == "sink":
                wait_for_http(
                    f"{self.settings.query_url}/ping",
                    timeout,
                    started[name].process,
                    self._stopping,
                )
        url = f"{self.settings.gateway_url}/healthz"
        for name, child in started.items():
            if index := part_index(name):
                wanted = index if self.gateway_processes > 1 else None
                wait_for_gateway(url, wanted, timeout, child.process, self._stopping)
        if "worker" in started:
            worker = started["worker"].process
            web_port = int(self.environ.get(env_name("worker_web_port"), "6066"))
            if web_port > 0:
                url = f"http://127.0.0.1:{web_port}{READY_PATH}"
                wait_for_http(url, timeout, worker, self._stopping)
            if worker.poll() is not None:
                raise RuntimeError("the stream worker exited at start; see its log")
        if "console" in started:
            url = f"{load(ConsoleSettings, self.environ).console_url}/healthz"
            wait_for_http(url, timeout, started["console"].process, self._stopping)

    def start(self) -> None:
        """Start every part and wait until each is ready."""
        try:
            if not self.bootstrap:
                self._start_broker()
            else:
                asyncio.run(ensure_topics(self.bootstrap, self.settings.topic_partitions))
            # The console (pages over the admin and query APIs) needs no broker: a new
            # broker does not restart it. It starts first and is waited for last, so its
            # start overlaps the others'. GOVLEDGER_CONSOLE_PORT=0 runs none.
            console = load(ConsoleSettings, self.environ)
            early = self._spawn("console") if console.console_port else None
            self._launch(self.client_parts)
            # The notifier (alerts to webhooks) waits for no one and no one waits for it;
            # a new broker restarts it with the others (it is in NOTIFIER_PARTS).
            if load(NotifySettings, self.environ).notifier_enabled:
                self._launch(NOTIFIER_PARTS)
            if early is not None:
                url = f"{console.console_url}/healthz"
                wait_for_http(url, self.settings.start_timeout_s, early.process, self._stopping)
        except BaseException:
            self.stop()
            raise

    def child(self, name: str) -> Child:
        """The running (or last started) child of that name."""
        with self._lock:
            return next(c for c in self.children if c.name == name)

    def kill(self, name: str, signum: int = signal.SIGKILL) -> int:
        """Send a signal to a part (tests kill parts with it); its process id."""
        with self._lock:
            process = self.child(name).process
            process.send_signal(signum)
            return process.pid

    # --- supervision ------------------------------------------------------------------

    def supervise_once(self) -> list[str]:
        """Restart the parts that exited (a dead broker first, with every part on it);
        the names restarted. Raises CrashLoopError when one keeps exiting."""
        with self._lock:
            dead = [c for c in self.children if c.process.poll() is not None]
            broker = [c for c in dead if c.name == "broker"]
            for child in broker or dead:
                self._restart(child)
            return [c.name for c in broker or dead]

    def _restart(self, child: Child) -> None:
        now_s = time.monotonic()
        history = self.restarts_at_s.setdefault(child.name, [])
        ended = how_it_ended(child.process.returncode)
        decision = decide(self.policy, child.name, history, now_s)
        if isinstance(decision, CrashLoop):
            log.error("stopping: a part keeps exiting", part=child.name, ended=ended)
            raise CrashLoopError(f"{decision.reason}; it last ended with {ended}")
        line = (
            f"{child.name} ended with {ended}; restart {decision.number} "
            f"in {decision.delay_s:g} s (see {self.log_dir / child.name}.log)"
        )
        log.warning(line, part=child.name, ended=ended, restart=decision.number)
        self.restart_log.append(line)
        history.append(now_s)
        if self._stopping.wait(decision.delay_s):
            raise Stopping("stopped before the restart")
        if child.name == "broker":
            self._restart_broker()
        else:
            self._launch((child.name,))
        self.restarts[child.name] += 1

    def _restart_broker(self) -> None:
        """The embedded broker keeps its topics in memory: a new one is empty. Every part
        on it stops (a gateway keeps what it could not send in its spool), the broker
        starts, and the parts start again as at `start`: the sink first, which restores
        the admin log and the balances from the store before it answers."""
        on_broker = (*self.client_parts, *NOTIFIER_PARTS)
        clients = [c for c in self.children if c.name in on_broker]
        self._stop_children(clients, self.settings.restart_stop_grace_s)
        self._start_broker()
        self._launch(self.client_parts)
        if any(c.name in NOTIFIER_PARTS for c in clients):
            self._launch(NOTIFIER_PARTS)

    def _stop_children(self, children: list[Child], grace_s: float) -> None:
        """SIGTERM all of them, then SIGKILL those still running after grace_s."""
        for child in children:
            if child.process.poll() is None:
                child.process.terminate()
        deadline = time.monotonic() + grace_s
        for child in children:
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("part did not stop in time; killing it", part=child.name)
                child.process.kill()
                child.process.wait()

    def supervise(self) -> None:
        """Restart parts that exit until `stop`, or until a crash loop (then `gave_up`
        holds the reason and the parts are left for `stop`)."""
        while not self._stopping.wait(SUPERVISE_EVERY_S):
            try:
                self.supervise_once()
            except Stopping:
                return
            except CrashLoopError as exc:
                self.gave_up = str(exc)
                return
            except (RuntimeError, TimeoutError, OSError) as exc:
                # A part that failed to come back is seen dead (or not ready) next round;
                # one that never becomes ready ends supervision with the reason.
                if isinstance(exc, TimeoutError):
                    self.gave_up = f"a restarted part did not become ready: {exc}"
                    return
                log.warning("restart failed", error=str(exc))

    def start_supervising(self) -> None:
        """Supervise on a thread of this process (stopped by `stop`)."""
        assert self._supervisor is None, "one supervisor per stack"
        self._supervisor = threading.Thread(target=self.supervise, name="supervisor", daemon=True)
        self._supervisor.start()

    def stop_restarting(self) -> None:
        """From now on a part that exits stays down (safe in a signal handler)."""
        self._stopping.set()

    def stop(self) -> None:
        """Stop in reverse order: producers first, then the sink drains, then the broker."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
        with self._lock:
            for child in reversed(self.children):
                if child.process.poll() is None:
                    child.process.terminate()
                    try:
                        child.process.wait(timeout=STOP_GRACE_S)
                    except subprocess.TimeoutExpired:
                        child.process.kill()
                        child.process.wait()
                child.log.close()
            self.children.clear()
