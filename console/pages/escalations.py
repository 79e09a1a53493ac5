"""Escalations: the queues (each team's and the central one) with their SLA timers by
priority, and claim, reassign, approve or reject — all through the admin API, which
answers 404 for an escalation of a tenant the session may not see. The table is a fragment
the page polls, so timers and new escalations show up live. One escalation's page is the
held call's context: what its record carries (the request's sha256, never its text: the
record has none), the key's prefix, the pack and its steps, and, once the call was
answered, its lineage record (model, policies applied, guardrails triggered, status)."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from typing import Any

from aiohttp import web

from console.backend import ApiError
from console.pages.common import TENANT_FILTER, PageContext, form_fields, now_ms
from console.pages.events import named
from console.rendering import console_of
from console.security import TENANT_ID, RefusedError, session_of

STATUSES = ("open", "resolved", "all")
ESCALATION_ID = re.compile(r"esc_[0-9a-f]{1,64}")
DONE = {
    "claimed": "Claimed.",
    "reassigned": "Reassigned.",
    "approve": "Approved: a held call proceeds.",
    "reject": "Rejected: a held call is refused.",
}


# Fixed text; every value is bound by the engine ({name:Type}), never spliced.
OPENED_SQL = (
    "SELECT toUnixTimestamp64Milli(occurred_at) AS at_ms, producer_id, seq, request_sha256 "  # noqa: S608
    "FROM escalation_events WHERE escalation_id = {escalation:String} "
    f"AND event_type = 'escalation.opened' AND {TENANT_FILTER} LIMIT 1"
)
CALL_SQL = (
    "SELECT toString(event_id) AS id, toUnixTimestamp64Milli(occurred_at) AS at_ms, "  # noqa: S608
    "model_requested, model_selected, provider, policies_applied, guardrails_triggered, "
    "decision, http_status, error_code, request_sha256, cost_nanousd FROM lineage "
    f"WHERE trace_id = {{trace:String}} AND {TENANT_FILTER} ORDER BY occurred_at LIMIT 5"
)


def timer(row: dict[str, Any], now: int) -> str:
    """The SLA timer: time left before the deadline, or how long past it."""
    deadline = row.get("deadline_at_ms")
    if row["status"] == "resolved" or deadline is None:
        return ""
    left_s = (int(deadline) - now) // 1000
    span = abs(left_s)
    text = (
        f"{span // 3600}h {span % 3600 // 60:02d}m"
        if span >= 3600
        else f"{span // 60}m {span % 60:02d}s"
    )
    return f"due in {text}" if left_s >= 0 else f"overdue by {text}"


async def listing(request: web.Request) -> dict[str, Any]:
    """The queues as the admin API lists them, grouped by queue."""
    page = PageContext(request, console_of(request).backend)
    status = request.query.get("status", "open")
    if status not in STATUSES:
        raise RefusedError("'status' is open, resolved or all")
    params = {"status": status}
    if page.tenant:
        params["tenant"] = page.tenant
    listed = await page.admin("GET", "/v1/admin/escalations", **params)
    now = now_ms()
    queues: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in listed["data"]:
        queues[str(row["queue"] or "")].append({**row, "timer": timer(row, now)})
    return {
        "tenant": page.tenant,
        "status": status,
        "statuses": STATUSES,
        "queues": sorted(queues.items(), key=lambda q: (q[0] != "central", q[0])),
        "now_ms": now,
    }


async def escalations(request: web.Request) -> web.Response:
    """The page."""
    notice = DONE.get(request.query.get("done", ""), "")
    context = await listing(request)
    return console_of(request).render(request, "escalations.html", notice=notice, **context)


async def live(request: web.Request) -> web.Response:
    """The queues alone, polled by the page."""
    context = await listing(request)
    return console_of(request).render(request, "_escalations_live.html", **context)


async def escalation(request: web.Request) -> web.Response:
    """One escalation and the held call's context. The admin API decides whether the
    session may see it (404 otherwise) before the store is asked anything."""
    escalation_id = request.match_info["escalation_id"]
    if not ESCALATION_ID.fullmatch(escalation_id):
        raise RefusedError("an escalation id is esc_ and hex digits")
    page = PageContext(request, console_of(request).backend)
    params = {"status": "all", **({"tenant": page.tenant} if page.tenant else {})}
    listed, keys, packs = await asyncio.gather(
        page.admin("GET", "/v1/admin/escalations", **params),
        page.admin("GET", "/v1/admin/keys"),
        page.admin("GET", "/v1/admin/policies"),
    )
    found = [row for row in listed["data"] if row["escalation_id"] == escalation_id]
    if not found:
        raise web.HTTPNotFound(text=f"no escalation {escalation_id} in the tenants this key sees")
    row = {**found[0], "timer": timer(found[0], now_ms())}
    opened, calls = await asyncio.gather(
        page.sql(OPENED_SQL, escalation=escalation_id), page.sql(CALL_SQL, trace=row["trace_id"])
    )
    key = next((k for k in keys["data"] if k["key_id"] == row["key_id"]), None)
    pack = next(
        (
            p
            for p in packs["data"]
            if (p["tenant"], p["pack"]) == (row["tenant_id"], row["policy_pack"])
        ),
        None,
    )
    for call in calls:
        call["guardrails"] = [named(g, ("name", "action")) for g in call["guardrails_triggered"]]
    return console_of(request).render(
        request,
        "escalation.html",
        tenant=page.tenant,
        e=row,
        opened=opened[0] if opened else None,
        key_prefix=key["key_prefix"] if key else "",
        pack=pack,
        calls=calls,
    )


def action(path: str, names: tuple[str, ...]) -> Any:
    """A form handler posting to one of the escalation's admin routes."""

    async def handler(request: web.Request) -> web.StreamResponse:
        session = session_of(request)
        escalation_id = request.match_info["escalation_id"]
        if not ESCALATION_ID.fullmatch(escalation_id):
            raise RefusedError("an escalation id is esc_ and hex digits")
        form = await request.post()
        tenant = str(form.get("tenant", "")).strip()
        if tenant and (not TENANT_ID.fullmatch(tenant) or not session.sees(tenant)):
            raise RefusedError(f"this key may not change tenant {tenant!r}")
        body = form_fields(form, *names)
        done = {"claim": "claimed", "reassign": "reassigned"}.get(path) or body.get("decision", "")
        try:
            await console_of(request).backend.admin(
                session.key, "POST", f"/v1/admin/escalations/{escalation_id}/{path}", body
            )
        except ApiError as exc:
            if exc.status == 401:
                raise
            context = await listing(request)
            return console_of(request).render(
                request, "escalations.html", exc.status, notice="", error=exc.message, **context
            )
        query = {"done": done}
        if session.org_level and tenant:
            query["tenant"] = tenant
        raise web.HTTPSeeOther(str(request.app.router["escalations"].url_for().with_query(query)))

    return handler


def routes() -> list[web.RouteDef]:
    """The Escalations routes."""
    return [
        web.get("/escalations", escalations, name="escalations"),
        web.get("/escalations/live", live),
        web.get("/escalations/{escalation_id}", escalation),
        web.post("/escalations/{escalation_id}/claim", action("claim", ())),
        web.post(
            "/escalations/{escalation_id}/reassign", action("reassign", ("queue", "reviewer"))
        ),
        web.post("/escalations/{escalation_id}/resolve", action("resolve", ("decision", "note"))),
    ]
