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
  1. added latency at one client (default 20 calls/s): gateway p50/p99 minus direct p50/p99;
     the gateway's CPU per call over the bare upstream's at that rate (and at --rate when
     the gateway keeps up there), and the gateway's CPU with no calls (bench/gateway_hotpath.py);
     beside it, at the same rates, the least a Python proxy spends a call
     (bench/floor_proxy.py): its CPU per call over the upstream's, and the gateway's over it
  2. one gateway process at --rate (default 1,000/s): no errors, keeps up, p99 added;
     if it does not sustain that rate, a short step search for the highest rate it does
  3. lineage emission on vs off (a bench-only no-op publisher): throughput ratio, from the
     gateway's CPU per call at the same rate (a single event loop's capacity is
     1 / CPU per call), and from the step searches when they ran
  4. LiteLLM proxy (in its own virtualenv bench/.venv/litellm) on the same upstream,
     under the same loads: added latency and throughput beside govledger's
  5. the lineage outbox (schemas.outbox): gateway CPU per call with it minus without it
     (bench/gateway_runner.py --lineage plain), at one client's rate (bench/outbox.py
     measures the same in-process, without the noise of a shared machine)
  6. environment variants of the gateway of 1 (ENV_VARIANTS: tracing on, spans sent over
     OTLP/HTTP to a local receiver, bench/otlp_sink.py; Prometheus metrics off, so minus
     what they cost): gateway CPU per call with the
     variant minus without it, at one client's rate (bench/gateway_cpu.py measures the
     same in-process)
  7. one gateway per core (bench/gateway_scaling.py): with 1 and 2 gateway processes on
     one port, the highest rate with p99 added <= 10 ms and the CPU per call
  8. govledger and LiteLLM side by side (bench/gateway_overload.py): CPU per call, the
     highest rate at p99 added <= 10 ms, and offered 5x capacity: goodput and how fast
     the rest is refused (503 p50/p99)

Run from the repository root:  .venv/bin/python bench/gateway.py   (or `make bench-gateway`)
Flags: --duration-s, --rate, --single-rate, --skip-litellm, --skip-overload, --quick (smoke
run), --profile.
Prints each phase as it ends, then the figures table, the raw phases, and one JSON line.

This module holds the flags, the figures and the report; the parts it drives are
bench/gateway_procs.py (child processes, CPU read-outs), bench/gateway_load.py (the
open-loop load and a run's figures) and bench/gateway_stack.py (the processes under test,
the runs and the step search).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import (
    REPO_ROOT,
    cpu_count,
    interrupt_on_sigint_and_sigterm,
    rounded,
    top_functions,
)
from bench.gateway_hotpath import cpu_ratio, floor_rows, idle_cpu_ms_per_s, idle_row
from bench.gateway_load import Phase
from bench.gateway_overload import fair_and_overload
from bench.gateway_procs import Children, machine_busy_seconds
from bench.gateway_scaling import scaling_figure
from bench.gateway_stack import (
    SEARCH_STEP,
    UPSTREAM_DELAY_MS,
    Bench,
    litellm_version,
)

BAR_ADDED_P50_MS = 1.0  # issue 18 item 1 (before: 2 / 5 ms)
BAR_ADDED_P99_MS = 3.0
BAR_RATE_PER_S = 1_000.0
BAR_RATE_ADDED_P99_MS = 10.0
BAR_LINEAGE_RATIO = 0.9
# Figure 6: the gateway of figure 1 started with these environment overrides, each against
# figure 1's gateway (tracing off). "{otlp}" is the local OTLP receiver's URL.
ENV_VARIANTS: dict[str, dict[str, str]] = {
    "tracing": {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{otlp}/v1/traces"},
    # Metrics are on in figure 1's gateway: this figure is minus what they cost per call.
    "metrics_off": {"GOVLEDGER_METRICS_ENABLED": "0"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration-s", type=float, default=15.0, help="measured seconds a run")
    parser.add_argument("--rate", type=float, default=BAR_RATE_PER_S, help="calls/s, figure 2")
    parser.add_argument("--single-rate", type=float, default=20.0, help="calls/s, figure 1")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="unmeasured lead-in a run")
    parser.add_argument("--search-duration-s", type=float, default=6.0, help="a search probe")
    parser.add_argument("--skip-litellm", action="store_true", help="leave out figure 4")
    parser.add_argument("--skip-search", action="store_true", help="no step searches")
    parser.add_argument("--skip-overload", action="store_true", help="leave out figure 8")
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
    bench.start_floor_proxy()
    for target in ("upstream", "floor", bench.gateway_name):
        bench.sanity(target)
    print(
        f"[setup] broker, worker, upstream ({UPSTREAM_DELAY_MS:g} ms) and gateway up, key "
        f"funded in {time.perf_counter() - started:.1f}s (logs in {bench.children.log_dir})",
        flush=True,
    )
    gw_on = bench.gateway_name
    # Issue 18: the gateway's CPU with no calls at all (idle timers and polls).
    idle_ms_per_s = idle_cpu_ms_per_s(bench.watchers(gw_on)[gw_on], min(args.duration_s, 5.0))
    figures["gateway_idle_cpu_ms_per_s"] = rounded(idle_ms_per_s, 1)

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
    row, ratio_figures = cpu_ratio("1.", gateway_1, gw_on, direct_1)  # issue 18: <= 4x
    rows += [row, idle_row(idle_ms_per_s, single)]
    figures.update(ratio_figures)
    floor_1 = bench.run("1 floor proxy", "floor", single, dur)
    more_rows, floor_figures = floor_rows("1.", floor_1, gateway_1, gw_on, direct_1)
    rows += more_rows
    figures.update(floor_figures)

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
    if gateway_2.keeps_up:
        row, ratio_figures = cpu_ratio("2.", gateway_2, gw_on, direct_2)
        rows.append(row)
        figures.update(ratio_figures)
        floor_2 = bench.run("2 floor proxy", "floor", rate, dur)
        more_rows, floor_figures = floor_rows("2.", floor_2, gateway_2, gw_on, direct_2)
        rows += more_rows
        figures.update(floor_figures)
    on_best = rate if gateway_2.keeps_up else math.nan
    lineage_rate = rate
    if not gateway_2.keeps_up and not args.skip_search:
        # The run above sent the broker a record for each call, refused ones too: the
        # search starts on a new one (Bench.renew_broker), as figure 3's lineage off does.
        bench.renew_broker("on")
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
        bench.renew_broker("on")  # on a new broker, as lineage off below
        on_3 = bench.run("3 gateway lineage on", gw_on, lineage_rate, dur)
        if not on_3.keeps_up:  # the search's probe was shorter: step down once
            lineage_rate = max(round(lineage_rate * 0.75 / SEARCH_STEP) * SEARCH_STEP, 25.0)
            on_3 = bench.run("3 gateway lineage on", gw_on, lineage_rate, dur)
    else:
        lineage_rate, on_3 = single, gateway_1
    bench.renew_broker("off")  # each figure group on a new broker (Bench.renew_broker)
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

    # --- 5. the outbox's cost per call -----------------------------------------------------
    # Lineage as before the outbox (a spool only while the broker is away) against the
    # gateway of 1, at one client's rate, where both keep up on a shared machine.
    bench.renew_broker("plain")
    gw_plain = bench.gateway_name
    bench.sanity(gw_plain)
    plain_1 = bench.run("5 gateway lineage without outbox", gw_plain, single, dur)
    cpu_on_1, cpu_plain = gateway_1.cpu_ms_per_call(gw_on), plain_1.cpu_ms_per_call(gw_plain)
    rows.append(
        (
            "5. outbox cost per call",
            "(info)",
            f"{(cpu_on_1 - cpu_plain) * 1000:.0f} us CPU = on {cpu_on_1:.3f} ms - without "
            f"outbox {cpu_plain:.3f} ms @ {single:g}/s; p99 added {p99_added:.2f} ms vs "
            f"{added(plain_1, direct_1, 99):.2f} ms",
            "n/a",
        )
    )
    figures["outbox_cpu_us_per_call"] = rounded((cpu_on_1 - cpu_plain) * 1000, 1)
    figures["lineage_plain_cpu_ms_per_call_single"] = rounded(cpu_plain, 3)
    figures["lineage_plain_added_p99_ms_single"] = rounded(added(plain_1, direct_1, 99), 2)
    bench.stop_gateway()

    # --- 6. environment variants: what each costs per call ---------------------------------
    for variant, overrides in ENV_VARIANTS.items():
        if any("{otlp}" in value for value in overrides.values()) and not bench.otlp_url:
            bench.start_otlp_sink()
        env = {name: value.format(otlp=bench.otlp_url) for name, value in overrides.items()}
        bench.renew_broker("on", variant=variant, env_overrides=env)
        gw_variant = bench.gateway_name
        bench.sanity(gw_variant)
        spans_before = bench.otlp_spans() if bench.otlp_url else 0
        run_6 = bench.run(f"6 gateway {variant}", gw_variant, single, dur)
        bench.stop_gateway()  # a gateway's last spans are sent as it stops
        cpu_variant = run_6.cpu_ms_per_call(gw_variant)
        spans = f"; {bench.otlp_spans() - spans_before} spans received" if bench.otlp_url else ""
        rows.append(
            (
                f"6. {variant}: cost per call",
                "(info)",
                f"{(cpu_variant - cpu_on_1) * 1000:.0f} us CPU = {variant} {cpu_variant:.3f} ms "
                f"- without {cpu_on_1:.3f} ms @ {single:g}/s; p99 added "
                f"{added(run_6, direct_1, 99):.2f} ms vs {p99_added:.2f} ms{spans}",
                "n/a",
            )
        )
        figures[f"{variant}_cpu_us_per_call"] = rounded((cpu_variant - cpu_on_1) * 1000, 1)
        figures[f"{variant}_added_p99_ms_single"] = rounded(added(run_6, direct_1, 99), 2)
    if bench.otlp_url:
        bench.children.stop("otlp-sink")

    # --- 7. one gateway per core: 1 and 2 processes (bench/gateway_scaling.py) -----------
    rows_7, figures_7 = scaling_figure(bench)
    rows += rows_7
    figures.update(figures_7)

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

    # --- 8. fair comparison and overload, both proxies (bench/gateway_overload.py) ---------
    if not args.skip_overload:
        section_rows, section = fair_and_overload(bench, direct_1, litellm_exe)
        rows += section_rows
        figures["fair_and_overload"] = section

    # --- optional profile of the gateway under load --------------------------------------
    profile_rows: list[str] = []
    if args.profile:
        stats = bench.data_dir / "gateway.prof"
        bench.renew_broker("on", profile=stats)
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
