"""Retention per tenant: the sink deletes audit rows older than the tenant's
`retention_days` (its policy packs' `audit-logger` step).

Why a job and not a TTL expression: ClickHouse evaluates TTL per row from the row's own
columns, so a per-tenant TTL would need the days stamped on every row at insert time,
and a changed policy would leave rows written before it under the old period. The job
applies the tenant's current policy to all its rows, on chDB and a server alike, and
needs nothing in the insert path. It runs every GOVLEDGER_RETENTION_INTERVAL_S in the sink, and on
demand (`POST /v1/retention/run` on the query API, admin token).

Which rows: the per-call audit (`lineage`) and what was derived from calls
(`escalation_events`, `alerts`, `sla_windows`), by `occurred_at`. Kept: the admin log
(`control_events`) and `wallet_state` (balances and keys are restored from them), the
rollups (`spend_daily`, `provider_hourly`: totals, no call detail) and `dead_letters`.
A tenant with no `audit-logger` step keeps everything; with several packs, the longest
retention wins (no pack's period is cut short).

Every deletion leaves gaps in the producers' hash chains. Before deleting, the job writes
the seqs it is about to delete, per table and producer, to `retention_cuts`; `govledger
audit verify` accounts a gap that these cover to retention and reports any other gap as a
deletion. Written first, so a crash between the two steps leaves a cut listing rows that
still exist (harmless: verify only reads cuts to explain gaps), never an unexplained gap.

Chain links (`chain_links`, see sinks.links) are cut like the data they copy: a link whose
data table is one of the above goes when its own tenant's `occurred_at` is past the
retention, or when the record it copies is gone from its table (the copy may carry a later
time than the original); its seqs are recorded in `retention_cuts` like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from sinks.store import Store
from sinks.tables import LINKS_TABLE

log = structlog.get_logger(__name__)

RETENTION_TABLES = ("lineage", "escalation_events", "alerts", "sla_windows")
DAY_MS = 86_400_000
CUTS_TABLE = "retention_cuts"
MAX_ROWS_PER_CUT = 1_000_000
MAX_CUTS_PER_RUN = 100  # past that, the next run goes on
CUT_COLUMNS = ("deleted_at", "tenant_id", "table_name", "producer_id", "cutoff_at", "rows", "seqs")


def retention_by_tenant(steps: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Days per tenant from (tenant, retention_days) of each pack with an audit step:
    the longest per tenant."""
    days: dict[str, int] = {}
    for tenant_id, retention_days in steps:
        days[tenant_id] = max(days.get(tenant_id, 0), retention_days)
    return days


def delete_expired(store: Store, days_by_tenant: Mapping[str, int], now_ms: int) -> dict[str, int]:
    """Delete each tenant's rows older than its retention; rows deleted per table."""
    deleted = dict.fromkeys((*RETENTION_TABLES, LINKS_TABLE), 0)
    for tenant_id, days in sorted(days_by_tenant.items()):
        assert days > 0, "a retention is at least one day"
        for table in RETENTION_TABLES:
            deleted[table] += _delete_before(
                store, table, tenant_id, now_ms - days * DAY_MS, now_ms
            )
        for table in RETENTION_TABLES:  # after their data: a link whose record is gone goes
            deleted[LINKS_TABLE] += _delete_before(
                store, table, tenant_id, now_ms - days * DAY_MS, now_ms, links=True
            )
    if any(deleted.values()):
        log.info("retention applied", deleted=deleted)
    return deleted


def _delete_before(
    store: Store, table: str, tenant_id: str, cutoff_ms: int, now_ms: int, *, links: bool = False
) -> int:
    """Delete a tenant's rows of `table` older than `cutoff_ms`, oldest first, at most
    MAX_ROWS_PER_CUT at a time (the seqs of a cut are held in memory to record them).
    With `links`, the chain links of `table`'s data instead: those older than `cutoff_ms`
    and those whose record is no longer in `table`."""
    total = 0
    data_table = table
    for _ in range(MAX_CUTS_PER_RUN):
        parameters = {"tenant": tenant_id, "cutoff_ms": cutoff_ms}
        condition = (
            "tenant_id = {tenant:String} "
            "AND occurred_at < fromUnixTimestamp64Milli({cutoff_ms:Int64}, 'UTC')"
        )
        if links:
            table = LINKS_TABLE
            condition = (
                f"table_name = '{data_table}' AND tenant_id = {{tenant:String}} AND ("  # noqa: S608
                "occurred_at < fromUnixTimestamp64Milli({cutoff_ms:Int64}, 'UTC') "
                f"OR event_id NOT IN (SELECT event_id FROM {data_table}))"
            )
        rows = store.query_rows(f"SELECT count() FROM {table} WHERE {condition}", parameters)  # noqa: S608 - table names are ours
        expired = int(rows[0][0])
        if not expired:
            break
        if expired > MAX_ROWS_PER_CUT:
            # Stop this cut at the time of the MAX_ROWS_PER_CUT-th oldest row.
            (bound,) = store.query_rows(
                f"SELECT toUnixTimestamp64Milli(occurred_at) FROM {table} WHERE {condition} "  # noqa: S608
                f"ORDER BY occurred_at LIMIT 1 OFFSET {MAX_ROWS_PER_CUT}",
                parameters,
            )
            parameters["cutoff_ms"] = int(bound[0])
            expired = int(
                store.query_rows(f"SELECT count() FROM {table} WHERE {condition}", parameters)[0][0]  # noqa: S608
            )
            if not expired:
                break  # more than a cut's rows in one millisecond: left for a later run
        _record_cut(store, table, tenant_id, parameters, condition, now_ms=now_ms)
        # A lightweight delete: the rows are gone from reads at once, from disk at the
        # next merge.
        store.command(f"DELETE FROM {table} WHERE {condition}", parameters)  # noqa: S608
        total += expired
    return total


def _record_cut(
    store: Store,
    table: str,
    tenant_id: str,
    parameters: dict[str, Any],
    condition: str,
    *,
    now_ms: int,
) -> None:
    """Write the seqs about to be deleted from `table`, one row per producer."""
    seqs_by_producer = store.query_rows(
        f"SELECT producer_id, arraySort(groupArray(seq)) FROM {table} "  # noqa: S608 - table names are ours
        f"WHERE {condition} GROUP BY producer_id",
        parameters,
    )
    deleted_at = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    cutoff_at = datetime.fromtimestamp(parameters["cutoff_ms"] / 1000, tz=UTC)
    store.insert_rows(
        CUTS_TABLE,
        [
            (deleted_at, tenant_id, table, str(producer_id), cutoff_at, len(seqs), list(seqs))
            for producer_id, seqs in seqs_by_producer
        ],
        CUT_COLUMNS,
    )
