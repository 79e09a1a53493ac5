"""Time, CPU and peak memory of one step of a growth benchmark (bench/growth.py), and of
another process (Linux /proc)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.common import cpu_seconds


def status_kib(pid: int | str, name: str) -> int:
    """A `/proc/<pid>/status` figure in KiB (VmRSS, VmHWM); 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def reset_peak() -> None:
    """Make this process's peak RSS (VmHWM) its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


@dataclass
class Step:
    """One measured step: wall and CPU seconds (this process, every thread), RSS before
    and peak RSS during it (MiB), and what the step returned."""

    label: str
    seconds: float
    cpu_s: float
    rss_before_mib: float
    peak_rss_mib: float
    result: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "seconds": round(self.seconds, 3),
            "cpu_s": round(self.cpu_s, 3),
            "rss_before_mib": round(self.rss_before_mib, 1),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "result": self.result,
        }


def measured(label: str, work: Callable[[], Any]) -> Step:
    """Run `work()` with this process's peak RSS reset first."""
    reset_peak()
    before = status_kib("self", "VmRSS") / 1024
    cpu = time.process_time()
    began = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - began
    cpu_s = time.process_time() - cpu
    peak = status_kib("self", "VmHWM") / 1024
    return Step(label, seconds, cpu_s, before, peak, result if isinstance(result, dict) else {})


def process_figures(pid: int) -> dict[str, float]:
    """CPU seconds, RSS and peak RSS (MiB) of another process."""
    return {
        "cpu_s": round(cpu_seconds(pid), 3),
        "rss_mib": round(status_kib(pid, "VmRSS") / 1024, 1),
        "peak_rss_mib": round(status_kib(pid, "VmHWM") / 1024, 1),
    }
