"""Issue 18 item 1's CPU figures of the gateway benchmark (bench/gateway.py): the gateway's
CPU per call against the bare upstream's, and the gateway's CPU with no traffic at all.

The bare upstream (bench/upstream.py) is measured in the same run at the same rate: its
own process's CPU per call while the load generator calls it directly. The gateway's idle
CPU (timers, the control topics' long polls, the outbox's fsync loop) is spread over few
calls at one client's rate: at 20 calls/s, 20 ms of CPU a second is 1 ms a call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from bench.common import rounded
from bench.gateway_load import Phase

BAR_CPU_RATIO_UPSTREAM = 4.0
IDLE_WINDOW_S = 5.0


def idle_cpu_ms_per_s(cpu_seconds: Callable[[], float], window_s: float = IDLE_WINDOW_S) -> float:
    """Milliseconds of CPU a second a process spends while nothing calls it."""
    before = cpu_seconds()
    time.sleep(window_s)
    return (cpu_seconds() - before) / window_s * 1000


def cpu_ratio(
    label: str, gateway: Phase, gateway_name: str, direct: Phase
) -> tuple[tuple[str, str, str, str], dict[str, Any]]:
    """The figure row and JSON figures of the gateway's CPU per call over the bare
    upstream's, both at `direct.rate` (the gateway's run must be at the same rate)."""
    assert gateway.rate == direct.rate, "compared at the same rate"
    gateway_ms = gateway.cpu_ms_per_call(gateway_name)
    upstream_ms = direct.cpu_ms_per_call("upstream")
    ratio = gateway_ms / upstream_ms if upstream_ms > 0 else math.nan
    met = None if math.isnan(ratio) else ratio <= BAR_CPU_RATIO_UPSTREAM
    row = (
        f"{label} gateway/upstream CPU @ {direct.rate:g}/s",
        f"<= {BAR_CPU_RATIO_UPSTREAM:g}x",
        f"{ratio:.2f}x = {gateway_ms:.3f} / {upstream_ms:.3f} ms CPU per call",
        "n/a" if met is None else ("met" if met else "NOT met"),
    )
    key = f"cpu_ratio_upstream_{direct.rate:g}_per_s"
    figures = {
        key: rounded(ratio, 2),
        f"gateway_cpu_ms_per_call_{direct.rate:g}_per_s": rounded(gateway_ms, 3),
        f"upstream_cpu_ms_per_call_{direct.rate:g}_per_s": rounded(upstream_ms, 3),
    }
    return row, figures


def floor_rows(
    label: str, floor: Phase, gateway: Phase, gateway_name: str, direct: Phase
) -> tuple[list[tuple[str, str, str, str]], dict[str, Any]]:
    """What the least a Python proxy costs (bench/floor_proxy.py) says of the bar, at the
    same rate: the floor's CPU per call over the upstream's, and the gateway's over the
    floor's. The 4x bar leaves the gateway 4 / (floor ratio) times a bare proxy."""
    assert floor.rate == gateway.rate == direct.rate, "compared at the same rate"
    floor_ms = floor.cpu_ms_per_call("floor")
    upstream_ms = direct.cpu_ms_per_call("upstream")
    gateway_ms = gateway.cpu_ms_per_call(gateway_name)
    floor_ratio = floor_ms / upstream_ms if upstream_ms > 0 else math.nan
    over_floor = gateway_ms / floor_ms if floor_ms > 0 else math.nan
    rate = f"{direct.rate:g}/s"
    rows = [
        (
            f"{label} floor proxy/upstream CPU @ {rate}",
            "(info)",
            f"{floor_ratio:.2f}x = {floor_ms:.3f} / {upstream_ms:.3f} ms CPU per call",
            "n/a",
        ),
        (
            f"{label} gateway/floor proxy CPU @ {rate}",
            f"(bar leaves {BAR_CPU_RATIO_UPSTREAM / floor_ratio:.2f}x)",
            f"{over_floor:.2f}x",
            "n/a",
        ),
    ]
    figures = {
        f"floor_cpu_ms_per_call_{direct.rate:g}_per_s": rounded(floor_ms, 3),
        f"floor_ratio_upstream_{direct.rate:g}_per_s": rounded(floor_ratio, 2),
        f"gateway_ratio_floor_{direct.rate:g}_per_s": rounded(over_floor, 2),
    }
    return rows, figures


def idle_row(idle_ms_per_s: float, rate: float) -> tuple[str, str, str, str]:
    """The idle CPU as a figure row, with what it adds to a call at one client's rate."""
    return (
        "1. gateway idle CPU (no calls)",
        "(info)",
        f"{idle_ms_per_s:.1f} ms CPU/s = {idle_ms_per_s / rate:.3f} ms a call @ {rate:g}/s",
        "n/a",
    )
