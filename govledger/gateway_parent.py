"""`govledger gateway` with GOVLEDGER_GATEWAY_PROCESSES=N > 1: a parent that starts N
gateway processes on the one port (gateway/processes.py), restarts one that exits with
the restart policy of `govledger up` (govledger.supervision), and stops them all on
SIGTERM or SIGINT. It serves nothing itself. Under `govledger up` the stack starts the N
processes as parts of its own instead (govledger.runtime)."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import structlog

from gateway.processes import child_env, part_name
from govledger.supervision import CrashLoop, RestartPolicy, decide, how_it_ended

log = structlog.get_logger(__name__)

POLL_S = 0.1
STOP_GRACE_S = 30.0


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if this parent dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class GatewayProcesses:
    """N gateway processes, each restarted alone when it exits."""

    def __init__(self, processes: int, policy: RestartPolicy, environ: Mapping[str, str]) -> None:
        assert processes >= 1, "at least one process"
        self.processes = processes
        self.policy = policy
        self.environ = dict(environ)
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts_at_s: dict[int, list[float]] = {}
        self.stopping = threading.Event()

    def spawn(self, index: int) -> None:
        """Start gateway process `index` (its output goes where this process's goes)."""
        self.children[index] = subprocess.Popen(
            [sys.executable, "-m", "govledger", "gateway"],
            env=child_env(self.environ, self.processes, index),
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - the parent is single-threaded here
        )

    def supervise_once(self) -> str | None:
        """Restart the processes that exited; the reason to give up (a crash loop) or None."""
        for index, child in sorted(self.children.items()):
            if child.poll() is None or self.stopping.is_set():
                continue
            history = self.restarts_at_s.setdefault(index, [])
            now_s = time.monotonic()
            decision = decide(self.policy, part_name(index), history, now_s)
            ended = how_it_ended(child.returncode)
            if isinstance(decision, CrashLoop):
                return f"{decision.reason}; it last ended with {ended}"
            log.warning(
                "gateway process exited; restarting",
                process=index,
                ended=ended,
                restart=decision.number,
                delay_s=decision.delay_s,
            )
            history.append(now_s)
            if self.stopping.wait(decision.delay_s):
                return None
            self.spawn(index)
        return None

    def stop(self) -> None:
        """SIGTERM every process, SIGKILL those still running after the grace."""
        self.stopping.set()
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children.values():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def run(processes: int, policy: RestartPolicy, environ: Mapping[str, str]) -> int:
    """Serve with `processes` gateway processes until SIGTERM/SIGINT (0) or a crash loop (1)."""
    group = GatewayProcesses(processes, policy, environ)

    def request_stop(signum: int, frame: Any) -> None:
        group.stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    for index in range(1, processes + 1):
        group.spawn(index)
    log.info("gateway processes started", processes=processes)
    gave_up: str | None = None
    try:
        while gave_up is None and not group.stopping.wait(POLL_S):
            gave_up = group.supervise_once()
    finally:
        group.stop()
    if gave_up is not None:
        log.error(f"{gave_up}; stopping")
        return 1
    return 0
