"""What a record costs the embedded broker (Tansu, memory storage) as its history grows.

Tansu 0.6.0's memory storage keeps each produced batch as one object. A fetch that finds
records past its offset lists every batch object of the partition to find where to start
(tansu-storage/src/dynostore.rs, `fetch`), and nothing is ever deleted (no retention;
`delete_records` is not implemented). So each record a consumer reads costs the broker
time in proportion to the batches stored before it in its partition. A gateway at one
client's pace sends one record a batch; at a high pace its producer batches them.

This measures the broker's CPU while one producer sends a steady pace (one record a
batch, as a gateway at that pace does) and one consumer follows it, first on an empty
partition, then after each step of history: `single` history (one record a batch) or
`bulk` history (the same records in large batches, the baseline). The ratio of the last
step to the first is the figure.

Run:  .venv/bin/python -m bench.broker_history [--steps 4] [--records-per-step 6000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from confluent_kafka import Consumer, Producer

from bench.common import cpu_seconds
from bench.gateway_procs import free_port
from govledger.broker import start_tansu

TOPIC = "history"
RECORD_BYTES = 600  # about a lineage record


def steady_cpu_percent(
    producer: Producer, broker_pid: int, rate_per_s: float, duration_s: float
) -> float:
    """The broker's CPU (% of a core) while one record a batch goes out at `rate_per_s`."""
    before, started = cpu_seconds(broker_pid), time.monotonic()
    for i in range(int(rate_per_s * duration_s)):
        producer.produce(TOPIC, b"s" * RECORD_BYTES, key=str(i).encode())
        producer.flush()  # one record a batch
        time.sleep(max(0.0, started + (i + 1) / rate_per_s - time.monotonic()))
    return (cpu_seconds(broker_pid) - before) / (time.monotonic() - started) * 100


def add_history(producer: Producer, records: int, *, one_per_batch: bool) -> None:
    for i in range(records):
        producer.produce(TOPIC, b"h" * RECORD_BYTES, key=str(i).encode())
        if one_per_batch:
            producer.flush()
    producer.flush()


async def create_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        await admin.close()


def measure(
    mode: str, steps: int, per_step: int, rate_per_s: float, duration_s: float
) -> list[float]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="broker-history-") as folder:
        log = (Path(folder) / "tansu.log").open("wb")
        broker = start_tansu(port, log)
        bootstrap = f"127.0.0.1:{port}"
        stop = threading.Event()
        try:
            asyncio.run(create_topic(bootstrap))
            producer = Producer(
                {"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all", "log_level": 3}
            )
            consumer = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": "history",
                    "auto.offset.reset": "latest",
                    "fetch.wait.max.ms": 100,  # the gateway's tailers' wait
                    "enable.auto.commit": False,
                    "log_level": 3,
                }
            )
            consumer.subscribe([TOPIC])

            def follow() -> None:
                while not stop.is_set():
                    consumer.consume(500, 0.2)

            follower = threading.Thread(target=follow, daemon=True)
            follower.start()
            time.sleep(3)  # joined
            figures = [steady_cpu_percent(producer, broker.pid, rate_per_s, duration_s)]
            for step in range(1, steps + 1):
                add_history(producer, per_step, one_per_batch=mode == "single")
                figures.append(steady_cpu_percent(producer, broker.pid, rate_per_s, duration_s))
                print(
                    f"[{mode}] after {step * per_step:,} records of history: broker "
                    f"{figures[-1]:.1f} % of a core at {rate_per_s:g} records/s",
                    flush=True,
                )
            stop.set()
            follower.join()
            consumer.close()
            return figures
        finally:
            stop.set()
            broker.kill()
            broker.wait()
            log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--records-per-step", type=int, default=6_000)
    parser.add_argument("--rate", type=float, default=20.0, help="records/s measured")
    parser.add_argument("--duration-s", type=float, default=10.0)
    args = parser.parse_args()
    print(f"[setup] {os.cpu_count()} CPUs; one partition; {RECORD_BYTES} B records", flush=True)
    results = {
        mode: measure(mode, args.steps, args.records_per_step, args.rate, args.duration_s)
        for mode in ("bulk", "single")
    }
    history = args.steps * args.records_per_step
    for mode, figures in results.items():
        growth = figures[-1] / figures[0] if figures[0] > 0 else float("nan")
        print(
            f"{mode:>6} history: broker {figures[0]:.1f} % empty -> {figures[-1]:.1f} % "
            f"after {history:,} records ({growth:.1f}x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
