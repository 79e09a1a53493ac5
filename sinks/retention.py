"""Retention per tenant: the sink deletes audit rows older than the tenant's
`retention_days` (its policy packs' `audit-logger` step).

Why a job and not a TTL expression: ClickHouse evaluates TTL per row from the row's own
columns, so a per-tenant TTL would need the days stamped on every row at insert time,
and a changed policy would leave rows written before it under the old period. The job
applies the tenant's current policy to all its rows, on chDB and a server alike, and
needs nothing in the insert path. It runs every RETENTION_INTERVAL_S in the sink, and on
demand (`POST /v1/retention/run` on the query API, admin token).

Which rows: the per-call audit (`lineage`) and what was derived from calls
(`escalation_events`, `alerts`, `sla_windows`), by `occurred_at`. Kept: the admin log
(`control_events`) and `wallet_state` (balances and keys are restored from them), the
rollups (`spend_daily`, `provider_hourly`: totals, no call detail) and `dead_letters`.
A tenant with no `audit-logger` step keeps everything; with several packs, the longest
retention wins (no pack's period is cut short).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import structlog

from sinks.store import Store

log = structlog.get_logger(__name__)

RETENTION_TABLES = ("lineage", "escalation_events", "alerts", "sla_windows")
RETENTION_INTERVAL_S = 3_600.0
DAY_MS = 86_400_000


def retention_by_tenant(steps: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Days per tenant from (tenant, retention_days) of each pack with an audit step:
    the longest per tenant."""
    days: dict[str, int] = {}
    for tenant_id, retention_days in steps:
        days[tenant_id] = max(days.get(tenant_id, 0), retention_days)
    return days


def delete_expired(store: Store, days_by_tenant: Mapping[str, int], now_ms: int) -> dict[str, int]:
    """Delete each tenant's rows older than its retention; rows deleted per table."""
    deleted = dict.fromkeys(RETENTION_TABLES, 0)
    for tenant_id, days in sorted(days_by_tenant.items()):
        assert days > 0, "a retention is at least one day"
        parameters = {"tenant": tenant_id, "cutoff_ms": now_ms - days * DAY_MS}
        condition = (
            "tenant_id = {tenant:String} "
            "AND occurred_at < fromUnixTimestamp64Milli({cutoff_ms:Int64}, 'UTC')"
        )
        for table in RETENTION_TABLES:
            rows = store.query_rows(f"SELECT count() FROM {table} WHERE {condition}", parameters)  # noqa: S608 - table names are ours
            expired = int(rows[0][0])
            if expired:
                # A lightweight delete: the rows are gone from reads at once, from disk at
                # the next merge.
                store.command(f"DELETE FROM {table} WHERE {condition}", parameters)  # noqa: S608
                deleted[table] += expired
    if any(deleted.values()):
        log.info("retention applied", deleted=deleted)
    return deleted
