"""Cost Center: the wallet tree (org → team → key) with balances, spend this period
against budget, threshold alerts, a reconciliation column (the wallet's spend against the
sum of its calls' costs in the audit table) and each wallet's journal; funding,
allocating and budgets through the admin API (which decides who may: funding, org → team
allocations and budgets are for org admins; a tenant admin may allocate its teams' money
to keys)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from console.backend import ApiError
from console.pages.common import TENANT_FILTER, PageContext, form_fields
from console.rendering import console_of
from console.security import TENANT_ID, RefusedError, session_of

# Fixed text; every value is bound by the engine ({name:Type}), never spliced.
BUDGETS_SQL = (
    "SELECT wallet_id, argMax(budget_nanousd, occurred_at) AS budget, "  # noqa: S608
    "argMax(thresholds_percent, occurred_at) AS thresholds FROM control_events "
    f"WHERE event_type = 'wallet.budget_set' AND {TENANT_FILTER} GROUP BY wallet_id LIMIT 1000"
)
ALERTS_SQL = (
    "SELECT wallet_id, threshold_percent, spent_nanousd, budget_nanousd, "  # noqa: S608
    "toUnixTimestamp64Milli(occurred_at) AS at_ms FROM alerts "
    f"WHERE event_type = 'quota.threshold' AND {TENANT_FILTER} "
    "ORDER BY occurred_at DESC LIMIT 20"
)
SPENT_SQL = (
    "SELECT wallet_id, sum(cost_nanousd) AS cost, count() AS calls FROM lineage "  # noqa: S608
    f"WHERE {TENANT_FILTER} GROUP BY wallet_id LIMIT 1000"
)
JOURNAL_SQL = (
    "SELECT event_type, toUnixTimestamp64Milli(occurred_at) AS at_ms, "  # noqa: S608
    "wallet_id, from_wallet_id, to_wallet_id, amount_nanousd, overdraft_limit_nanousd, "
    "budget_nanousd, memo, reason, "
    "concat(funded_by, allocated_by, refunded_by, corrected_by, set_by) AS actor "
    "FROM control_events WHERE startsWith(event_type, 'wallet.') "
    "AND (wallet_id = {wallet:String} OR from_wallet_id = {wallet:String} "
    f"OR to_wallet_id = {{wallet:String}}) AND {TENANT_FILTER} "
    "ORDER BY occurred_at DESC LIMIT 100"
)
CALLS_SQL = (
    "SELECT toString(event_id) AS id, toUnixTimestamp64Milli(occurred_at) AS at_ms, "  # noqa: S608
    "model_selected, cost_nanousd FROM lineage "
    f"WHERE wallet_id = {{wallet:String}} AND {TENANT_FILTER} "
    "ORDER BY occurred_at DESC LIMIT 20"
)
# What a change says once done (a fixed text per code: nothing from the URL is shown).
DONE = {
    "funded": "Funded.",
    "allocated": "Allocated.",
    "budget": "Budget set.",
}


def tree(
    wallets: list[dict[str, Any]], budgets: dict[str, Any], spent: dict[str, Any]
) -> list[dict[str, Any]]:
    """The wallets in tree order (org, then each team, then its keys), each with its
    depth, budget, use of the budget and reconciliation against the audit table."""
    rows = []
    for wallet in sorted(wallets, key=lambda w: (w["tenant_id"], w["wallet_id"])):
        wallet_id = wallet["wallet_id"]
        budget = budgets.get(wallet_id)
        budget_nanousd = int(budget["budget"]) if budget else 0
        audited = spent.get(wallet_id)
        audited_nanousd = int(audited["cost"]) if audited else 0
        period = int(wallet["period_spent_nanousd"])
        rows.append(
            {
                **wallet,
                "depth": wallet_id.count("/"),
                "name": wallet_id.rsplit("/", 1)[-1],
                "budget_nanousd": budget_nanousd,
                "thresholds": list(budget["thresholds"]) if budget else [],
                "used_percent": (100 * period / budget_nanousd) if budget_nanousd else None,
                "audited_nanousd": audited_nanousd,
                "reconciled": audited_nanousd == int(wallet["spent_nanousd"]),
            }
        )
    return rows


async def render_costs(
    request: web.Request,
    *,
    tenant: str | None = None,
    notice: str = "",
    error: str = "",
    status: int = 200,
) -> web.Response:
    """The Cost Center for the request's tenant, or `tenant` (a form's); an org admin
    without one sees every tenant."""
    page = PageContext(request, console_of(request).backend, tenant)
    balances, budgets, alerts, spent = await asyncio.gather(
        page.report("/v1/wallets/balance"),
        page.sql(BUDGETS_SQL),
        page.sql(ALERTS_SQL),
        page.sql(SPENT_SQL),
    )
    rows = tree(
        list(balances["wallets"]),
        {b["wallet_id"]: b for b in budgets},
        {s["wallet_id"]: s for s in spent},
    )
    return console_of(request).render(
        request,
        "costs.html",
        status,
        tenant=page.tenant,
        rows=rows,
        alerts=alerts,
        notice=notice,
        error=error,
    )


async def costs(request: web.Request) -> web.Response:
    """The page."""
    return await render_costs(request, notice=DONE.get(request.query.get("done", ""), ""))


async def journal(request: web.Request) -> web.Response:
    """One wallet's journal: its admin entries (funding, allocations, refunds,
    corrections, limits, budgets) and the last calls charged to it."""
    page = PageContext(request, console_of(request).backend)
    wallet = request.query.get("wallet", "")
    parts = wallet.split("/")
    if not 1 <= len(parts) <= 3 or not all(TENANT_ID.fullmatch(p) for p in parts):
        raise RefusedError("'wallet' is tenant, tenant/team or tenant/team/key_id")
    if not session_of(request).sees(parts[0]):
        raise RefusedError(f"this key may not see tenant {parts[0]!r}")
    entries, calls = await asyncio.gather(
        page.sql(JOURNAL_SQL, wallet=wallet), page.sql(CALLS_SQL, wallet=wallet)
    )
    return console_of(request).render(
        request, "journal.html", tenant=page.tenant, wallet=wallet, entries=entries, calls=calls
    )


def change(path: str, names: tuple[str, ...], done: str) -> Any:
    """A form handler that posts its fields to an admin route and comes back to the page
    (the tenant is the form's; a tenant admin's may only be its own)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        session = session_of(request)
        form = await request.post()
        body = form_fields(form, "tenant", *names)
        tenant = body.get("tenant", "")
        if not TENANT_ID.fullmatch(tenant) or not session.sees(tenant):
            raise RefusedError(f"this key may not change tenant {tenant!r}")
        try:
            await console_of(request).backend.admin(session.key, "POST", path, body)
        except ApiError as exc:
            if exc.status == 401:
                raise
            # Shown on the page, for the tenant the form named.
            return await render_costs(request, tenant=tenant, error=exc.message, status=exc.status)
        query = {"tenant": tenant, "done": done} if session.org_level else {"done": done}
        raise web.HTTPSeeOther(str(request.app.router["costs"].url_for().with_query(query)))

    return handler


def routes() -> list[web.RouteDef]:
    """The Cost Center's routes."""
    return [
        web.get("/costs", costs, name="costs"),
        web.get("/costs/journal", journal),
        web.post(
            "/costs/fund", change("/v1/admin/wallets/fund", ("team", "usd", "memo"), "funded")
        ),
        web.post(
            "/costs/allocate",
            change("/v1/admin/wallets/allocate", ("team", "key", "usd", "memo"), "allocated"),
        ),
        web.post(
            "/costs/budget",
            change("/v1/admin/wallets/budget", ("team", "usd", "thresholds"), "budget"),
        ),
    ]
