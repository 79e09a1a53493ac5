"""One size of the store's growth figures, in a process of its own (`bench/growth.py`
starts it): N lineage rows generated straight into a fresh chDB with `INSERT … SELECT`
from `numbers()` (chunks of a million), then, each through the code a user reaches:

- `GET /v1/events?since=30d&group_by=team` through the query API's routes (`QueryApi`
  under aiohttp's test server, admin token), every tenant and one tenant;
- `govledger audit who --dsn chdb://…` (`cmd_who`: the calls around a moment, then every
  wallet's balance at that moment, which folds every settlement before it), and its first
  half (`replay.audit.who`) alone;
- what restoring an empty broker folds from these rows (`replay.restore.fold_wallets`:
  every settlement read and decoded from `raw`), up to `--restore-max-rows`;
- an export of every row (`POST /v1/exports`, polled until it succeeded), when asked.

Rows are spread evenly over `SPAN_DAYS` ending now (the 30-day window holds a third),
8 tenants, 4 gateways, 25 teams, 2,000 keys; `raw` is one real sealed record's bytes for
every row (the export writes it; the store compresses it away, so the store on disk is
smaller than a real one). Prints one JSON line: seconds, CPU seconds (the whole process,
chDB's threads included) and peak RSS (VmHWM, reset before each step) per step.

    python -m bench.growth_store --rows 1000000 --dir /tmp/x [--export-format parquet]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import realistic_record
from bench.growth_memory import Step, measured
from schemas import codec
from schemas.codec import HashChain
from schemas.ids import now_ms

SPAN_DAYS = 90
CHUNK_ROWS = 1_000_000
TOKEN = "adm_growth_bench_token_000000000000"
WHO_WINDOW_S = 60.0
POLL_S = 0.5


def lineage_insert_sql(first: int, count: int, total: int, end_ms: int, raw_hex: str) -> str:
    """Rows `first`..`first+count` of `total`, oldest first, ending at `end_ms`."""
    span_ms = SPAN_DAYS * 86_400_000
    return f"""
INSERT INTO lineage (event_id, event_type, occurred_at, tenant_id, producer_id, seq,
    prev_hash, record_hash, trace_id, span_id, team_id, user_id, key_id, wallet_id, region,
    model_requested, model_selected, provider, selection_reason, attempts, policies_applied,
    guardrails_triggered, decision, prompt_tokens, completion_tokens, usage_source,
    cost_nanousd, reserved_nanousd, latency_ms, ttft_ms, gateway_overhead_ms, http_status,
    error_code, stream, request_sha256, response_sha256, raw)
SELECT
    generateUUIDv4(number),
    'gateway.call',
    fromUnixTimestamp64Milli(toInt64({end_ms - span_ms} + intDiv(number * {span_ms}, {total})),
                             'UTC'),
    concat('tenant-', toString(number % 8)) AS tenant,
    concat('gateway-', toString(intDiv(number, 8) % 4)),
    intDiv(number, 32),
    repeat(lower(hex(cityHash64(number, 1))), 4),
    repeat(lower(hex(cityHash64(number, 2))), 4),
    lower(hex(generateUUIDv4(number))),
    lower(hex(cityHash64(number, 3))),
    concat('team-', toString(intDiv(number, 32) % 25)) AS team,
    NULL,
    concat('key_', toString(cityHash64(number, 4) % 2000)),
    concat(tenant, '/', team),
    'eu-west-1',
    arrayElement(['sim-small', 'sim-large', 'gpt-4o-mini', 'gpt-4o'], number % 4 + 1) AS model,
    model,
    arrayElement(['sim', 'sim', 'openai', 'openai'], number % 4 + 1) AS provider,
    'primary',
    [tuple(provider, model, toInt32(200), toFloat64(80 + cityHash64(number, 5) % 2400),
           CAST(NULL AS Nullable(String)))],
    ['pii', 'budget'],
    CAST(if(number % 25 = 0, [('pii', 'redact')], []) AS Array(Tuple(String, String))),
    if(number % 33 = 0, 'rejected', 'allowed') AS decision,
    if(decision = 'allowed', 10 + cityHash64(number, 6) % 4000, 0) AS prompt,
    if(decision = 'allowed', 1 + cityHash64(number, 7) % 1000, 0) AS completion,
    'reported',
    prompt * 150 + completion * 600,
    0,
    toFloat64(90 + cityHash64(number, 8) % 2500),
    if(number % 3 = 0, toFloat64(40 + number % 560), NULL),
    1.5,
    if(decision = 'allowed', 200, 402),
    if(decision = 'allowed', NULL, 'budget_exhausted'),
    number % 3 = 0,
    repeat(lower(hex(cityHash64(number, 9))), 4),
    repeat(lower(hex(cityHash64(number, 10))), 4),
    unhex('{raw_hex}')
FROM numbers({first}, {count})
"""


def sample_raw() -> str:
    """One realistic sealed lineage record's wire bytes, as hex."""
    record = realistic_record(random.Random(7), now_ms())
    return codec.encode(HashChain("gateway-bench").seal(record)).hex()


def insert_rows(store: Any, rows: int, end_ms: int) -> None:
    raw_hex = sample_raw()
    for first in range(0, rows, CHUNK_ROWS):
        count = min(CHUNK_ROWS, rows - first)
        store.command(lineage_insert_sql(first, count, rows, end_ms, raw_hex))


async def through_api(
    store: Any, exports_dir: Path, work: Callable[[Any], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """`work(client)` against the query API's routes on this store."""
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.views import LocalViews
    from govledger.services import query_readers
    from sinks.query_app import QueryApi

    api = QueryApi(
        store, query_readers(LocalViews(), TOKEN), dict, 500_000, exports_dir=exports_dir
    )
    assert api.exports is not None
    await api.exports.start()
    client: TestClient[Any, Any] = TestClient(TestServer(api.application()))
    await client.start_server()
    try:
        return await work(client)
    finally:
        await client.close()
        await api.exports.stop()


def events_call(query: str) -> Callable[[Any], Awaitable[dict[str, Any]]]:
    async def call(client: Any) -> dict[str, Any]:
        response = await client.get(
            f"/v1/events?{query}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        body = await response.json()
        assert response.status == 200, body
        return {"groups": len(body["groups"]), "calls": sum(g["calls"] for g in body["groups"])}

    return call


def export_call(fmt: str) -> Callable[[Any], Awaitable[dict[str, Any]]]:
    async def call(client: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        body = {"type": "events", "format": fmt, "since": f"{SPAN_DAYS + 1}d"}
        response = await client.post("/v1/exports", json=body, headers=headers)
        job = await response.json()
        assert response.status in (200, 202), job
        while job["status"] not in ("succeeded", "failed"):
            await asyncio.sleep(POLL_S)
            job = await (await client.get(f"/v1/exports/{job['id']}", headers=headers)).json()
        assert job["status"] == "succeeded", job
        manifest = job["manifest"]
        return {"rows": job["rows_done"], "bytes": manifest["file"]["bytes"], "format": fmt}

    return call


def who_command(dsn: str, at_ms: int) -> dict[str, Any]:
    """`govledger audit who --at <at_ms> --dsn <dsn>`, its output kept."""
    from govledger.commands.replay import cmd_who

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cmd_who(
            argparse.Namespace(at=at_ms, window=WHO_WINDOW_S, model=None, tenant=None, dsn=dsn)
        )
    assert code == 0, out.getvalue()[-2000:]
    lines = out.getvalue().splitlines()
    calls = next(line for line in lines if line.startswith("# ") and " calls within " in line)
    return {"summary": calls, "lines": len(lines)}


def who_alone(store: Any, at_ms: int) -> dict[str, Any]:
    from replay.audit import who
    from replay.sources import store_reader

    return {"calls": len(who(store_reader(store), at_ms, round(WHO_WINDOW_S * 1000)))}


def restore_fold(store: Any) -> dict[str, Any]:
    """What an empty broker's restore folds from the lineage table (`replay/restore.py`):
    every settlement decoded from `raw` (here all copies of one record, so the fold itself
    is one wallet; the reading and decoding are the real cost)."""
    from replay.restore import fold_wallets

    return {"wallets": len(fold_wallets(store))}


def api_step(
    store: Any, exports_dir: Path, work: Callable[[Any], Awaitable[dict[str, Any]]]
) -> Callable[[], dict[str, Any]]:
    return lambda: asyncio.run(through_api(store, exports_dir, work))


def repeated(reps: int, label: str, work: Callable[[], Any]) -> list[Step]:
    return [measured(label, work) for _ in range(reps)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=3, help="runs of each query (best kept)")
    parser.add_argument("--export-format", choices=["csv", "jsonl", "parquet"], default="")
    parser.add_argument(
        "--restore-max-rows", type=int, default=1_000_000,
        help="time the restore's wallet fold (every settlement decoded) up to this many rows",
    )  # fmt: skip
    args = parser.parse_args()
    from govledger.logs import configure
    from sinks.store import Store

    configure("warning", "bench")  # to stderr: stdout is the JSON line

    dsn = f"chdb://{args.dir / 'chdb'}"
    store = Store(dsn)
    store.migrate()
    end_ms = now_ms()
    steps: list[Step] = []
    steps.append(measured("insert", lambda: insert_rows(store, args.rows, end_ms)))
    stored = int(store.query_rows("SELECT count() FROM lineage")[0][0])
    assert stored == args.rows, (stored, args.rows)
    exports_dir = args.dir / "exports"
    for label, query in (
        ("events 30d by team, every tenant", "since=30d&group_by=team"),
        ("events 30d by team, one tenant", "since=30d&group_by=team&tenant=tenant-3"),
    ):
        work = events_call(query)
        asyncio.run(through_api(store, exports_dir, work))  # warm: imports, first read
        steps += repeated(args.reps, label, api_step(store, exports_dir, work))
    at_ms = end_ms - 15 * 86_400_000
    who_alone(store, at_ms)  # warm: imports
    steps += repeated(args.reps, "audit who (calls only)", lambda: who_alone(store, at_ms))
    steps += repeated(args.reps, "audit who (command)", lambda: who_command(dsn, at_ms))
    if args.rows <= args.restore_max_rows:
        steps.append(measured("restore's wallet fold", lambda: restore_fold(store)))
    if args.export_format:
        export = api_step(store, exports_dir, export_call(args.export_format))
        steps.append(measured("export events", export))
    store.close()
    print(json.dumps({"rows": args.rows, "steps": [s.as_dict() for s in steps]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
