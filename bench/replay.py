"""Replay from ClickHouse on one core: how fast wallets are folded from the audit tables,
beside a plain read of the same columns (no fold) measured in the same run, and whether
the rebuilt wallets are identical to the live fold of the same history.

Bar (issue 5): >= 200,000 events/s folded from ClickHouse on one core, and the rebuilt
state identical to the live state for the same history.

The store is a chDB under a temporary directory holding N realistic sealed lineage
records of 4 gateways (bench/common.py) and the fundings of every team wallet, inserted
the way the sink inserts them (Avro container files with `raw`). The whole process,
chDB's threads included, is pinned to one CPU before anything is timed.

    .venv/bin/python bench/replay.py [--events N] [--columns]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import TEAMS, TENANTS, bench_records, interrupt_on_sigint_and_sigterm
from replay.audit import ledger_differences
from replay.columns import check_store
from replay.rebuild import rebuild_from_store, wallets_at
from replay.restore import fold_wallets
from replay.sources import settlement_pages, store_reader
from replay.state import Call, call_of, fold_breakers
from schemas import codec
from schemas.codec import HashChain
from schemas.ids import now_ms, uuid7
from schemas.records import Event, LineageRecord, WalletFunded
from sinks.avro_batch import container_file, insert_columns
from sinks.store import Store
from sinks.tables import TABLE_FOR
from streams.breakers.logic import BreakerConfig
from streams.wallets import logic as wallets

INSERT_ROWS = 50_000
BAR_EVENTS_PER_S = 200_000


def fundings(at_ms: int) -> list[bytes]:
    """One funding of every team wallet the bench records charge, sealed by one admin."""
    chain = HashChain("admin-bench")
    out = []
    for tenant in TENANTS:
        for team in TEAMS:
            record = WalletFunded(
                event_id=uuid7(at_ms),
                event_type=WalletFunded.event_type_name,
                occurred_at=at_ms,
                tenant_id=tenant,
                wallet_id=wallets.team_wallet_id(tenant, team),
                team_id=team,
                amount_nanousd=1_000_000 * 10**9,
                memo="bench",
                funded_by="bench",
            )
            out.append(codec.encode(chain.seal(record)))
    return out


def insert(store: Store, values: list[bytes]) -> None:
    """Insert wire records as the sink does: one Avro container per table and schema."""
    by_schema: dict[bytes, list[bytes]] = {}
    for value in values:
        by_schema.setdefault(codec.schema_of(value).fingerprint, []).append(value)
    for group in by_schema.values():
        entry = codec.schema_of(group[0])
        table = TABLE_FOR[entry.record_type]
        columns = insert_columns(entry, store.table_columns(table))
        for start in range(0, len(group), INSERT_ROWS):
            chunk = group[start : start + INSERT_ROWS]
            token = hashlib.sha256(b"".join(chunk[:1] + chunk[-1:])).hexdigest()
            store.insert_avro(table, columns, container_file(entry, chunk), token)


def live_reference(
    control: list[bytes], lineage: list[bytes]
) -> tuple[dict[str, wallets.Wallet], dict[tuple[str, str], Any]]:
    """What the processors fold from the same records, decoded one by one, in the order
    they were produced: `wallets.fold` of the fundings, then of every call; and the fleet
    breakers of every call's attempts (as `replay.state.fold_breakers` orders them)."""
    decoded_control: list[Event] = [codec.decode(v) for v in control]
    state = wallets.fold(decoded_control)
    calls: list[Call] = []

    def each() -> Iterator[LineageRecord]:
        for value in lineage:
            record = codec.decode_as(value, LineageRecord)
            if record.attempts:
                calls.append(call_of(record))
            yield record

    state = wallets.fold(each(), state)
    return state, fold_breakers(calls, BreakerConfig(), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    parser.add_argument(
        "--columns",
        action="store_true",
        help="also time `audit verify`'s column check (replay/columns.py) on the same store",
    )
    args = parser.parse_args()
    interrupt_on_sigint_and_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="govledger-replay-bench-"))
    try:
        records = [value for _, value in bench_records(args.events, producers=4)]
        start_ms = codec.decode(records[0]).occurred_at
        control = fundings(start_ms - 1_000)
        store = Store(f"chdb://{tmp / 'chdb'}")
        store.migrate()
        began = time.perf_counter()
        insert(store, control + records)
        print(f"[store] {len(records):,} lineage rows inserted in "
              f"{time.perf_counter() - began:.1f} s", file=sys.stderr)  # fmt: skip

        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})  # one core, chDB's threads included
        read = store_reader(store)
        at_ms = now_ms() + 60_000
        settled = sum(1 for v in records if codec.decode_as(v, LineageRecord).cost_nanousd > 0)

        def no_bar(label: str, total: int | None) -> object:
            from replay.progress import Bar

            return Bar(label, total, enabled=False)

        best_read = best_fold = float("inf")
        rebuilt: dict[str, wallets.Wallet] = {}
        for _ in range(3):
            began = time.perf_counter()
            rows = sum(page.rows for page in settlement_pages(read, at_ms, None))
            best_read = min(best_read, time.perf_counter() - began)
            began = time.perf_counter()
            rebuilt, folded = wallets_at(read, at_ms, None, bar=no_bar)  # type: ignore[arg-type]
            best_fold = min(best_fold, time.perf_counter() - began)
        assert rows == settled, (rows, settled)
        began = time.perf_counter()
        whole = rebuild_from_store(read, at_ms, None, bar=no_bar)  # type: ignore[arg-type]
        whole_s = time.perf_counter() - began
        columns_s, columns = 0.0, None
        if args.columns:
            began = time.perf_counter()
            columns = check_store(read)  # every table: the lineage rows and the fundings
            columns_s = time.perf_counter() - began
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        jobs = os.cpu_count() or 1
        parallel_s, parallel = 0.0, None
        if args.columns and jobs > 1:
            began = time.perf_counter()
            parallel = check_store(read, jobs=jobs)
            parallel_s = time.perf_counter() - began

        began = time.perf_counter()
        sample = records[:50_000]
        for value in sample:
            codec.decode(value)
        decode_us = (time.perf_counter() - began) / len(sample) * 1e6
        live, live_breakers = live_reference(control, records)
        restored = fold_wallets(store)  # replay/restore.py: every record decoded from raw
        store.close()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    fold_rate = folded / best_fold
    read_rate = rows / best_read
    differences = ledger_differences(rebuilt, live)
    identical = rebuilt == restored and not differences and whole.breakers == live_breakers
    print(f"history: {len(records):,} lineage records ({settled:,} settlements) "
          f"+ {len(control)} fundings, {len(rebuilt)} wallets; one core (cpu {cpu})")  # fmt: skip
    print(f"read the fold's columns from ClickHouse, no fold: {read_rate:,.0f} rows/s (baseline)")
    print(f"wallets folded from ClickHouse: {fold_rate:,.0f} events/s "
          f"({folded:,} events in {best_fold:.2f} s, best of 3)")  # fmt: skip
    print(f"ratio fold / plain read: {fold_rate / read_rate:.2f}")
    print(f"for scale: decoding one record from raw costs {decode_us:.1f} us "
          f"({1e6 / decode_us:,.0f} records/s before any fold)")  # fmt: skip
    print(f"every domain (wallets, quotas, breakers, escalations) at once: "
          f"{len(records) / whole_s:,.0f} lineage records/s ({whole_s:.2f} s; each record "
          f"folded by wallets and breakers, {whole.events:,} folds)")  # fmt: skip
    if columns is not None:
        print(f"audit verify's column check (every typed column of every row against its "
              f"raw, replay/columns.py): {columns.rows / columns_s:,.0f} rows/s "
              f"({columns.rows:,} rows in {columns_s:.2f} s, {len(columns.findings)} "
              f"findings); ratio to every domain's replay: "
              f"{columns.rows / columns_s / (len(records) / whole_s):.2f}")  # fmt: skip
    if parallel is not None:
        print(f"the same check with {jobs} worker processes (--jobs {jobs}), every core: "
              f"{parallel.rows / parallel_s:,.0f} rows/s ({parallel_s:.2f} s, "
              f"{len(parallel.findings)} findings)")  # fmt: skip
    same_live = "identical" if not differences else f"differ in {len(differences)} wallets"
    same_restore = "identical" if rebuilt == restored else "NOT identical"
    same_breakers = "identical" if whole.breakers == live_breakers else "NOT identical"
    print(f"rebuilt wallets vs the live fold (logic.fold of the decoded records in produced "
          f"order): {same_live} in every ledger field (all but last_event_id)")  # fmt: skip
    print(f"rebuilt wallets vs logic.fold of every record decoded from raw in store order "
          f"(replay/restore.py): {same_restore} in every field")  # fmt: skip
    print(f"breakers rebuilt from columns vs folded from the decoded records: {same_breakers} "
          f"({len(whole.breakers)} targets)")  # fmt: skip
    bars = [
        ("events/s", fold_rate >= BAR_EVENTS_PER_S, f"{fold_rate:,.0f} >= 200,000"),
        ("identical", identical, "rebuilt == live state"),
    ]
    for name, met, text in bars:
        print(f"bar {name}: {text}: {'met' if met else 'NOT met'}")
    return 0 if all(met for _, met, _ in bars) else 1


if __name__ == "__main__":
    raise SystemExit(main())
