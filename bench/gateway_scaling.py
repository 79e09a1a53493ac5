"""Figure 7 of the gateway benchmark: one gateway per core (GOVLEDGER_GATEWAY_PROCESSES).

The gateway runs as `govledger gateway` with 1 and then 2 processes on one port, on the
benchmark's broker, worker and upstream. For each: the highest rate (steps of
SEARCH_STEP, bisection up to --rate) it keeps up with, without errors, with p99 added
<= 10 ms over a direct call at the same rate (measured beside it); and its CPU per call
(every gateway process and their parent, read from /proc as one tree) at one client's
rate and at that highest rate. Scaling = highest rate with 2 / with 1; on a machine
whose cores are shared with the load generator, the upstream and the worker, expect well
under 2 (the machine's load is printed with every run).

Keep-alive connections stay with the process that accepted them: at one client's rate
the load generator's few connections may all reach one process (which changes nothing
in the CPU per call); at high rates it opens dozens, which the kernel spreads.

`--quick` (bench/gateway.py) runs one short phase each at the single rate and 5 x it,
without searching.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

from bench.common import cpu_seconds, rounded
from bench.gateway_load import MODEL, Phase, open_loop
from bench.gateway_procs import free_port, tree_cpu_seconds
from bench.gateway_stack import SEARCH_PROBES, SEARCH_STEP, Bench

BAR_ADDED_P99_MS = 10.0
PROCESS_COUNTS = (1, 2)


def start_processes(bench: Bench, processes: int) -> str:
    """`govledger gateway` with `processes` processes; its name among the children."""
    from govledger.runtime import wait_for_gateway

    port = free_port()
    env = bench.govledger_env(
        GOVLEDGER_GATEWAY_PORT=str(port),
        GOVLEDGER_UPSTREAM_BASE_URL=bench.upstream_url,
        GOVLEDGER_UPSTREAM_MODELS=MODEL,
        GOVLEDGER_UPSTREAM_API_KEY="sk-upstream-bench",
        GOVLEDGER_OUTBOX_RESEND_AFTER_S="3600",  # no sink runs here (as in start_gateway)
        GOVLEDGER_GATEWAY_PROCESSES=str(processes),
    )
    shutil.rmtree(bench.data_dir / "outbox", ignore_errors=True)
    name = f"gateway-x{processes}"
    process = bench.children.spawn(name, [sys.executable, "-m", "govledger", "gateway"], env)
    bench.gateway_url = f"http://127.0.0.1:{port}"
    bench.gateway_name = name
    for index in range(1, processes + 1):
        wanted = index if processes > 1 else None
        wait_for_gateway(f"{bench.gateway_url}/healthz", wanted, 90, process)
    return name


def run(bench: Bench, label: str, target: str, rate: float, duration_s: float) -> Phase:
    """Bench.run, with the gateway's CPU read as its process tree (parent and children)."""
    import uvloop

    watch: dict[str, Callable[[], float]] = {}
    for child in bench.children.children:
        read = tree_cpu_seconds if child.name == target else cpu_seconds
        watch[child.name] = functools.partial(read, child.process.pid)
    watch["load generator"] = lambda: cpu_seconds(os.getpid())
    if target == "upstream":
        url, headers = f"{bench.upstream_url}/chat/completions", {}
    else:
        url = f"{bench.gateway_url}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {bench.key}"}
    probe = "probe" in label
    phase = Phase(label, target, rate, duration_s, abort_backlog_s=1.0 if probe else None)
    uvloop.run(open_loop(phase, url, headers, bench.args.warmup_s, watch))
    bench.phases.append(phase)
    print(phase.line(), flush=True)
    bench.settle(watch[target])
    return phase


class Search:
    """The highest rate a target keeps up with at p99 added <= the bar, direct calls at
    each probed rate measured once and shared by both targets."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.direct_p99_ms: dict[float, float] = {}

    def direct(self, rate: float, duration_s: float) -> float:
        if rate not in self.direct_p99_ms:
            phase = run(self.bench, "7 direct probe", "upstream", rate, duration_s)
            self.direct_p99_ms[rate] = phase.pct(99)
        return self.direct_p99_ms[rate]

    def passes(self, phase: Phase) -> bool:
        added = phase.pct(99) - self.direct(phase.rate, phase.duration_s)
        return phase.keeps_up and added <= BAR_ADDED_P99_MS

    def highest(self, label: str, target: str, hi: float) -> tuple[float, Phase | None]:
        lo, best = 0.0, None
        duration_s = self.bench.args.search_duration_s
        for _ in range(SEARCH_PROBES + 1):
            mid = round((lo + hi) / 2 / SEARCH_STEP) * SEARCH_STEP
            if mid <= lo or mid >= hi:
                break
            phase = run(self.bench, f"{label} probe", target, mid, duration_s)
            if self.passes(phase):
                lo, best = mid, phase
            else:
                hi = mid
        return lo, best


def scaling_figure(bench: Bench) -> tuple[list[tuple[str, str, str, str]], dict[str, Any]]:
    """Figure 7's rows and figures (run after the others; stops what it started)."""
    args = bench.args
    single = args.single_rate
    rows: list[tuple[str, str, str, str]] = []
    figures: dict[str, Any] = {}
    search = Search(bench)
    highest: dict[int, float] = {}
    for processes in PROCESS_COUNTS:
        bench.renew_broker()  # each count on a new broker, key and funds (Bench.renew_broker)
        bench.stop_gateway()
        name = start_processes(bench, processes)
        try:
            bench.sanity(name)
            at_single = run(bench, f"7 gateway x{processes}", name, single, args.duration_s)
            cpu_single = at_single.cpu_ms_per_call(name)
            if args.skip_search:
                rate = single * 5
                phase: Phase | None = run(
                    bench, f"7 gateway x{processes}", name, rate, args.duration_s
                )
                best = rate if phase is not None and search.passes(phase) else math.nan
            else:
                best, phase = search.highest(f"7 gateway x{processes}", name, args.rate)
        finally:
            bench.children.stop(name)
        highest[processes] = best
        cpu_best = phase.cpu_ms_per_call(name) if phase is not None else math.nan
        rows.append(
            (
                f"7. {processes} gateway process{'es' if processes > 1 else ''}",
                "(info)",
                f"highest rate w/ p99 added <= {BAR_ADDED_P99_MS:g} ms: {best:g}/s"
                f"{' (quick: one rate tried)' if args.skip_search else ''}; CPU/call "
                f"{cpu_single:.3f} ms @ {single:g}/s, {cpu_best:.3f} ms @ {best:g}/s",
                "n/a",
            )
        )
        figures[f"processes_{processes}_highest_per_s"] = rounded(best, 1)
        figures[f"processes_{processes}_cpu_ms_per_call_single"] = rounded(cpu_single, 3)
        figures[f"processes_{processes}_cpu_ms_per_call_highest"] = rounded(cpu_best, 3)
    ratio = highest[2] / highest[1] if highest[1] else math.nan
    rows.append(("7. scaling, 2 processes / 1", "(info)", f"{ratio:.2f}x", "n/a"))
    figures["processes_scaling_2_over_1"] = rounded(ratio, 2)
    return rows, figures


def main() -> int:
    """Figure 7 alone, on a broker, worker and upstream of its own:
    `python -m bench.gateway_scaling [--quick] [--rate R] [--search-duration-s S]`."""
    import tempfile
    from pathlib import Path

    from bench.common import interrupt_on_sigint_and_sigterm
    from bench.gateway import parse_args  # here: bench/gateway.py imports this module
    from bench.gateway_procs import Children, machine_busy_seconds

    args = parse_args()
    interrupt_on_sigint_and_sigterm()
    data_dir = Path(tempfile.mkdtemp(prefix="govledger-gwscaling-"))
    bench = Bench(args, Children(data_dir), data_dir)
    busy, total = machine_busy_seconds()
    try:
        bench.start_broker_and_upstream()
        rows, figures = scaling_figure(bench)
    except KeyboardInterrupt:
        return 130
    finally:
        bench.children.stop_all()
    busy_after, total_after = machine_busy_seconds()
    for row in rows:
        print(" | ".join(row))
    figures["machine_busy_percent"] = rounded((busy_after - busy) / (total_after - total) * 100, 1)
    print(figures)
    shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
