"""The stream processors on one worker: how fast they fold lineage, beside a raw aiokafka
consume-and-decode loop measured in the same run, and how soon a settlement shows in the
balance the gateways read.

Bars (issue 4): >= 5,000 lineage events/s with every processor; >= 0.3x the raw loop;
p99 from a call's settlement to the updated balance visible to a gateway <= 1 s at 500
calls/s.

    .venv/bin/python bench/streams.py [--events N] [--rate R] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO_ROOT,
    bench_records,
    cpu_seconds,
    interrupt_on_sigint_and_sigterm,
    percentile,
    produce,
    realistic_record,
)
from govledger.broker import start_tansu
from schemas import authn, codec
from schemas.kafka import ensure_topics, make_producer
from schemas.records import LineageRecord, WalletBalance
from schemas.topics import LINEAGE, WALLET_STATE

PARTITIONS = 4
args_timeout_s = float(os.environ.get("BENCH_FOLD_TIMEOUT_S", "600"))
SESSION_TIMEOUT_MS = 6_000
APP_ID = "govledger-streams-bench"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def expected_entries(records: list[tuple[bytes, bytes]]) -> dict[str, int]:
    """Journal entries each wallet must apply: calls with a cost."""
    entries: dict[str, int] = defaultdict(int)
    for _, value in records:
        record = codec.decode_as(value, LineageRecord)
        if record.wallet_id and record.cost_nanousd > 0:
            entries[record.wallet_id] += 1
    return dict(entries)


async def consume_and_decode(bootstrap: str, rows: int) -> float:
    """Baseline: a plain aiokafka loop that reads and decodes every record; seconds."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(LINEAGE.name, p) for p in consumer.partitions_for_topic(LINEAGE.name)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        started = time.perf_counter()
        seen = 0
        while seen < rows:
            batches = await consumer.getmany(timeout_ms=100, max_records=50_000)
            for messages in batches.values():
                for message in messages:
                    codec.decode(message.value)
                seen += len(messages)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


class Balances:
    """Follows the wallet-state topic as a gateway does."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.entry_counts: dict[str, int] = {}
        self.seen_seq: dict[tuple[str, str], int] = {}
        self.first_at: float | None = None
        self.on_balance: Any = None
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, fetch_max_wait_ms=20)
        await self._consumer.start()
        found = self._consumer.partitions_for_topic(WALLET_STATE.name) or set()
        partitions = [TopicPartition(WALLET_STATE.name, p) for p in sorted(found)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=50, max_records=10_000)
            now = time.perf_counter()
            for messages in batches.values():
                for message in messages:
                    balance = codec.decode_as(message.value, WalletBalance)
                    if self.first_at is None:
                        self.first_at = now
                    known = self.entry_counts.get(balance.wallet_id, 0)
                    self.entry_counts[balance.wallet_id] = max(known, balance.entry_count)
                    for producer, seq in balance.applied_seqs.items():
                        key = (balance.wallet_id, producer)
                        self.seen_seq[key] = max(self.seen_seq.get(key, 0), seq)
                    if self.on_balance is not None:
                        self.on_balance(balance, now)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


def start_worker(bootstrap: str, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVLEDGER_")}
    env.update(
        {
            "GOVLEDGER_KAFKA_BOOTSTRAP": bootstrap,
            "GOVLEDGER_DATA_DIR": str(data_dir),
            "GOVLEDGER_WORKER_WEB_PORT": "0",
            "GOVLEDGER_WORKER_APP_ID": APP_ID,
            "GOVLEDGER_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "GOVLEDGER_TOPIC_PARTITIONS": str(PARTITIONS),
            "GOVLEDGER_LOG_LEVEL": "warning",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "govledger", "worker"],
        env=env,
        cwd=REPO_ROOT,
        stdout=(data_dir / "worker.log").open("ab"),
        stderr=subprocess.STDOUT,
    )


async def fold_rate(
    bootstrap: str,
    data_dir: Path,
    records: list[tuple[bytes, bytes]],
    workers: list[subprocess.Popen[bytes]],
) -> dict[str, Any]:
    """Start the worker on a topic already holding the records; time until every wallet's
    published balance has applied every entry. The worker goes into `workers` at once, so
    the caller stops it whatever happens here."""
    expected = expected_entries(records)
    balances = Balances(bootstrap)
    await balances.start()
    worker = start_worker(bootstrap, data_dir)
    workers.append(worker)
    started = time.perf_counter()
    cpu_before = cpu_seconds(worker.pid)
    try:
        while any(balances.entry_counts.get(w, 0) < n for w, n in expected.items()):
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited; see {data_dir / 'worker.log'}")
            if int(time.perf_counter() - started) % 5 == 0:
                done_entries = sum(
                    min(balances.entry_counts.get(w, 0), n) for w, n in expected.items()
                )
                print(
                    f"[fold] {done_entries}/{sum(expected.values())} entries in balances",
                    file=sys.stderr,
                    flush=True,
                )
            if time.perf_counter() - started > args_timeout_s:
                short = {
                    w: (balances.entry_counts.get(w, 0), n)
                    for w, n in expected.items()
                    if balances.entry_counts.get(w, 0) < n
                }
                raise TimeoutError(f"not folded within {args_timeout_s} s: {short}")
            await asyncio.sleep(0.05)
        done = time.perf_counter()
        cpu = cpu_seconds(worker.pid) - cpu_before
    finally:
        await balances.stop()
    first = balances.first_at or done
    return {
        "events": len(records),
        "seconds_total": done - started,
        "seconds_after_first_balance": done - first,
        "worker_cpu_s": cpu,
        "balances": balances,
    }


async def visibility(bootstrap: str, rate: float, seconds: float) -> dict[str, Any]:
    """Settle calls at `rate` per second (as a gateway: sealed, acks=all) and time each
    until a published balance of its wallet includes it."""
    import random

    rng = random.Random(7)
    chain = authn.SignedChain("gateway-visibility", "gateway")
    producer = make_producer(bootstrap, linger_ms=2, client_id="bench-visibility")
    await producer.start()
    balances = Balances(bootstrap)
    waiting: dict[tuple[str, int], float] = {}
    delays: list[float] = []

    def on_balance(balance: WalletBalance, now: float) -> None:
        seen = balance.applied_seqs.get(chain.producer_id, 0)
        done = [k for k in waiting if k[0] == balance.wallet_id and k[1] <= seen]
        delays.extend(now - waiting.pop(key) for key in done)

    balances.on_balance = on_balance
    await balances.start()
    try:
        begin = time.perf_counter()
        sent = 0
        total = int(rate * seconds)
        while sent < total:
            due = begin + sent / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            record = realistic_record(rng, int(time.time() * 1000))
            sealed, value = chain.seal_encoded(record)
            await producer.send(
                LINEAGE.name, value, key=sealed.tenant_id.encode(), headers=chain.headers(value)
            )
            if sealed.cost_nanousd > 0:
                waiting[(sealed.wallet_id, sealed.seq)] = time.perf_counter()
            sent += 1
        await producer.flush()
        deadline = time.perf_counter() + 30
        while waiting and time.perf_counter() < deadline:  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(0.05)
    finally:
        await balances.stop()
        await producer.stop()
    return {"settled": len(delays), "lost": len(waiting), "delays_s": delays}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="govledger-streams-bench-"))
    # The worker verifies every record with the keyring in its data dir: made here first,
    # so that this process signs what it produces as the gateways would.
    authn.install(authn.resolve_keyring(tmp, "", create=True))
    port = free_port()
    broker = start_tansu(port, (tmp / "tansu.log").open("ab"))
    bootstrap = f"127.0.0.1:{port}"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        await ensure_topics(bootstrap, PARTITIONS)
        records = bench_records(args.events, producers=4)
        await produce(bootstrap, records)
        print("[produce] done", file=sys.stderr, flush=True)
        baseline_s = await consume_and_decode(bootstrap, len(records))
        print(f"[baseline] {baseline_s:.1f} s", file=sys.stderr, flush=True)
        folded = await fold_rate(bootstrap, tmp, records, workers)
        folded.pop("balances")
        seen = await visibility(bootstrap, args.rate, args.seconds)
        return {"baseline_s": baseline_s, **folded, **seen}
    finally:
        for worker in workers:
            worker.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=30)
            if worker.poll() is None:
                worker.kill()
        broker.terminate()
        broker.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    interrupt_on_sigint_and_sigterm()
    result = asyncio.run(run(args))
    events = result["events"]
    baseline_rate = events / result["baseline_s"]
    rate_after_join = events / result["seconds_after_first_balance"]
    rate_total = events / result["seconds_total"]
    delays = result["delays_s"]
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    print(f"events folded: {events} lineage records, every processor registered")
    print(f"raw aiokafka consume + decode: {baseline_rate:,.0f} events/s (baseline)")
    print(
        f"worker: {rate_after_join:,.0f} events/s after its first balance "
        f"({rate_total:,.0f}/s including start and group join, {result['seconds_total']:.1f} s); "
        f"worker CPU {result['worker_cpu_s']:.1f} s"
    )
    print(f"ratio worker / baseline: {rate_after_join / baseline_rate:.2f}")
    print(
        f"settlement -> balance visible at {result['settled'] and len(delays)} settlements "
        f"({result['lost']} never seen): p50 {p50:.3f} s, p99 {p99:.3f} s, max {max(delays):.3f} s"
    )
    bars = [
        ("events/s", rate_after_join >= 5_000, f"{rate_after_join:,.0f} >= 5,000"),
        (
            "ratio",
            rate_after_join / baseline_rate >= 0.3,
            f"{rate_after_join / baseline_rate:.2f} >= 0.3",
        ),
        ("visibility p99", p99 <= 1.0 and result["lost"] == 0, f"{p99:.3f} s <= 1 s"),
    ]
    for name, met, text in bars:
        print(f"bar {name}: {text}: {'met' if met else 'NOT met'}")
    return 0 if all(met for _, met, _ in bars) else 1


if __name__ == "__main__":
    raise SystemExit(main())
