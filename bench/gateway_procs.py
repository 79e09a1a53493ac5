"""Child processes of the gateway benchmark (started in their own process groups, stopped in
reverse order, always) and the CPU read-outs of a process tree and of the whole machine."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.common import REPO_ROOT, cpu_seconds


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
