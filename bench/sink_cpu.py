"""CPU per row of the sink's consume side, in one process, without a broker or store.

Sealed, signed lineage records (as `bench/e2e.py` makes them) are made into the messages
librdkafka hands the sink (confluent-kafka's `Message`, per partition, built before the
clock starts: fetching and unpacking happen in librdkafka's C threads, and `bench/e2e.py`
measures them with a real broker); the loop then times, per row, `SinkWriter.prepare`
(headers, authentication, recent duplicates, grouping, the Avro container files, the seqs
the stored notices name) and the notices' ranges. Run from the worktree:

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

from aiokafka.structs import TopicPartition
from confluent_kafka import Message

from bench.common import auth_headers, bench_records, top_functions
from schemas import authn, codec
from schemas.records import LineageRecord
from schemas.settings import SinkSettings, load
from schemas.topics import LINEAGE
from sinks.avro_batch import container_header

PRODUCERS = 4
PARTITIONS = 4


def messages(records: list[tuple[bytes, bytes]]) -> dict[TopicPartition, list[Any]]:
    """The records, signed, as librdkafka's messages per partition (round robin)."""
    out: dict[TopicPartition, list[Any]] = {}
    for i, (key, value) in enumerate(records):
        tp = TopicPartition(LINEAGE.name, i % PARTITIONS)
        held = out.setdefault(tp, [])
        headers: list[tuple[str, str | bytes | None]] = [*auth_headers(value)]
        held.append(Message(tp.topic, tp.partition, len(held), key, value, headers))
    return out


def measure(rows: int, batch_rows: int, profile: bool) -> dict[str, Any]:
    from sinks.writer import SinkWriter

    with tempfile.TemporaryDirectory(prefix="govledger-sinkcpu-") as tmp:
        authn.install(authn.resolve_keyring(Path(tmp), "", create=True))
        records = bench_records(rows, PRODUCERS)
        unpacked = messages(records)
        environ = {"GOVLEDGER_DATA_DIR": tmp, "GOVLEDGER_SINK_BATCH_ROWS": str(batch_rows)}
        settings = load(SinkSettings, environ=environ)
        writer = SinkWriter(settings, store=None, dlq=None)  # type: ignore[arg-type]
        # Once per process, not per row: each schema's container header (see avro_batch).
        container_header(codec.schema_for(LineageRecord), with_auth=True)
        profiler = cProfile.Profile() if profile else None
        spent = {"prepare": 0.0, "notices": 0.0}
        stored = 0
        if profiler:
            profiler.enable()
        per_step = max(batch_rows // PARTITIONS, 1)
        longest = max(len(m) for m in unpacked.values())
        for start in range(0, longest, per_step):
            held = {tp: m[start : start + per_step] for tp, m in unpacked.items()}
            t0 = time.thread_time()
            prepared = writer.prepare(held)  # its container files included
            t1 = time.thread_time()
            # What the stored notices (StoredNotices, the writer's on_committed) are told.
            prepared.stored.ranges()
            spent["notices"] += time.thread_time() - t1
            spent["prepare"] += t1 - t0
            stored += sum(len(batch.values) for batch in prepared.batches)
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
