"""End-to-end benchmark of the embedded default.

1. Visibility: the whole stack (`govledger up` as child processes, sim provider), an
   open-loop load of chat completions at a constant rate, and a poller on the query API
   noting when each call's lineage row becomes visible in the store.
2. Sink throughput: one Tansu broker, N realistic sealed lineage records, and the
   SinkWriter in this process against chDB, timed from its start until every row is in
   the table. Next to it, in the same process and run, two baselines: the same topic
   consumed with plain aiokafka, and the same records inserted as prebuilt Avro container
   files with Store.insert_avro into a second table.

Run from the repository root:  .venv/bin/python bench/e2e.py   (or `make bench`)
Prints every figure, one a line, then all of them again as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import math
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import orjson

from bench.common import (
    bench_records,
    consume_only,
    consume_only_librdkafka,
    cpu_count,
    cpu_seconds,
    interrupt_on_sigint_and_sigterm,
    percentile,
    produce,
    rounded,
    top_functions,
)

VISIBILITY_BAR_S = 2.0
SINK_BAR_ROWS_S = 50_000
SINK_BAR_RATIO_TO_INSERT_ONLY = 0.7
PRODUCERS = 4
TEAM = "bench"
FUND_USD = "1000"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=200.0, help="calls/s (open loop)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the load")
    parser.add_argument("--concurrency", type=int, default=256, help="most calls in flight")
    parser.add_argument("--poll-ms", type=float, default=50.0, help="visibility poll interval")
    parser.add_argument("--sim-latency-ms", type=float, default=0.0, help="sim provider latency")
    parser.add_argument("--rows", type=int, default=200_000, help="records for the sink test")
    parser.add_argument("--batch-rows", type=int, help="GOVLEDGER_SINK_BATCH_ROWS if set")
    parser.add_argument("--profile", action="store_true", help="cProfile the sink run")
    parser.add_argument(
        "--consume-process",
        action="store_true",
        help="the sink with its consume process (GOVLEDGER_SINK_CONSUME_PROCESS=1)",
    )
    parser.add_argument("--skip-e2e", action="store_true", help="only the sink test")
    parser.add_argument("--skip-sink", action="store_true", help="only the visibility test")
    return parser.parse_args()


# --- 1. Visibility latency through the whole stack ----------------------------------------


@dataclass(slots=True)
class Call:
    trace_id: str
    due: float
    returned: float = math.nan
    returned_wall_ms: int = 0
    status: int = 0  # HTTP status; -1 for a transport error
    usage: tuple[int, int] | None = None


def http_session(concurrency: int, headers: dict[str, str]) -> aiohttp.ClientSession:
    """The load generator's client (httpx costs ~8x the CPU per call here)."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    return aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout)


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    """(status, body); status -1 on a transport error."""
    try:
        async with session.post(url, data=body, headers=headers) as reply:
            return reply.status, await reply.read()
    except (aiohttp.ClientError, TimeoutError):
        return -1, b""


class Poller:
    """Asks the query API every `every_s` for this run's lineage rows and notes when each
    trace id is first seen (monotonic time the answer arrived, and the row's ingested_at)."""

    def __init__(self, query_url: str, token: str, prefix: str, every_s: float) -> None:
        self.url = f"{query_url}/"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.prefix = prefix
        self.every_s = every_s
        self.seen: dict[str, tuple[float, int]] = {}
        self.round_trips: list[float] = []
        self.errors = 0
        self._high_water_ms = time.time_ns() // 1_000_000 - 5_000

    async def run(self, session: aiohttp.ClientSession) -> None:
        tick = time.perf_counter()
        while True:
            # Rows come in insert order and inserts are serial, so ingested_at only grows;
            # a second of slack re-reads a little and misses nothing.
            sql = (
                "SELECT trace_id, toUnixTimestamp64Milli(ingested_at) FROM lineage "
                f"WHERE ingested_at >= fromUnixTimestamp64Milli({self._high_water_ms - 1000}) "
                f"AND startsWith(trace_id, '{self.prefix}')"
            )
            sent = time.perf_counter()
            status, body = await post(session, self.url, sql.encode(), self.headers)
            arrived = time.perf_counter()
            if status != 200:
                self.errors += 1
            else:
                self.round_trips.append(arrived - sent)
                for line in body.decode().splitlines():
                    trace_id, ingested = line.split("\t")
                    if trace_id not in self.seen:
                        self.seen[trace_id] = (arrived, int(ingested))
                        self._high_water_ms = max(self._high_water_ms, int(ingested))
            tick += self.every_s
            delay = tick - time.perf_counter()
            if delay < 0:  # the poll took longer than the interval: poll again now
                tick = time.perf_counter()
                delay = 0
            await asyncio.sleep(delay)


def chat_body(i: int) -> bytes:
    return orjson.dumps(
        {
            "model": "sim-small",
            "messages": [
                {"role": "system", "content": "You are a concise analyst."},
                {"role": "user", "content": f"Summarise spend of cost centre {i % 97}."},
            ],
            "max_tokens": 64,
        }
    )


async def send_call(session: aiohttp.ClientSession, url: str, call: Call, body: bytes) -> None:
    headers = {"traceparent": f"00-{call.trace_id}-{secrets.token_hex(8)}-01"}
    call.status, answer = await post(session, url, body, headers)
    call.returned = time.perf_counter()
    call.returned_wall_ms = time.time_ns() // 1_000_000
    if call.status == 200:
        usage = orjson.loads(answer)["usage"]
        call.usage = (usage["prompt_tokens"], usage["completion_tokens"])


def cpu_snapshot(stack: Any) -> dict[str, float]:
    snapshot = {c.name: cpu_seconds(c.process.pid) for c in stack.stack.children}
    snapshot["bench client"] = cpu_seconds(os.getpid())
    return snapshot


async def drive(stack: Any, key: str, args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, run the open-loop load with the poller, wait for the rows; the figures."""
    url = f"{stack.base_url}/chat/completions"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    client = http_session(args.concurrency, headers)
    poll_client = http_session(4, {})
    prefix = secrets.token_hex(4)
    poller = Poller(stack.settings.query_url, stack.token, prefix, args.poll_ms / 1000)
    poll_task: asyncio.Task[None] | None = None
    inflight: set[asyncio.Task[None]] = set()
    try:
        # Warm-up: a few calls end to end (connections, first insert), not measured.
        warm = [Call(f"{'f' * 8}{prefix}{i:016x}", time.perf_counter()) for i in range(20)]
        for call in warm:
            await send_call(client, url, call, chat_body(0))
        poll_task = asyncio.create_task(poller.run(poll_client))

        total = int(args.rate * args.seconds)
        calls: list[Call] = []
        shed = 0
        lag_max = 0.0
        bodies = [chat_body(i) for i in range(97)]
        cpu_before = cpu_snapshot(stack)
        t0 = time.perf_counter() + 0.05
        for i in range(total):
            due = t0 + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lag_max = max(lag_max, time.perf_counter() - due)
            if len(inflight) >= args.concurrency:
                shed += 1  # open loop: a full window drops the call instead of waiting
                continue
            call = Call(f"{prefix}{i:024x}", due)
            calls.append(call)
            task = asyncio.create_task(send_call(client, url, call, bodies[i % len(bodies)]))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        last_sent = time.perf_counter()
        if inflight:
            await asyncio.wait(set(inflight), timeout=30)
        answered = [c for c in calls if c.status > 0]
        last_return = max((c.returned for c in answered), default=last_sent)
        cpu_after = cpu_snapshot(stack)
        cpu_wall = time.perf_counter() - t0

        # Wait until every answered call's row is visible (or give up after 20 s).
        deadline = time.perf_counter() + 20
        while time.perf_counter() < deadline and any(  # noqa: ASYNC110 - polls a dict
            c.trace_id not in poller.seen for c in answered
        ):
            await asyncio.sleep(0.05)
    finally:
        for task in inflight:
            task.cancel()
        if poll_task is not None:
            poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll_task
        await client.close()
        await poll_client.close()

    ok = [c for c in answered if c.status == 200]
    latencies_ms = [(c.returned - c.due) * 1000 for c in answered]
    visible = [c for c in answered if c.trace_id in poller.seen]
    vis_s = [poller.seen[c.trace_id][0] - c.returned for c in visible]
    ingest_ms = [poller.seen[c.trace_id][1] - c.returned_wall_ms for c in visible]
    statuses: dict[str, int] = {}
    for c in calls:
        statuses[str(c.status)] = statuses.get(str(c.status), 0) + 1
    return {
        "target_rate_per_s": args.rate,
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "sim_latency_ms": args.sim_latency_ms,
        "calls_scheduled": total,
        "calls_sent": len(calls),
        "calls_shed": shed,
        "calls_ok": len(ok),
        "errors": len(calls) - len(ok),
        "status_counts": statuses,
        "send_rate_per_s": rounded(len(calls) / (last_sent - t0), 1),
        "achieved_rate_per_s": rounded(len(ok) / (last_return - t0), 1),
        "scheduler_lag_max_ms": rounded(lag_max * 1000, 1),
        "call_p50_ms": rounded(percentile(latencies_ms, 50), 2),
        "call_p99_ms": rounded(percentile(latencies_ms, 99), 2),
        "call_max_ms": rounded(max(latencies_ms, default=math.nan), 2),
        "visible_rows": len(visible),
        "missing_rows": len(answered) - len(visible),
        "visibility_p50_s": rounded(percentile(vis_s, 50), 3),
        "visibility_p99_s": rounded(percentile(vis_s, 99), 3),
        "visibility_max_s": rounded(max(vis_s, default=math.nan), 3),
        "poll_interval_ms": args.poll_ms,
        "poll_rtt_p50_ms": rounded(percentile(poller.round_trips, 50) * 1000, 1),
        "poll_rtt_p99_ms": rounded(percentile(poller.round_trips, 99) * 1000, 1),
        "poll_errors": poller.errors,
        "ingested_minus_returned_p50_ms": rounded(percentile(ingest_ms, 50), 0),
        "ingested_minus_returned_p99_ms": rounded(percentile(ingest_ms, 99), 0),
        "cpu_percent_during_load": {
            name: rounded((cpu_after[name] - cpu_before[name]) / cpu_wall * 100, 0)
            for name in cpu_before
        },
        "_client_cost_nanousd": sum(150 * c.usage[0] + 600 * c.usage[1] for c in ok if c.usage)
        + sum(150 * c.usage[0] + 600 * c.usage[1] for c in warm if c.usage),
        "_warm_calls": len(warm),
        "_answered": len(answered),
    }


def reconcile(stack: Any, funded: int, expected_rows: int, timeout_s: float) -> dict[str, Any]:
    """Wallet balance against funding minus the costs in the audit table."""
    wallet = f"default/{TEAM}"
    deadline = time.monotonic() + timeout_s
    while True:
        spent_s, count_s = stack.sql(
            f"SELECT sum(cost_nanousd), count() FROM lineage WHERE wallet_id = '{wallet}'"
        )[0]
        spent, count = int(spent_s), int(count_s)
        balance = stack.balance_nanousd(TEAM)
        ok = count == expected_rows and balance == funded - spent
        if ok or time.monotonic() > deadline:
            return {
                "reconciled": ok,
                "funded_nanousd": funded,
                "spent_nanousd": spent,
                "balance_nanousd": balance,
                "lineage_rows": count,
                "expected_rows": expected_rows,
            }
        time.sleep(0.25)


def visibility_bench(args: argparse.Namespace) -> dict[str, Any]:
    from schemas.settings import SinkSettings, load
    from tests.integration.stack import running_stack, stack_environ, wait_for

    with tempfile.TemporaryDirectory(prefix="govledger-bench-") as tmp:
        env = stack_environ(Path(tmp), GOVLEDGER_SIM_LATENCY_MS=str(args.sim_latency_ms))
        started = time.perf_counter()
        with running_stack(env) as stack:
            start_s = time.perf_counter() - started
            print(f"[e2e] stack up in {start_s:.1f}s (logs in {tmp}/logs)", flush=True)
            key = stack.create_key(TEAM)
            stack.fund(TEAM, FUND_USD)
            funded = int(FUND_USD) * 1_000_000_000
            wait_for(lambda: stack.balance_nanousd(TEAM) == funded, timeout_s=30)
            print(
                f"[e2e] driving {args.rate:g} calls/s for {args.seconds:g}s "
                f"(concurrency {args.concurrency}, poll every {args.poll_ms:g} ms)",
                flush=True,
            )
            import uvloop

            figures = uvloop.run(drive(stack, key["key"], args))
            expected = figures.pop("_warm_calls") + figures.pop("_answered")
            client_cost = figures.pop("_client_cost_nanousd")
            rec = reconcile(stack, funded, expected, timeout_s=30)
            rec["client_cost_nanousd"] = client_cost
            rec["cost_matches_client_usage"] = client_cost == rec["spent_nanousd"]
            figures["reconciliation"] = rec
            figures["stack_start_s"] = round(start_s, 1)
            figures["sink_flush_ms"] = load(SinkSettings, environ=env).sink_flush_ms
            p99 = figures["visibility_p99_s"]
            passed = p99 is not None and p99 <= VISIBILITY_BAR_S
            figures[f"visibility_p99_le_{VISIBILITY_BAR_S:g}s"] = "PASS" if passed else "FAIL"
            stopping = time.perf_counter()
        figures["stack_stop_s"] = round(time.perf_counter() - stopping, 1)
    return figures


# --- 2. Sink throughput in one process ----------------------------------------------------


async def run_sink(settings: Any, store: Any, dlq: Any, rows: int, profile: bool) -> dict[str, Any]:
    """A SinkWriter in this process from start() until `rows` rows are inserted; its
    figures (the default sink, GOVLEDGER_SINK_CONSUME_PROCESS off)."""
    from sinks.writer import SinkWriter

    writer = SinkWriter(settings, store, dlq)
    profiles = (cProfile.Profile(), cProfile.Profile()) if profile else None
    if profiles:
        await store.run(profiles[1].enable)  # the store's one worker thread
        profiles[0].enable()
    first_records_s = math.nan
    inserts = 0
    started = time.perf_counter()
    cpu_before, loop_cpu_before = os.times(), time.thread_time()
    try:
        await writer.start()
        while writer.stats.rows_inserted < rows:
            before = writer.stats.rows_inserted
            polled = await writer.step(settings.sink_flush_ms)
            inserts += writer.stats.rows_inserted != before
            if polled and math.isnan(first_records_s):
                first_records_s = time.perf_counter() - started
            if time.perf_counter() - started > 300:
                raise TimeoutError(f"sink wrote {writer.stats.rows_inserted} of {rows} rows")
        await writer.flush()
        elapsed = time.perf_counter() - started
    finally:
        if profiles:
            profiles[0].disable()
            await store.run(profiles[1].disable)
        await writer.stop()
    figures = sink_figures(rows, writer.stats, elapsed, first_records_s, inserts)
    cpu_after, loop_cpu_s = os.times(), time.thread_time() - loop_cpu_before
    cpu_s = cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system
    figures["sink_cpu_us_per_row"] = round(cpu_s / rows * 1e6, 1)
    figures["sink_loop_cpu_us_per_row"] = round(loop_cpu_s / rows * 1e6, 1)
    if profiles:
        figures["profile"] = {
            "event_loop_thread": top_functions(profiles[0], 25),
            "store_thread": top_functions(profiles[1], 10),
        }
    return figures


def sink_figures(
    rows: int, stats: Any, elapsed: float, first_records_s: float, inserts: int
) -> dict[str, Any]:
    return {
        "sink_rows_per_s": round(stats.rows_inserted / elapsed),
        "sink_seconds": round(elapsed, 2),
        "sink_first_records_s": round(first_records_s, 2),
        "sink_rows_per_s_after_first_records": round(rows / (elapsed - first_records_s)),
        "sink_flushes_with_inserts": inserts,
        "sink_dead_lettered": stats.dead_lettered,
    }


async def run_fed_sink(
    settings: Any, store: Any, dlq: Any, rows: int, profile: bool
) -> dict[str, Any]:
    """The sink with GOVLEDGER_SINK_CONSUME_PROCESS=1 (`--consume-process`): its consume
    process (sinks/consume_process.py) feeding this process's SinkWriter, from the
    child's start until `rows` rows are inserted; its figures (the profile is the
    owner's: the child is another process)."""
    from sinks.consume_process import ConsumeProcess
    from sinks.writer import SinkWriter

    writer = SinkWriter(settings, store, dlq)
    feed = ConsumeProcess(settings, writer)
    profiles = (cProfile.Profile(), cProfile.Profile()) if profile else None
    if profiles:
        await store.run(profiles[1].enable)
        profiles[0].enable()
    started_wall, started = time.time(), time.perf_counter()
    cpu_before, loop_cpu_before = os.times(), time.thread_time()
    try:
        await feed.start()
        running = asyncio.create_task(feed.run())
        while writer.stats.rows_inserted < rows and not running.done():
            await asyncio.sleep(0.005)
            if time.perf_counter() - started > 300:
                raise TimeoutError(f"sink wrote {writer.stats.rows_inserted} of {rows} rows")
        elapsed = time.perf_counter() - started
        if running.done():
            running.result()
        await feed.request_stop()
        await asyncio.wait_for(running, 60)
    finally:
        if profiles:
            profiles[0].disable()
            await store.run(profiles[1].disable)
        await feed.stop()
    cpu_after, loop_cpu_s = os.times(), time.thread_time() - loop_cpu_before
    first_at = feed.first_records_at
    first_records_s = math.nan if first_at is None else first_at - started_wall
    figures = sink_figures(rows, writer.stats, elapsed, first_records_s, feed.batches)
    # CPU seconds of the owner (this process) and of the consume process (a child).
    figures["sink_owner_cpu_s"] = round(
        cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system, 2
    )
    figures["sink_consume_process_cpu_s"] = round(
        cpu_after.children_user
        + cpu_after.children_system
        - cpu_before.children_user
        - cpu_before.children_system,
        2,
    )
    # The event loop's own CPU (receiving, unpickling, Python around the inserts).
    figures["sink_owner_loop_cpu_us_per_row"] = round(loop_cpu_s / rows * 1e6, 1)
    # The child's CPU from its first records to its last commit (no start, no join).
    figures["sink_consume_process_cpu_us_per_row_after_first_records"] = round(
        feed.child_cpu_s / rows * 1e6, 1
    )
    for side in ("owner", "consume_process"):
        per_row_us = figures[f"sink_{side}_cpu_s"] / rows * 1e6
        figures[f"sink_{side}_cpu_us_per_row"] = round(per_row_us, 1)
    if profiles:
        figures["profile"] = {
            "event_loop_thread": top_functions(profiles[0], 25),
            "store_thread": top_functions(profiles[1], 10),
        }
    return figures


async def sink_async(args: argparse.Namespace, tmp: Path, records: Any) -> dict[str, Any]:
    from govledger.broker import start_tansu
    from schemas import codec
    from schemas.kafka import ensure_topics
    from schemas.publisher import ChainedPublisher
    from schemas.records import LineageRecord
    from schemas.settings import SinkSettings, load
    from sinks.avro_batch import container_file
    from sinks.store import Store
    from tests.integration.stack import free_port

    rows, port, dsn = len(records), free_port(), f"chdb://{tmp}/chdb"
    bootstrap = f"127.0.0.1:{port}"
    environ = {"GOVLEDGER_KAFKA_BOOTSTRAP": bootstrap, "GOVLEDGER_CLICKHOUSE_DSN": dsn}
    if args.batch_rows:
        environ["GOVLEDGER_SINK_BATCH_ROWS"] = str(args.batch_rows)
    settings = load(SinkSettings, environ={**environ, "GOVLEDGER_DATA_DIR": str(tmp)})
    # The sink verifies every record: the bench signs its own with a keyring of its own.
    from schemas import authn

    authn.install(authn.resolve_keyring(tmp, "", create=True))
    batch_rows = settings.sink_batch_rows
    figures: dict[str, Any] = {
        "rows": rows,
        "sink_batch_rows": batch_rows,
        "sink_flush_ms": settings.sink_flush_ms,
    }
    log = (tmp / "tansu.log").open("ab")
    broker: subprocess.Popen[bytes] | None = None
    store: Any = None
    dlq: Any = None
    try:
        broker = start_tansu(port, log)
        await ensure_topics(bootstrap, 4)
        produce_s = await produce(bootstrap, records)
        figures["produce_rows_per_s"] = round(rows / produce_s)
        print(f"[sink] produced {rows} records in {produce_s:.1f}s", flush=True)

        store = Store(dsn)
        await store.run(store.migrate)
        await store.run(store.client.command, "CREATE TABLE lineage_baseline AS lineage")
        dlq = ChainedPublisher(bootstrap, "sink-bench", role="sink")
        await dlq.start()

        # --- the sink, measured -----------------------------------------------------------
        run = run_fed_sink if args.consume_process else run_sink
        figures["sink_mode"] = "consume process" if args.consume_process else "in-process"
        broker_cpu_s = cpu_seconds(broker.pid)
        figures.update(await run(settings, store, dlq, rows, args.profile))
        # The broker's CPU serving the sink's fetches (it shares the machine's cores).
        broker_cpu_s = cpu_seconds(broker.pid) - broker_cpu_s
        figures["broker_cpu_us_per_row"] = round(broker_cpu_s / rows * 1e6, 1)
        count, distinct = (
            await store.run(store.query_rows, "SELECT count(), uniqExact(event_id) FROM lineage")
        )[0]
        figures["sink_rows_in_table"] = int(count)
        figures["sink_distinct_event_ids"] = int(distinct)
        figures["sink_rows_exact"] = int(count) == rows and int(distinct) == rows
        passed = figures["sink_rows_per_s"] >= SINK_BAR_ROWS_S
        figures[f"sink_ge_{SINK_BAR_ROWS_S}_rows_per_s"] = "PASS" if passed else "FAIL"
        if args.profile:
            figures[f"sink_ge_{SINK_BAR_ROWS_S}_rows_per_s"] += " (under cProfile)"
        print(f"[sink] SinkWriter: {rows} rows in {figures['sink_seconds']}s", flush=True)

        # --- baseline 1: the same topic, consumed only -----------------------------------
        consume_s = await consume_only(bootstrap, rows)
        figures["consume_only_rows_per_s"] = round(rows / consume_s)
        # The sink's own client (schemas/group_consumer.py), the same records.
        librdkafka_s = await asyncio.to_thread(consume_only_librdkafka, bootstrap, rows)
        figures["consume_only_librdkafka_rows_per_s"] = round(rows / librdkafka_s)

        # --- baseline 2: the same records as prebuilt container files, inserted only -----
        entry = codec.schema_for(LineageRecord)
        present = set(await store.run(store.table_columns, "lineage"))
        columns = [f["name"] for f in entry.source["fields"] if f["name"] in present] + ["raw"]
        values = [value for _, value in records]
        started = time.perf_counter()
        files = [
            container_file(entry, values[i : i + batch_rows]) for i in range(0, rows, batch_rows)
        ]
        figures["container_build_rows_per_s"] = round(rows / (time.perf_counter() - started))
        del values

        def insert_all() -> float:
            started = time.perf_counter()
            for i, data in enumerate(files):
                store.insert_avro("lineage_baseline", columns, data, f"baseline-{i}")
            return time.perf_counter() - started

        cpu_before = os.times()
        insert_s = await store.run(insert_all)
        cpu_after = os.times()
        insert_cpu_s = cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system
        figures["insert_only_cpu_us_per_row"] = round(insert_cpu_s / rows * 1e6, 1)
        files.clear()
        counted = await store.run(store.query_rows, "SELECT count() FROM lineage_baseline")
        figures["insert_only_rows_per_s"] = round(rows / insert_s)
        figures["insert_only_rows_in_table"] = int(counted[0][0])
        figures["consume_then_insert_rows_per_s"] = round(rows / (consume_s + insert_s))
        for name in ("consume_only", "insert_only", "consume_then_insert"):
            ratio = figures["sink_rows_per_s"] / figures[f"{name}_rows_per_s"]
            figures[f"ratio_sink_to_{name}"] = round(ratio, 3)
        # Issue 18's bar: the sink at the store's pace, once it is in its group (Tansu's
        # join, about half the session timeout, is the broker's and is reported apart).
        ratio = figures["sink_rows_per_s_after_first_records"] / figures["insert_only_rows_per_s"]
        figures["ratio_sink_after_join_to_insert_only"] = round(ratio, 3)
        passed = ratio >= SINK_BAR_RATIO_TO_INSERT_ONLY
        figures[f"sink_ge_{SINK_BAR_RATIO_TO_INSERT_ONLY}x_insert_only"] = (
            "PASS" if passed else "FAIL"
        )
    finally:
        if dlq is not None:
            await dlq.stop()
        if store is not None:
            store.close()
        if broker is not None:
            broker.terminate()
            try:
                broker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()
        log.close()
    return figures


def sink_bench(args: argparse.Namespace) -> dict[str, Any]:
    import uvloop

    with tempfile.TemporaryDirectory(prefix="govledger-sinkbench-") as tmp:
        started = time.perf_counter()
        records = bench_records(args.rows, PRODUCERS)
        took = time.perf_counter() - started
        print(f"[sink] sealed and encoded {args.rows} records in {took:.1f}s", flush=True)
        figures = uvloop.run(sink_async(args, Path(tmp), records))
        figures["prepare_records_s"] = round(took, 1)
        return figures


# --- Report -------------------------------------------------------------------------------


def report(result: dict[str, Any]) -> None:
    """Every figure, one a line, then the profile if any, then the JSON line."""
    print()
    for section in ("e2e", "sink"):
        for name, value in result.get(section, {}).items():
            if name != "profile":
                print(f"{section:4}  {name:38}  {value}")
    for thread, rows in result.get("sink", {}).get("profile", {}).items():
        print(f"\n[sink profile] {thread}, by own time\n tottime  cumtime     calls")
        print("\n".join(rows))
    print()
    print(json.dumps(result, separators=(",", ":"), default=str))


def main() -> int:
    args = parse_args()
    interrupt_on_sigint_and_sigterm()
    result: dict[str, Any] = {
        "machine": {
            "cpus": cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": " ".join(sys.argv),
    }
    started = time.perf_counter()
    try:
        if not args.skip_e2e:
            result["e2e"] = visibility_bench(args)
        if not args.skip_sink:
            result["sink"] = sink_bench(args)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    report(result)
    leftover = [
        t.name for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()
    ]
    if leftover:
        print(f"note: threads still alive at exit: {leftover}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
