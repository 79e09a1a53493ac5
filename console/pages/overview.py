"""Overview: calls, spend, errors, active users and policy triggers over a window, as
time series; traffic and cost per provider and model; gateway and pipeline health. The
figures are one fragment the page polls (htmx, every GOVLEDGER_CONSOLE_REFRESH_S)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from console import charts, formats
from console.backend import ApiError
from console.pages.common import TENANT_FILTER, WINDOWS, PageContext, now_ms, window_of
from console.rendering import console_of
from console.worker_health import WorkerHealth

BUCKETS = 30
SINCE = "occurred_at >= fromUnixTimestamp64Milli({since_ms:Int64})"
# Fixed text; values are bound by the engine ({name:Type}), never spliced.
SERIES_SQL = (
    "SELECT intDiv(toUnixTimestamp64Milli(occurred_at), {bucket_ms:Int64}) AS bucket, "  # noqa: S608
    "count() AS calls, sum(cost_nanousd) AS cost, "
    "countIf(error_code IS NOT NULL) AS errors, "
    "uniqExact(ifNull(user_id, key_id)) AS users, "
    "countIf(length(guardrails_triggered) > 0) AS triggered "
    f"FROM lineage WHERE {SINCE} AND {TENANT_FILTER} GROUP BY bucket ORDER BY bucket"
)
# Fixed text; values are bound by the engine ({name:Type}), never spliced.
TOTALS_SQL = (
    "SELECT count() AS calls, sum(cost_nanousd) AS cost, "  # noqa: S608
    "countIf(error_code IS NOT NULL) AS errors, "
    "uniqExact(ifNull(user_id, key_id)) AS users, "
    "countIf(length(guardrails_triggered) > 0) AS triggered "
    f"FROM lineage WHERE {SINCE} AND {TENANT_FILTER}"
)
# Fixed text; values are bound by the engine ({name:Type}), never spliced.
DISTRIBUTION_SQL = (
    "SELECT provider, model_selected AS model, count() AS calls, "  # noqa: S608
    "sum(cost_nanousd) AS cost, countIf(error_code IS NOT NULL) AS errors "
    f"FROM lineage WHERE {SINCE} AND {TENANT_FILTER} "
    "GROUP BY provider, model ORDER BY calls DESC, provider, model LIMIT 20"
)
# Fixed text; values are bound by the engine ({name:Type}), never spliced.
GATEWAYS_SQL = (
    "SELECT producer_id, count() AS calls, countIf(error_code IS NOT NULL) AS errors, "  # noqa: S608
    "max(toUnixTimestamp64Milli(occurred_at)) AS last_ms, "
    "quantile(0.5)(latency_ms) AS p50_ms, quantile(0.99)(latency_ms) AS p99_ms "
    f"FROM lineage WHERE {SINCE} AND {TENANT_FILTER} "
    "GROUP BY producer_id ORDER BY producer_id LIMIT 50"
)
TOTALS = ("calls", "cost", "errors", "users", "triggered")
# Circuit breakers are the fleet's, not a tenant's (their rows carry no tenant): an org
# admin sees them; for a tenant admin the engine's filter leaves none.
CIRCUITS_SQL = (
    "SELECT provider, model, argMax(state, occurred_at) AS state, "
    "max(toUnixTimestamp64Milli(occurred_at)) AS at_ms FROM breaker_state "
    "GROUP BY provider, model ORDER BY provider, model LIMIT 100"
)
TENANTS_SQL = (
    "SELECT tenant_id, count() AS calls, sum(cost_nanousd) AS cost, "  # noqa: S608
    "countIf(error_code IS NOT NULL) AS errors "
    f"FROM lineage WHERE {SINCE} GROUP BY tenant_id ORDER BY cost DESC LIMIT 50"
)
SERIES = (
    ("calls", "Calls", formats.count),
    ("cost", "Spend", formats.usd),
    ("errors", "Errors", formats.count),
    ("users", "Active users", formats.count),
    ("triggered", "Policy triggers", formats.count),
)


def buckets(
    rows: Sequence[dict[str, Any]], since_ms: int, bucket_ms: int, count: int
) -> dict[str, list[int]]:
    """Each series as `count` buckets from `since_ms`, empty buckets as 0."""
    first = since_ms // bucket_ms
    filled = {name: [0] * count for name, _, _ in SERIES}
    for row in rows:
        index = int(row["bucket"]) - first
        if 0 <= index < count:
            for name, values in filled.items():
                values[index] = int(row[name])
    return filled


def bucket_labels(since_ms: int, bucket_ms: int, count: int) -> list[str]:
    """The UTC start of each bucket."""
    start = since_ms // bucket_ms * bucket_ms
    return [formats.when(start + i * bucket_ms)[5:16] for i in range(count)]


async def _nothing() -> list[dict[str, Any]]:
    return []


async def _workers(request: web.Request, page: PageContext) -> list[WorkerHealth] | None:
    """The workers' figures (fleet-wide, so org admins only: None for a tenant admin,
    whose Overview reads no worker at all)."""
    if not page.session.org_level:
        return None
    settings = console_of(request).settings
    return await page.backend.workers(
        settings.worker_metrics_urls, settings.console_worker_timeout_s
    )


async def _pipeline(page: PageContext) -> dict[str, Any] | None:
    """The sink's ingestion figures (org admins only: None for a tenant admin)."""
    if not page.session.org_level:
        return None
    return dict(await page.backend.query(page.session.key, "/v1/ingestion"))


async def figures(request: web.Request) -> dict[str, Any]:
    """Everything the live fragment shows."""
    page = PageContext(request, console_of(request).backend)
    window, window_s = window_of(request)
    bucket_ms = window_s * 1000 // BUCKETS
    end_ms = now_ms()
    since_ms = (end_ms // bucket_ms - BUCKETS + 1) * bucket_ms
    # Read at the same time as the store (a worker that does not answer costs its timeout).
    reading_workers = asyncio.ensure_future(_workers(request, page))
    series_rows, totals, distribution, gateways, circuits, tenants = await asyncio.gather(
        page.sql(SERIES_SQL, since_ms=since_ms, bucket_ms=bucket_ms),
        page.sql(TOTALS_SQL, since_ms=since_ms),
        page.sql(DISTRIBUTION_SQL, since_ms=since_ms),
        page.sql(GATEWAYS_SQL, since_ms=since_ms),
        page.sql(CIRCUITS_SQL),
        # Every tenant's share, for an org admin looking at all of them (a way in).
        page.sql(TENANTS_SQL, since_ms=since_ms) if page.tenant is None else _nothing(),
    )
    workers = await reading_workers
    try:
        pipeline, pipeline_error = await _pipeline(page), ""
    except ApiError as exc:
        pipeline, pipeline_error = None, exc.message
    filled = buckets(series_rows, since_ms, bucket_ms, BUCKETS)
    labels = bucket_labels(since_ms, bucket_ms, BUCKETS)
    return {
        "window": window,
        "windows": list(WINDOWS),
        "tenant": page.tenant,
        "totals": totals[0] if totals else dict.fromkeys(TOTALS, 0),
        "charts": [
            (title, charts.series_chart(title, labels, filled[name], shown=shown))
            for name, title, shown in SERIES
        ],
        "distribution": distribution,
        "distribution_chart": charts.paired_bars(
            "Traffic and cost by provider and model",
            [
                (f"{r['provider']} · {r['model']}", int(r["calls"]), int(r["cost"]) / 1e9)
                for r in distribution
            ],
            right=lambda v: f"{v:,.4f}",
        ),
        "gateways": gateways,
        "circuits": circuits,
        "tenants": tenants if page.session.org_level else [],
        "pipeline": pipeline,
        "pipeline_error": pipeline_error,
        "workers": workers,
        "now_ms": end_ms,
        "percent": formats.percent,
    }


async def overview(request: web.Request) -> web.Response:
    """The page, with its figures (the fragment polls for fresh ones)."""
    return console_of(request).render(request, "overview.html", **await figures(request))


async def live(request: web.Request) -> web.Response:
    """The figures alone: what the page swaps in every few seconds."""
    return console_of(request).render(request, "_overview_live.html", **await figures(request))


def routes() -> list[web.RouteDef]:
    """The Overview's routes."""
    return [web.get("/", overview), web.get("/overview/live", live)]
