"""CPU per row of the sink's consume side, in one process, without a broker or store.

Sealed, signed lineage records (as `bench/e2e.py` makes them) are packed into Kafka
record batches (v2, as a producer sends them); the loop then times, per row: aiokafka's
unpacking of those batches into ConsumerRecords (what `getmany` hands the sink),
`SinkWriter.prepare` (headers, authentication, recent duplicates, grouping) and the
Avro container file of each prepared batch, and the stored notices' reading of the
records (`sinks.stored.stored_ranges`, which the e2e bench's sink leaves out). Run
from the worktree:

    python bench/sink_cpu.py --rows 50000

The figures are CPU time of this thread (time.thread_time), so a busy machine changes
them little; `--profile` prints the top functions of the timed loop.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from bench.common import auth_headers, bench_records, top_functions
from schemas import authn, codec
from schemas.records import LineageRecord
from schemas.settings import SinkSettings, load
from schemas.topics import LINEAGE
from sinks.avro_batch import container_file, container_header
from sinks.stored import stored_ranges

PRODUCERS = 4
PARTITIONS = 4
RECORDS_PER_KAFKA_BATCH = 500


def kafka_batches(records: list[tuple[bytes, bytes]]) -> dict[TopicPartition, list[bytes]]:
    """The records, signed, as Kafka record batches per partition (round robin)."""
    per_tp: dict[TopicPartition, list[tuple[bytes, bytes]]] = {}
    for i, record in enumerate(records):
        per_tp.setdefault(TopicPartition(LINEAGE.name, i % PARTITIONS), []).append(record)
    out: dict[TopicPartition, list[bytes]] = {}
    for tp, rows in per_tp.items():
        chunks = []
        for start in range(0, len(rows), RECORDS_PER_KAFKA_BATCH):
            builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 16 * 1024 * 1024)
            for offset, (key, value) in enumerate(rows[start : start + RECORDS_PER_KAFKA_BATCH]):
                headers = auth_headers(value)
                builder.append(offset, 0, key, value, headers)
            data = bytearray(builder.build())
            data[0:8] = (start).to_bytes(8, "big")  # base offset
            chunks.append(bytes(data))
        out[tp] = chunks
    return out


def unpack(tp: TopicPartition, chunks: list[bytes]) -> list[Any]:
    """aiokafka's own path from fetched bytes to ConsumerRecords (the fetcher's)."""
    records = MemoryRecords(b"".join(chunks))
    return list(PartitionRecords(tp, records, [], 0, None, None, True, 0))


def measure(rows: int, batch_rows: int, profile: bool) -> dict[str, Any]:
    from sinks.writer import SinkWriter

    with tempfile.TemporaryDirectory(prefix="govledger-sinkcpu-") as tmp:
        authn.install(authn.resolve_keyring(Path(tmp), "", create=True))
        records = bench_records(rows, PRODUCERS)
        fetched = kafka_batches(records)
        environ = {"GOVLEDGER_DATA_DIR": tmp, "GOVLEDGER_SINK_BATCH_ROWS": str(batch_rows)}
        settings = load(SinkSettings, environ=environ)
        writer = SinkWriter(settings, store=None, dlq=None)  # type: ignore[arg-type]
        # Once per process, not per row: each schema's container header (see avro_batch).
        container_header(codec.schema_for(LineageRecord), with_auth=True)
        profiler = cProfile.Profile() if profile else None
        spent = {"unpack": 0.0, "prepare": 0.0, "container": 0.0, "notices": 0.0}
        stored = 0
        if profiler:
            profiler.enable()
        unpacked = {}
        t0 = time.thread_time()
        for tp, chunks in fetched.items():
            unpacked[tp] = unpack(tp, chunks)
        spent["unpack"] = time.thread_time() - t0
        per_step = max(batch_rows // PARTITIONS, 1)
        longest = max(len(m) for m in unpacked.values())
        for start in range(0, longest, per_step):
            held = {tp: m[start : start + per_step] for tp, m in unpacked.items()}
            t0 = time.thread_time()
            prepared = writer.prepare(held)
            t1 = time.thread_time()
            for batch in prepared.batches:
                container_file(batch.entry, batch.values, batch.auths)
                stored += len(batch.values)
            t2 = time.thread_time()
            # What the stored notices (StoredNotices, the writer's on_committed) read.
            stored_ranges(m for messages in held.values() for m in messages)
            spent["notices"] += time.thread_time() - t2
            spent["container"] += t2 - t1
            spent["prepare"] += t1 - t0
            assert not prepared.dead_letters, prepared.dead_letters[:1]
        if profiler:
            profiler.disable()
        assert stored == rows, (stored, rows)
    figures: dict[str, Any] = {"rows": rows, "batch_rows": batch_rows}
    for name, seconds in spent.items():
        figures[f"{name}_cpu_us_per_row"] = round(seconds / rows * 1e6, 2)
    figures["consume_side_cpu_us_per_row"] = round(sum(spent.values()) / rows * 1e6, 2)
    if profiler:
        figures["profile"] = top_functions(profiler, 25)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="records to run through")
    parser.add_argument("--batch-rows", type=int, default=20_000, help="rows per prepare")
    parser.add_argument("--profile", action="store_true", help="cProfile the loop")
    args = parser.parse_args()
    print(json.dumps(measure(args.rows, args.batch_rows, args.profile), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
