"""The gateway benchmark's fair comparison and overload figures (issue 18, items 7 and 3),
for govledger and the LiteLLM proxy (pinned: bench.gateway_stack.LITELLM_VERSION) on the
same upstream under the same open-loop load:

  8a. CPU per call at one client's rate (the process under test, all its threads and
      children), and the capacity it implies (1 / CPU per call: one event loop);
  8b. the highest rate each keeps up with at p99 added <= 10 ms (added: against the
      direct upstream's p99 at one client, measured in the same run), by bisection;
  8c. offered 5x its capacity (8b's rate when it found one, else 8a's): goodput (calls
      answered 200 within the latency bar, the direct p99 + 10 ms, per second) against
      the capacity (bar: >= 0.9x for
      govledger), and how fast the rest is refused: p50/p99 of the 503s' latency
      (govledger's admission limit answers 503 `overloaded` with Retry-After; LiteLLM
      has no such limit, so its excess shows as slow answers or timeouts).

On a machine of 2 CPUs the load generator takes a good share of one at 5x: the figures
are the machine's, noted with how busy it was. Driven by bench/gateway.py (section 8 of
`make bench-gateway`) or on its own, quicker:
  .venv/bin/python -m bench.gateway_overload --duration-s 5 --search-duration-s 3
and what a shed call costs, in-process:  .venv/bin/python -m bench.gateway_overload --in-process
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cpu_count, interrupt_on_sigint_and_sigterm, percentile, rounded
from bench.gateway_load import Phase
from bench.gateway_procs import Children, machine_busy_seconds
from bench.gateway_stack import SEARCH_STEP, Bench, litellm_version

OVERLOAD_FACTOR = 5.0
BAR_GOODPUT_RATIO = 0.9
BAR_ADDED_P99_MS = 10.0
SEARCH_PROBES = 5

Row = tuple[str, str, str, str]


def goodput_per_s(phase: Phase, bar_ms: float) -> float:
    """Calls answered 200 within `bar_ms` of their scheduled send, per scheduled second."""
    good = sum(1 for ms in phase.latencies_ms if ms <= bar_ms)
    return good / phase.duration_s


def refusal_ms(phase: Phase, q: float) -> float:
    """Percentile of the latency of the calls refused 503."""
    refused = [(s.returned - s.due) * 1000 for s in phase.shots if s.status == 503]
    return percentile(refused, q)


def send_lateness_ms(phase: Phase, q: float) -> float:
    """Percentile of how late the load generator sent its calls (its own event loop's
    lag): what of the latencies measured is the machine's, not the target's."""
    return percentile([(s.sent - s.due) * 1000 for s in phase.shots if not math.isnan(s.sent)], q)


def within_bar(phase: Phase, direct_p99_ms: float) -> bool:
    return phase.keeps_up and phase.pct(99) - direct_p99_ms <= BAR_ADDED_P99_MS


def search_within_bar(
    bench: Bench, target: str, hi: float, direct_p99_ms: float, probe_s: float
) -> float:
    """Highest rate below `hi` (in SEARCH_STEP steps) kept up with at p99 added <= the
    bar; 0 if none of the probes was."""
    lo = 0.0
    for _ in range(SEARCH_PROBES):
        mid = max(round((lo + hi) / 2 / SEARCH_STEP) * SEARCH_STEP, SEARCH_STEP)
        if mid <= lo or mid >= hi:
            break
        probe = bench.run(f"8b {target} probe", target, mid, probe_s, probe=True)
        if within_bar(probe, direct_p99_ms):
            lo = mid
        else:
            hi = mid
    return lo


def overload(
    bench: Bench, target: str, label: str, capacity: float, offered: int, direct_p99: float
) -> tuple[Row, dict[str, Any]]:
    """Figure 8c: `target` offered `offered` calls/s (5x its `capacity`)."""
    phase = bench.run(f"8c {label} at 5x", target, offered, bench.args.duration_s)
    bar_ms = direct_p99 + BAR_ADDED_P99_MS
    goodput = goodput_per_s(phase, bar_ms)
    refused = sum(1 for s in phase.shots if s.status == 503)
    failed = phase.errors - refused
    ratio = goodput / capacity
    met = ratio >= BAR_GOODPUT_RATIO and failed == 0
    row = (
        f"8c. {label} at 5x capacity",
        f">= {BAR_GOODPUT_RATIO:g}x capacity within the bar, rest refused at once",
        f"goodput {goodput:.0f}/s = {ratio:.2f}x of {capacity:.0f}/s offered "
        f"{offered}/s; {refused} refused 503 in p50 {refusal_ms(phase, 50):.1f} / p99 "
        f"{refusal_ms(phase, 99):.1f} ms; {failed} other errors or timeouts; answered "
        f"{phase.ok / phase.duration_s:.0f}/s ({phase.ok / phase.duration_s / capacity:.2f}x) "
        f"in p50 {phase.pct(50):.1f} / p99 {phase.pct(99):.1f} ms; load generator sent "
        f"p50 {send_lateness_ms(phase, 50):.1f} / p99 {send_lateness_ms(phase, 99):.1f} ms "
        f"late; machine {phase.machine_busy * 100:.0f}% busy",
        ("met" if met else "NOT met") if label == "govledger" else "n/a",
    )
    return row, {
        "overload_offered_per_s": offered,
        "overload_goodput_per_s": rounded(goodput, 1),
        "overload_goodput_ratio": rounded(ratio, 3),
        "overload_refused": refused,
        "overload_refusal_p50_ms": rounded(refusal_ms(phase, 50), 2),
        "overload_refusal_p99_ms": rounded(refusal_ms(phase, 99), 2),
        "overload_other_errors": failed,
        "overload_answered_per_s": rounded(phase.ok / phase.duration_s, 1),
        "overload_answered_p50_ms": rounded(phase.pct(50), 2),
        "overload_answered_p99_ms": rounded(phase.pct(99), 2),
        "overload_send_late_p50_ms": rounded(send_lateness_ms(phase, 50), 2),
        "overload_send_late_p99_ms": rounded(send_lateness_ms(phase, 99), 2),
        "overload_machine_busy_percent": rounded(phase.machine_busy * 100, 1),
    }


def measure(
    bench: Bench, target: str, label: str, direct_1: Phase, search: bool
) -> tuple[list[Row], dict[str, Any]]:
    """Figures 8a-8c for one target already started and answering."""
    args = bench.args
    single = bench.run(f"8a {label}", target, args.single_rate, args.duration_s)
    cpu_ms = single.cpu_ms_per_call(target)
    if math.isnan(cpu_ms) and single.ok and target in single.cpu_s:
        # It did not keep up (a starved machine): its CPU over the window per answer.
        cpu_ms = single.cpu_s[target] / single.ok * 1000
        bench.notes.append(f"{label} did not keep up at {args.single_rate:g}/s: 8a is rough")
    capacity = 1000 / cpu_ms if cpu_ms > 0 else math.nan
    direct_p99 = direct_1.pct(99)
    rows: list[Row] = [
        (
            f"8a. {label} CPU per call",
            "(info)",
            f"{cpu_ms:.3f} ms @ {args.single_rate:g}/s = capacity {capacity:.0f}/s",
            "n/a",
        )
    ]
    figures: dict[str, Any] = {
        "cpu_ms_per_call": rounded(cpu_ms, 3),
        "capacity_per_s": rounded(capacity, 1),
    }
    if math.isnan(capacity):
        return rows, figures
    if search:
        best = search_within_bar(bench, target, 2 * capacity, direct_p99, args.search_duration_s)
        rows.append((f"8b. {label} calls/s at p99 added <= 10 ms", "(info)", f"{best:g}/s", "n/a"))
        figures["rate_within_bar_per_s"] = best
        if best > 0:  # what it serves within the bar: 1 / CPU per call at one client's
            capacity = best  # rate counts the idle CPU, and ignores the cores it shares
    # On a starved machine 1 / CPU per call is far above what the process gets: a
    # capacity given on the command line (--capacity-per-s) replaces it for 8c.
    capacity = getattr(args, "capacity_per_s", None) or capacity
    offered = round(OVERLOAD_FACTOR * capacity)
    figures["overload_capacity_per_s"] = rounded(capacity, 1)
    row, more = overload(bench, target, label, capacity, offered, direct_p99)
    rows.append(row)
    figures.update(more)
    return rows, figures


def fair_and_overload(
    bench: Bench, direct_1: Phase, litellm_exe: Path | None
) -> tuple[list[Row], dict[str, Any]]:
    """Section 8 for govledger (a fresh gateway, lineage on) and LiteLLM, one after the
    other on the same upstream; the gateway of the caller is stopped first."""
    search = not bench.args.skip_search
    bench.renew_broker("on", variant="overload")
    bench.sanity(bench.gateway_name)
    rows, figures = measure(bench, bench.gateway_name, "govledger", direct_1, search)
    every: dict[str, Any] = {"govledger": figures}
    bench.stop_gateway()
    if "overload_offered_per_s" in figures and not getattr(bench.args, "skip_admission_off", 0):
        # The contrast: the same gateway and load with the admission limit off.
        off = {"GOVLEDGER_ADMISSION_TARGET_DELAY_MS": "0"}
        bench.renew_broker("on", variant="admission-off", env_overrides=off)
        row, every["govledger_admission_off"] = overload(
            bench,
            bench.gateway_name,
            "govledger, admission off",
            figures["overload_capacity_per_s"],
            figures["overload_offered_per_s"],
            direct_1.pct(99),
        )
        rows.append(row)
        bench.stop_gateway()
    if litellm_exe is not None and bench.start_litellm(litellm_exe):
        try:
            bench.sanity("litellm")
            lite_rows, lite = measure(bench, "litellm", "LiteLLM", direct_1, search)
            rows += lite_rows
            every["litellm"] = {"version": litellm_version(), **lite}
        finally:
            bench.children.stop("litellm")
    return rows, every


async def refusal_cpu_us(calls: int, reps: int = 3) -> dict[str, float]:
    """In-process (tests/component/support.py's gateway, client and upstream in one
    process, as bench/gateway_cpu.py): process CPU per call, best of `reps`, for a served
    call (sim provider), a call shed by the admission limit (503 overloaded, its lineage
    record and access line included) and an unrouted 404 (aiohttp and client alone)."""
    # Here, not at the top: the component harness is heavy and only this mode needs it.
    from govledger.logs import configure
    from tests.component.support import MemoryPublisher, running_component

    configure("info", "gateway", "json")  # access lines made and written, as in production
    body = {"model": "sim-small", "messages": [{"role": "user", "content": "Hello ledger"}]}
    found: dict[str, float] = {}
    async with running_component(Path(tempfile.mkdtemp(prefix="govledger-shed-"))) as stack:
        stack.publish_balance("bench", "1000")
        # The harness hands each lineage record back to the gateway's views, which verify
        # and decode it only to drop it (a gateway consumes no lineage): not a gateway cost.
        if isinstance(stack.gateway.lineage, MemoryPublisher):
            stack.gateway.lineage.subscribers.clear()
        headers = {"Authorization": f"Bearer {(await stack.create_key('bench'))['key']}"}

        async def per_call(name: str, path: str, status: int) -> None:
            best = math.inf
            for _ in range(reps):
                started = time.process_time()
                for _ in range(calls):
                    reply = await stack.client.post(path, json=body, headers=headers)
                    await reply.read()
                    assert reply.status == status, (name, reply.status)
                best = min(best, (time.process_time() - started) / calls * 1e6)
            found[name] = best

        await per_call("served", "/v1/chat/completions", 200)
        await per_call("404", "/v1/no-such-route", 404)
        stack.gateway.admission.admit = lambda: False  # type: ignore[method-assign]
        await per_call("shed", "/v1/chat/completions", 503)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration-s", type=float, default=10.0, help="measured seconds a run")
    parser.add_argument("--single-rate", type=float, default=20.0, help="calls/s for 8a")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="unmeasured lead-in")
    parser.add_argument("--search-duration-s", type=float, default=4.0, help="a 8b probe")
    parser.add_argument("--skip-search", action="store_true", help="no 8b")
    parser.add_argument("--skip-litellm", action="store_true", help="govledger only")
    parser.add_argument(
        "--capacity-per-s", type=float, help="8c's capacity instead of 1 / CPU per call"
    )
    parser.add_argument(
        "--skip-admission-off", action="store_true", help="no 8c contrast without admission"
    )
    parser.add_argument(
        "--in-process", action="store_true", help="only the CPU of a shed call, in-process"
    )
    args = parser.parse_args()
    if args.in_process:  # the access lines go to stderr
        cpu = asyncio.run(refusal_cpu_us(500))
        print(json.dumps({"cpu_us_per_call": {k: round(v, 1) for k, v in cpu.items()}}))
        return 0
    interrupt_on_sigint_and_sigterm()
    data_dir = Path(tempfile.mkdtemp(prefix="govledger-overload-"))
    bench = Bench(args, Children(data_dir), data_dir)
    busy, total = machine_busy_seconds()
    time.sleep(2)
    busy_after, total_after = machine_busy_seconds()
    background = (busy_after - busy) / (total_after - total) * 100
    print(f"[setup] machine busy before start: {background:.0f}% of {cpu_count()} CPUs")
    try:
        litellm_exe = None if args.skip_litellm else bench.ensure_litellm()
        bench.start_broker_and_upstream()
        bench.sanity("upstream")
        direct_1 = bench.run("8 direct", "upstream", args.single_rate, args.duration_s)
        rows, figures = fair_and_overload(bench, direct_1, litellm_exe)
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        bench.children.stop_all()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    print("\n== figures ==")
    for figure, bar, measured, met in rows:
        print(f"{figure:44} {met:7} {measured}  (bar: {bar})")
    for note in bench.notes:
        print(f"note: {note}")
    result = {
        "command": " ".join(sys.argv),
        "machine_busy_before_start_percent": rounded(background, 1),
        "direct_p99_ms_single": rounded(direct_1.pct(99), 2),
        "figures": figures,
        "phases": [p.summary() for p in bench.phases],
    }
    print(json.dumps(result, separators=(",", ":"), default=str))
    shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
