"""Access keys: every key the session's key may see (prefix, tenant, team, role, scopes,
expiry, last use, what its wallet has left), creating one (its secret is on the answer
to the form and nowhere else) and revoking one; both through the admin API."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from console.backend import ApiError
from console.pages.common import PageContext, form_fields
from console.rendering import console_of
from console.security import TENANT_ID, RefusedError, session_of
from schemas.records import ROLES

KEY_ID = re.compile(r"key_[0-9a-f]{1,64}")
DONE = {"revoked": "Key revoked: calls with it now get 401."}


async def render_keys(
    request: web.Request,
    *,
    tenant: str | None = None,
    notice: str = "",
    error: str = "",
    issued: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    """The page for the request's tenant (or a form's); an org admin without one sees
    every tenant's keys."""
    page = PageContext(request, console_of(request).backend, tenant)
    listed, published = await asyncio.gather(
        page.admin("GET", "/v1/admin/keys"), page.admin("GET", "/v1/admin/policies")
    )
    # The packs a new key may name: its tenant's published ones.
    packs = sorted({p["pack"] for p in published["data"] if p["tenant"] == page.tenant})
    keys = sorted(
        (k for k in listed["data"] if page.tenant is None or k["tenant"] == page.tenant),
        key=lambda k: (k["status"] != "active", k["tenant"], k["team"], k["key_id"]),
    )
    roles = [r for r in ROLES if page.session.org_level or r != "org-admin"]
    return console_of(request).render(
        request,
        "keys.html",
        status,
        tenant=page.tenant,
        keys=keys,
        roles=roles,
        packs=packs,
        notice=notice,
        error=error,
        issued=issued,
    )


async def keys(request: web.Request) -> web.Response:
    """The page."""
    return await render_keys(request, notice=DONE.get(request.query.get("done", ""), ""))


def _form_tenant(request: web.Request, form: Any) -> str:
    tenant = str(form.get("tenant", "")).strip()
    if not TENANT_ID.fullmatch(tenant) or not session_of(request).sees(tenant):
        raise RefusedError(f"this key may not change tenant {tenant!r}")
    return tenant


async def create(request: web.Request) -> web.Response:
    """Issue a key; the answer is the page with the secret, shown this once."""
    session = session_of(request)
    form = await request.post()
    tenant = _form_tenant(request, form)
    body: dict[str, Any] = form_fields(
        form, "team", "name", "role", "expires_in", "models", "policy_pack"
    )
    body["tenant"] = tenant
    try:
        issued = await console_of(request).backend.admin(
            session.key, "POST", "/v1/admin/keys", body
        )
    except ApiError as exc:
        if exc.status == 401:
            raise
        return await render_keys(request, tenant=tenant, error=exc.message, status=exc.status)
    return await render_keys(request, tenant=tenant, issued=issued, status=201)


async def revoke(request: web.Request) -> web.StreamResponse:
    """Revoke a key (the admin API answers 404 for a key of a tenant this one may not see)."""
    session = session_of(request)
    key_id = request.match_info["key_id"]
    if not KEY_ID.fullmatch(key_id):
        raise RefusedError("a key id is key_ and hex digits")
    form = await request.post()
    tenant = _form_tenant(request, form)
    try:
        await console_of(request).backend.admin(
            session.key,
            "POST",
            f"/v1/admin/keys/{key_id}/revoke",
            {"reason": "revoked in the console"},
        )
    except ApiError as exc:
        if exc.status == 401:
            raise
        return await render_keys(request, tenant=tenant, error=exc.message, status=exc.status)
    query = {"tenant": tenant, "done": "revoked"} if session.org_level else {"done": "revoked"}
    raise web.HTTPSeeOther(str(request.app.router["keys"].url_for().with_query(query)))


def routes() -> list[web.RouteDef]:
    """The Access keys routes."""
    return [
        web.get("/keys", keys, name="keys"),
        web.post("/keys", create),
        web.post("/keys/{key_id}/revoke", revoke),
    ]
