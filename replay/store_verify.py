"""`govledger audit verify`, run by the store's owner for the query API's verification
jobs (`sinks/verify_jobs.py`): every producer's hash chain and checkpoints
(`replay.verify`), every record's authentication with the org keyring (`replay.forged`)
and every typed column against raw (`replay.columns`), for one tenant's chains or all.

It runs on a thread of its own; each query goes to the store's thread (one store call per
page, so the writer's inserts run between them), is bounded by the job's remaining time,
and ends the job when the sink stops. A tenant's result names, for findings on records
not its own (a gap in a chain it shares with other tenants), the producer, seq and kind
only: never another tenant's row."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
import pyarrow as pa
from pyarrow import ipc

from replay.columns import check_store
from replay.forged import forged_findings
from replay.settle import SETTLE_S, settle_gaps
from replay.stored import StoredRow, quote, stored_rows
from replay.verify import KINDS, Finding, chain_walk, orphan_links, retention_cuts
from schemas import authn
from sinks.store import Store
from sinks.tables import CHAINED_TABLES
from sinks.verify_jobs import Verification, VerifyJob, VerifyStoppedError

MAX_FINDINGS_SHOWN = 100
# Details of findings on no tenant's record that are our own words (seqs and hashes).
OWN_WORDS = frozenset({"deleted", "truncated"})
PROGRESS_EVERY_ROWS = 1_000
WAIT_STEP_S = 1.0  # how often a query's wait looks whether the job must end


def _remaining_s(job: VerifyJob) -> float:
    if job.stop.is_set():
        raise VerifyStoppedError("stopped")
    left = job.deadline_s - time.monotonic()
    if left <= 0:
        raise VerifyStoppedError("out of time")
    return left


def _on_store(
    store: Store, job: VerifyJob, loop: asyncio.AbstractEventLoop, sql: str, fmt: str
) -> bytes:
    """One query on the store's thread, limited to the job's remaining time."""
    left = _remaining_s(job)
    settings = {"max_execution_time": max(1, math.ceil(left))}
    call = store.run(store.read_only, sql, fmt, settings)
    future = asyncio.run_coroutine_threadsafe(call, loop)
    while True:
        try:
            data: bytes = future.result(timeout=WAIT_STEP_S)
        except TimeoutError:
            # Waited on the store: end with the job (the sink stops, or its time is up).
            if job.stop.is_set() or time.monotonic() > job.deadline_s + WAIT_STEP_S:
                future.cancel()
                raise VerifyStoppedError("stopped") from None
            continue
        return data


def _counted(rows: Iterable[StoredRow], job: VerifyJob) -> Iterator[StoredRow]:
    for n, row in enumerate(rows, start=1):
        if n % PROGRESS_EVERY_ROWS == 0:
            job.records_checked = n
        yield row
        job.records_checked = n


def _count_sql(tenant: str | None) -> str:
    union = " UNION ALL ".join(
        f"SELECT producer_id, tenant_id FROM {t}"  # noqa: S608
        for t in CHAINED_TABLES
    )
    scope = "1"
    if tenant is not None:
        scope = (
            f"producer_id IN (SELECT producer_id FROM ({union}) "  # noqa: S608
            f"WHERE tenant_id = {quote(tenant)})"
        )
    return f"SELECT count() FROM ({union}) WHERE {scope}"  # noqa: S608


def shown(finding: Finding, tenant: str | None) -> dict[str, Any]:
    """A finding as the API shows it; on a tenant's job, one on no record of the tenant's
    (a gap, bytes that do not decode) keeps its kind, producer and seq, and its detail only
    when it is made of seqs and hashes."""
    own = tenant is None or finding.tenant_id == tenant
    detail = finding.detail
    if not own and finding.kind not in OWN_WORDS:
        detail = "a record of this chain that is not this tenant's"
    return {
        "kind": finding.kind,
        "producer_id": finding.producer_id,
        "seq": finding.seq,
        "at": finding.time,
        "table": finding.table if own else "",
        "event_id": finding.event_id if own else "",
        "detail": detail,
    }


def store_verification(
    store: Store,
    keyring: Callable[[], authn.Keyring | None] = authn.installed,
    settle_s: float = SETTLE_S,
) -> Verification:
    """The verification of a job's scope over a store this process owns."""

    def verify(job: VerifyJob, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        ring = keyring()
        if ring is None:
            raise RuntimeError("no org keyring: record authentication cannot be checked")
        started = time.monotonic()

        def query(sql: str) -> list[list[Any]]:
            data = _on_store(store, job, loop, sql, "JSONCompactEachRow")
            return [orjson.loads(line) for line in data.splitlines() if line.strip()]

        def read(sql: str) -> pa.Table:
            data = _on_store(store, job, loop, sql, "ArrowStream")
            return ipc.open_stream(data).read_all() if data else pa.table({})

        tenant = job.tenant
        job.phase = "chains"
        job.records_total = int(query(_count_sql(tenant))[0][0])

        def counted(*args: Any, **kwargs: Any) -> Iterator[StoredRow]:
            return _counted(stored_rows(*args, **kwargs), job)

        def wait(seconds: float) -> None:
            job.phase = "settling"
            if job.stop.wait(min(seconds, _remaining_s(job))):
                raise VerifyStoppedError("stopped")

        expired = retention_cuts(query)
        first = chain_walk(query, expired, tenant_id=tenant, rows=counted)(None)
        again = chain_walk(query, expired, tenant_id=tenant)  # progress counts the first
        report = settle_gaps(first, again, wait, settle_s)
        report.findings.extend(orphan_links(query, tenant_id=tenant))
        job.phase = "authentication"
        report.findings.extend(forged_findings(query, authn.Verifier(ring), tenant_id=tenant))
        job.phase = "columns"
        columns = check_store(read, tenant_id=tenant)
        report.findings.extend(columns.findings)
        report.findings.sort(key=lambda f: (f.producer_id, f.seq, KINDS.index(f.kind)))
        by_kind = {k: n for k in KINDS if (n := sum(f.kind == k for f in report.findings))}
        return {
            "clean": report.clean,
            "producers": report.producers,
            "records": report.records,
            "checkpoints": report.checkpoints,
            "open_chains": report.open_chains,
            "expired": report.expired,
            "links": report.links,
            "in_flight": report.in_flight,
            "columns_rows": columns.rows,
            "findings_total": len(report.findings),
            "findings_by_kind": by_kind,
            "findings": [shown(f, tenant) for f in report.findings[:MAX_FINDINGS_SHOWN]],
            "verify_ms": round((time.monotonic() - started) * 1000),
        }

    return verify
