"""Figures for growth (issue 18, item 5), each size in processes of its own:

- start-up with N keys and N key wallets restored from the store into an empty broker:
  seconds to ready, CPU and peak RSS of the sink (which restores), the gateway and the
  stream worker (`bench/growth_fleet.py`), against N = 0 in the same run;
- `GET /v1/events?since=30d&group_by=team` and `govledger audit who` over N lineage rows
  (`bench/growth_store.py`), and an export of every row at one size (rows/s, peak RSS);
- the worker's wallets domain in-process with 1k, 10k, 100k wallets: memory a wallet and
  CPU a settlement (`bench/growth_worker.py`).

How each scales is printed after the figures: per 1,000 keys (from N = 0 to the largest
N), and per tenfold rows. The machine's load average is printed before and after.

    make bench-growth                      # keys 1k, 10k, 100k; rows 1M, 10M; export 1M
    .venv/bin/python bench/growth.py --quick   # keys 1k, 10k; rows 100k, 1M; export 100k
    .venv/bin/python bench/growth.py --part store --rows 1000000 --export-rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO_ROOT, interrupt_on_sigint_and_sigterm
from bench.gateway_procs import base_env

FULL_KEYS = (1_000, 10_000, 100_000)
FULL_ROWS = (1_000_000, 10_000_000)
QUICK_KEYS = (1_000, 10_000)
QUICK_ROWS = (100_000, 1_000_000)


def sizes(text: str) -> tuple[int, ...]:
    """`1000,10k,1M` as numbers."""
    out = []
    for given in text.split(","):
        part = given.strip().lower()
        factor = {"k": 1_000, "m": 1_000_000}.get(part[-1:], 1)
        out.append(int(float(part.rstrip("km")) * factor))
    return tuple(out)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def child_json(argv: list[str], log: Path) -> dict[str, Any]:
    """Run a benchmark module in a process of its own; its last stdout line, as JSON."""
    with log.open("ab") as err:
        done = subprocess.run(
            [sys.executable, "-m", *argv], cwd=REPO_ROOT, env=base_env(), check=True,
            stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


# --- start-up --------------------------------------------------------------------------------


def fleet(keys: tuple[int, ...], root: Path) -> list[dict[str, Any]]:
    results = []
    for n in (0, *keys):
        print(f"[fleet] {n:,} keys ... ({load()})", file=sys.stderr, flush=True)
        argv = ["bench.growth_fleet", "run", "--dir", str(root), "--keys", str(n)]
        results.append(child_json(argv, root / "fleet.log"))
        shutil.rmtree(root / f"fleet-{n}", ignore_errors=True)
        print(json.dumps(results[-1]), flush=True)
    return results


def report_fleet(results: list[dict[str, Any]]) -> None:
    print("\nstart-up on an empty broker, store holding N keys + N key wallets "
          "(+ 200 team wallets); spawn to ready, imports included")  # fmt: skip
    print(f"{'keys':>8} | {'sink ready s':>12} {'cpu s':>6} {'peak MiB':>8} | "
          f"{'gateway ready s':>15} {'cpu s':>6} {'peak MiB':>8} | "
          f"{'worker ready s':>14} {'peak MiB':>8} {'idle MiB':>8}")  # fmt: skip
    for r in results:
        s, g, w = r["sink"], r["gateway"], r["worker"]
        print(f"{r['keys']:>8,} | {s['ready_s']:>12.2f} {s['cpu_s']:>6.1f} "
              f"{s['peak_rss_mib']:>8.0f} | {g['ready_s']:>15.2f} {g['cpu_s']:>6.1f} "
              f"{g['peak_rss_mib']:>8.0f} | {w['ready_s']:>14.2f} {w['peak_rss_mib']:>8.0f} "
              f"{w['idle']['peak_rss_mib']:>8.0f}")  # fmt: skip
        known = (g.get("keys_known"), s.get("wallets_restored"))
        if known != (r["keys"], r["keys"] + 200):
            print(f"  !! gateway knew {known[0]} keys, sink restored {known[1]} wallets")
    base, top = results[0], results[-1]
    if top["keys"] == 0:
        return
    per_k = 1_000 / top["keys"]
    print(f"scaling, N = 0 to {top['keys']:,}, per 1,000 keys:")
    for name, label in (("sink", "sink (restore)"), ("gateway", "gateway"), ("worker", "worker")):
        top_p = top[name]["idle"] if name == "worker" else top[name]
        base_p = base[name]["idle"] if name == "worker" else base[name]
        print(f"  {label}: {(top[name]['ready_s'] - base[name]['ready_s']) * per_k * 1000:+.0f} "
              f"ms to ready, {(top[name]['cpu_s'] - base[name]['cpu_s']) * per_k * 1000:+.0f} "
              f"ms CPU, {(top_p['peak_rss_mib'] - base_p['peak_rss_mib']) * per_k:+.2f} MiB "
              f"peak RSS")  # fmt: skip


# --- the store --------------------------------------------------------------------------------


def store(rows: tuple[int, ...], export_rows: int, fmt: str, reps: int, root: Path) -> list[Any]:
    results = []
    for n in rows:
        print(f"[store] {n:,} lineage rows ... ({load()})", file=sys.stderr, flush=True)
        argv = ["bench.growth_store", "--rows", str(n), "--dir", str(root / f"store-{n}")]
        argv += ["--reps", str(reps)]
        if n == export_rows:
            argv += ["--export-format", fmt]
        results.append(child_json(argv, root / "store.log"))
        shutil.rmtree(root / f"store-{n}", ignore_errors=True)
        print(json.dumps(results[-1]), flush=True)
    if export_rows and export_rows not in rows:
        print(f"[store] export of {export_rows:,} rows ... ({load()})", file=sys.stderr)
        argv = ["bench.growth_store", "--rows", str(export_rows), "--reps", "1"]
        argv += ["--dir", str(root / "store-export"), "--export-format", fmt]
        results.append({**child_json(argv, root / "store.log"), "export_only": True})
        shutil.rmtree(root / "store-export", ignore_errors=True)
        print(json.dumps(results[-1]), flush=True)
    return results


def best(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each step's best run (least wall seconds)."""
    out: dict[str, dict[str, Any]] = {}
    for step in result["steps"]:
        kept = out.get(step["label"])
        if kept is None or step["seconds"] < kept["seconds"]:
            out[step["label"]] = step
    return out


def report_store(results: list[dict[str, Any]]) -> None:
    print("\nover N lineage rows (90 days, 8 tenants; best of the runs; CPU: the whole "
          "process, chDB's threads included; peak RSS: the process during the step)")  # fmt: skip
    exports = [(r["rows"], best(r).get("export events")) for r in results]
    results = [r for r in results if not r.get("export_only")]
    steps = [best(r) for r in results]
    labels = [label for label in steps[0] if label != "export events"]
    print(f"{'step':<36}" + "".join(f" | {r['rows']:>11,} rows s / cpu s / MiB" for r in results))
    for label in labels:
        cells = []
        for s in steps:
            step = s.get(label)
            text = " " * 30
            if step is not None:
                text = f"{step['seconds']:>10.3f} / {step['cpu_s']:>6.2f} / "
                text += f"{step['peak_rss_mib']:>6.0f}"
            cells.append(" | " + text)
        print(f"{label:<36}" + "".join(cells))
    sized = [(r["rows"], s) for r, s in zip(results, steps, strict=True) if "insert" in s]
    if len(sized) >= 2:
        (small, a), (large, b) = sized[0], sized[-1]
        print(f"scaling, {small:,} to {large:,} rows (x{large / small:g}):")
        for label in labels:
            if label in a and label in b and a[label]["seconds"] > 0:
                ratio = b[label]["seconds"] / a[label]["seconds"]
                cpu = b[label]["cpu_s"] / max(a[label]["cpu_s"], 1e-3)
                print(f"  {label}: x{ratio:.1f} time, x{cpu:.1f} CPU")
    for stored, export in exports:
        if export is not None:
            res = export["result"]
            print(f"export of {res['rows']:,} rows ({res['format']}, {res['bytes'] / 2**20:.0f} "
                  f"MiB): {res['rows'] / export['seconds']:,.0f} rows/s wall, "
                  f"{res['rows'] / export['cpu_s']:,.0f} rows per CPU second; peak RSS "
                  f"{export['peak_rss_mib']:.0f} MiB (before {export['rss_before_mib']:.0f}; "
                  f"store of {stored:,} rows)")  # fmt: skip


# --- the worker's wallets, in-process -----------------------------------------------------------


def worker(wallets: tuple[int, ...], root: Path) -> list[dict[str, Any]]:
    print(f"[worker] wallets {wallets} ... ({load()})", file=sys.stderr, flush=True)
    argv = ["bench.growth_worker", "--wallets", ",".join(str(w) for w in (1_000, *wallets))]
    with (root / "worker.log").open("ab") as err:
        done = subprocess.run(  # our own module
            [sys.executable, "-m", *argv], cwd=REPO_ROOT, env=base_env(), check=True,
            stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith(b"{")]


def report_worker(results: list[dict[str, Any]]) -> None:
    print("\nthe worker's wallets domain in-process (streams/wallets/agent.py): memory held "
          "(tracemalloc) and CPU per settlement in batches of 100")  # fmt: skip
    for r in results:
        print(f"{r['wallets']:>8,} wallets: {r['bytes_per_wallet']:,} bytes a wallet, RSS "
              f"+{r['rss_growth_mib']:.0f} MiB; {r['settle_us_per_record']:.0f} us CPU a "
              f"settlement ({r['settle_ms_per_batch']:.1f} ms a batch)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "fleet", "store", "worker"], default="all")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument("--keys", type=sizes, help="key counts, e.g. 1k,10k,100k")
    parser.add_argument("--wallets", type=sizes, help="in-process wallet counts (10k,100k)")
    parser.add_argument("--rows", type=sizes, help="lineage row counts, e.g. 1M,10M")
    parser.add_argument("--export-rows", type=sizes, help="rows of the export (one size)")
    parser.add_argument("--export-format", choices=["csv", "jsonl", "parquet"], default="parquet")
    parser.add_argument("--reps", type=int, default=3, help="runs of each query (best kept)")
    parser.add_argument("--dir", type=Path, help="work here (default: a temporary directory)")
    args = parser.parse_args()
    interrupt_on_sigint_and_sigterm()
    keys = args.keys or (QUICK_KEYS if args.quick else FULL_KEYS)
    rows = args.rows or (QUICK_ROWS if args.quick else FULL_ROWS)
    export_rows: int = args.export_rows[0] if args.export_rows else 1_000_000
    if args.quick and not args.export_rows:
        export_rows = rows[0]
    root = args.dir or Path(tempfile.mkdtemp(prefix="govledger-growth-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"before: {load()}; logs under {root}", flush=True)
    fleet_results: list[dict[str, Any]] = []
    store_results: list[dict[str, Any]] = []
    worker_results: list[dict[str, Any]] = []
    try:
        if args.part in ("all", "worker"):
            worker_results = worker(args.wallets or (10_000, 100_000), root)
        if args.part in ("all", "fleet"):
            fleet_results = fleet(keys, root)
        if args.part in ("all", "store"):
            store_results = store(rows, export_rows, args.export_format, args.reps, root)
    except BaseException:
        print(f"failed or stopped: the logs are under {root}", file=sys.stderr)
        raise
    finally:
        print(f"after: {load()}", flush=True)
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)
    if worker_results:
        report_worker(worker_results)
    if fleet_results:
        report_fleet(fleet_results)
    if store_results:
        report_store(store_results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
