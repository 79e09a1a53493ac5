"""Escalations: the queues (each team's and the central one) with their SLA timers by
priority, the held call's context, and claim, reassign, approve or reject — all through
the admin API, which answers 404 for an escalation of a tenant the session may not see.
The table is a fragment the page polls, so timers and new escalations show up live."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from aiohttp import web

from console.backend import ApiError
from console.pages.common import PageContext, form_fields, now_ms
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
        web.post("/escalations/{escalation_id}/claim", action("claim", ())),
        web.post(
            "/escalations/{escalation_id}/reassign", action("reassign", ("queue", "reviewer"))
        ),
        web.post("/escalations/{escalation_id}/resolve", action("resolve", ("decision", "note"))),
    ]
