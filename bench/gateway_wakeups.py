"""Where a gateway's CPU and wake-ups go at one client's pace, thread by thread, beside the
floor proxy (bench/floor_proxy.py) on the same upstream.

At 20 calls/s a call finds the process cold: each time a thread of it wakes (a socket
ready, a timer, another thread's hand-over, a lock) it pays for caches and the
scheduler again. So besides CPU a call this counts each thread's voluntary context
switches a call (/proc/<pid>/task/<tid>/status): the event loop's wake-ups, and those of
the threads beside it (librdkafka's, the report, tailer and fsync threads). Then the same
over an idle stretch, a second at a time.

Run:  .venv/bin/python -m bench.gateway_wakeups [--rate 20] [--duration-s 15] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import interrupt_on_sigint_and_sigterm
from bench.gateway_procs import Children
from bench.gateway_stack import Bench

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
Threads = dict[str, tuple[str, float, int]]  # tid: (name, CPU seconds, voluntary switches)


def threads_of(pid: int) -> Threads:
    """Each thread's name, CPU seconds and voluntary context switches so far."""
    found: Threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stat_file:
                stat = stat_file.read()
            with open(f"/proc/{pid}/task/{tid}/status") as status_file:
                status = status_file.read()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        switches = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary")
        )
        label = "event loop" if tid == str(pid) else name
        found[tid] = (label, (int(fields[11]) + int(fields[12])) / TICKS_PER_S, switches)
    return found


def by_thread(before: Threads, after: Threads, per: float) -> dict[str, tuple[float, float]]:
    """CPU ms and wake-ups per `per` (calls, or seconds) of each kind of thread."""
    totals: dict[str, tuple[float, float]] = {}
    for tid, (label, cpu_s, switches) in after.items():
        _, cpu_before_s, switches_before = before.get(tid, (label, 0.0, 0))
        cpu_ms, wakeups = totals.get(label, (0.0, 0.0))
        totals[label] = (
            cpu_ms + (cpu_s - cpu_before_s) * 1000 / per,
            wakeups + (switches - switches_before) / per,
        )
    return totals


def report(title: str, totals: dict[str, tuple[float, float]], unit: str) -> None:
    print(f"{title}")
    print(f"  {'thread':24} {'CPU ms/' + unit:>12} {'wake-ups/' + unit:>14}")
    rows = sorted(totals.items(), key=lambda row: -row[1][0])
    for label, (cpu_ms, wakeups) in rows:
        if cpu_ms >= 0.001 or wakeups >= 0.05:
            print(f"  {label:24} {cpu_ms:12.3f} {wakeups:14.2f}")
    cpu_ms = sum(c for c, _ in totals.values())
    wakeups = sum(w for _, w in totals.values())
    print(f"  {'all':24} {cpu_ms:12.3f} {wakeups:14.2f}", flush=True)


@contextmanager
def stack(args: argparse.Namespace) -> Iterator[Bench]:
    data_dir = Path(tempfile.mkdtemp(prefix="govledger-wakeups-"))
    bench = Bench(args, Children(data_dir), data_dir)
    try:
        bench.start_broker_and_upstream()
        bench.start_floor_proxy()
        bench.start_worker()
        bench.start_gateway("on")
        bench.issue_key_and_fund()
        for target in ("floor", bench.gateway_name):
            bench.sanity(target)
        yield bench
    finally:
        bench.children.stop_all()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="calls/s")
    parser.add_argument("--duration-s", type=float, default=15.0, help="measured seconds a run")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="lead-in a run (counted)")
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle stretch measured")
    parser.add_argument("--runs", type=int, default=1, help="runs of floor then gateway")
    args = parser.parse_args()
    interrupt_on_sigint_and_sigterm()
    with stack(args) as bench:
        calls = args.rate * (args.duration_s + args.warmup_s)  # the lead-in's calls count too
        for run in range(1, args.runs + 1):
            for target in ("floor", bench.gateway_name):
                pid = bench.children.pid(target)
                before = threads_of(pid)
                bench.run(f"run {run}: {target}", target, args.rate, args.duration_s)
                totals = by_thread(before, threads_of(pid), calls)
                report(f"{target} at {args.rate:g} calls/s, run {run}", totals, "call")
        pid = bench.children.pid(bench.gateway_name)
        before = threads_of(pid)
        time.sleep(args.idle_s)
        totals = by_thread(before, threads_of(pid), args.idle_s)
        report(f"{bench.gateway_name} idle for {args.idle_s:g} s", totals, "s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
