"""The stream worker's wallets as they grow, in-process: the real wallets domain
(`streams/wallets/agent.py`, its balances sent to a counting stand-in for the topic) fed
one funding per wallet, then batches of lineage settlements on random wallets.

Per wallet count W: the memory the wallets hold (tracemalloc, bytes per wallet) and the
process's RSS growth; CPU per settlement in batches of `--batch` records (the intake's
batches are up to 4,000 records, fewer at low rates: one every 20 ms). A fold whose cost
per batch grows with W (rather than with the batch) shows here as CPU per record rising
with W.

    python -m bench.growth_worker [--wallets 1000,10000,100000] [--batch 100]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import random
import time
import tracemalloc
from typing import Any

from bench.common import realistic_record
from bench.growth_memory import status_kib
from schemas import authn
from schemas.ids import now_ms, uuid7
from schemas.records import WalletFunded
from streams.intake import Decoded, Received
from streams.wallets.agent import register

TENANTS = 8
BATCHES = 50


class CountingTopic:
    """Stands in for the wallet-state topic: counts what the domain sends."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, **_: Any) -> None:
        self.sent += 1


class App:
    """The one thing the domain asks of the Faust app: its topic."""

    def __init__(self) -> None:
        self.balances = CountingTopic()

    def topic(self, *_: Any, **__: Any) -> CountingTopic:
        return self.balances


def decoded(record: Any) -> Decoded:
    return Decoded(record, Received(None, b""))


def funding(at_ms: int, index: int, tenant: str, team: str, wallet: str) -> WalletFunded:
    return WalletFunded(event_id=uuid7(at_ms), event_type=WalletFunded.event_type_name,
                        occurred_at=at_ms, tenant_id=tenant, producer_id="admin-growth",
                        seq=index + 1, wallet_id=wallet, team_id=team, amount_nanousd=10**15,
                        memo="growth", funded_by="bench")  # fmt: skip


def wallet_ids(count: int) -> list[tuple[str, str, str]]:
    """(tenant, team, wallet id) of `count` team wallets."""
    return [(f"tenant-{i % TENANTS}", f"team-{i}", f"tenant-{i % TENANTS}/team-{i}")
            for i in range(count)]  # fmt: skip


async def measure(count: int, batch: int) -> dict[str, Any]:
    gc.collect()
    rss_before = status_kib("self", "VmRSS")
    tracemalloc.start()
    app = App()
    domain = register(app, "unused:9092", authn.SignedChain("processor-growth", "processor"))
    at_ms = now_ms()
    wallets = wallet_ids(count)
    fundings = [decoded(funding(at_ms, i, *ids)) for i, ids in enumerate(wallets)]
    cpu = time.process_time()
    for start in range(0, len(fundings), 4_000):
        await domain.fold(fundings[start : start + 4_000])
    funding_cpu = time.process_time() - cpu
    del fundings
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = status_kib("self", "VmRSS")
    rng = random.Random(count)
    seq = 0
    batches = []
    for _ in range(BATCHES):
        records = []
        for _ in range(batch):
            tenant, team, wallet = wallets[rng.randrange(count)]
            seq += 1
            record = realistic_record(rng, at_ms + seq)
            records.append(decoded(dataclasses.replace(
                record, tenant_id=tenant, team_id=team, wallet_id=wallet,
                producer_id=f"gateway-{seq % 4}", seq=seq // 4 + 1,
                cost_nanousd=max(record.cost_nanousd, 1))))  # fmt: skip
        batches.append(records)
    sent = app.balances.sent
    cpu = time.process_time()
    for records in batches:
        await domain.fold(records)
    settle_cpu = time.process_time() - cpu
    return {
        "wallets": count,
        "bytes_per_wallet": round(held / count),
        "rss_growth_mib": round((rss_after - rss_before) / 1024, 1),
        "funding_us_per_record": round(funding_cpu / count * 1e6, 1),
        "batch": batch,
        "settle_us_per_record": round(settle_cpu / (BATCHES * batch) * 1e6, 1),
        "settle_ms_per_batch": round(settle_cpu / BATCHES * 1e3, 2),
        "balances_sent_per_batch": round((app.balances.sent - sent) / BATCHES, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wallets", default="1000,10000,100000")
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    authn.install(authn.Keyring([random.Random(5).randbytes(32)]))
    for count in (int(c) for c in args.wallets.split(",")):
        print(json.dumps(asyncio.run(measure(count, args.batch))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
