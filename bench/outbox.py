"""What the lineage outbox costs per call, in-process: the gateway's lineage publish path
with the outbox (OutboxPublisher: seal, sign, write to the outbox file, send) against the
same path as before it (ChainedPublisher with its spool), both over a producer double
that acks at once, so only the outbox's own work differs. Also: confirming, compacting.

The end-to-end figure is bench/gateway.py's figure 5 (gateway CPU per call with and
without the outbox); on a shared 2-core machine its difference is within the noise, which
is why this one exists.

Run from the repository root:  .venv/bin/python -m bench.outbox [--records N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas import authn
from schemas.ids import uuid7
from schemas.outbox_publisher import OutboxPublisher
from schemas.publisher import ChainedPublisher
from schemas.spool import Spool
from tests.unit import builders
from tests.unit.test_outbox_publisher import BrokerDouble


async def publish_cpu_us(publisher: ChainedPublisher, records: int) -> float:
    """CPU microseconds per publish of a realistic lineage record."""
    publisher._producer = BrokerDouble()
    await publisher.start()
    calls = [builders.call(event_id=uuid7()) for _ in range(records)]
    started = time.process_time()
    for call in calls:
        await publisher.publish("govledger.lineage", "acme", call)
    spent = time.process_time() - started
    if isinstance(publisher, OutboxPublisher):
        publisher.outbox.sync()  # the batched fsync the timer would do, counted
        spent = time.process_time() - started
    return spent / records * 1e6


async def measure(records: int) -> dict[str, Any]:
    authn.install(builders.TEST_KEYRING)
    figures: dict[str, Any] = {"records": records}
    with tempfile.TemporaryDirectory() as folder:
        # As the gateway published before the outbox: with a spool for broker outages.
        plain = ChainedPublisher(
            "127.0.0.1:1",
            "gateway-bench-plain",
            spool=Spool(Path(folder) / "spool", "gateway-bench-plain", 1 << 31),
            checkpoint_every=10**9,
        )
        figures["publish_without_outbox_us"] = round(await publish_cpu_us(plain, records), 1)
        await plain.stop()
        kept = OutboxPublisher(
            "127.0.0.1:1",
            "gateway-bench-outbox",
            Path(folder),
            max_bytes=1 << 31,
            checkpoint_every=10**9,
        )
        figures["publish_with_outbox_us"] = round(await publish_cpu_us(kept, records), 1)
        figures["outbox_us_per_call"] = round(
            figures["publish_with_outbox_us"] - figures["publish_without_outbox_us"], 1
        )
        figures["outbox_bytes_per_call"] = round(kept.outbox.size_bytes / records)
        started = time.process_time()
        for first in range(1, records + 1, 100):  # a notice per sink batch of 100
            kept.confirm(kept.producer_id, first, min(first + 99, records))
        spent = time.process_time() - started
        figures["confirm_and_compact_us_per_call"] = round(spent / records * 1e6, 1)
        figures["left_after_confirming"] = kept.outbox.unconfirmed
        await kept.stop()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.records))
    for name, value in figures.items():
        print(f"{name:34} {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
