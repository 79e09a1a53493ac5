"""Policies: each pack with its versions and their diffs; push an edited or new pack (the
admin API lints it: errors are shown at their lines, beside the text as sent); assign it
to teams and gateways (its top-level `targeting`, applied as the next version with
`PUT /v1/configurations/{name}` and If-Match, so an assignment never overwrites a version
its user has not seen); revert to an earlier version, which publishes that version's text
as the next version (`POST /v1/admin/policies/{name}/revert`; a version older than the
gateway keeps is read from the store and pushed). Every change lands on the control topic,
audited like any push."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from console.backend import ApiError
from console.pack_targeting import (
    TargetingError,
    current_targeting,
    target_names,
    with_targeting,
)
from console.pages.common import TENANT_FILTER, PageContext
from console.rendering import console_of
from console.security import TENANT_ID, RefusedError, session_of

PACK_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MAX_SOURCE_CHARS = 32 * 1024
# Fixed text; every value is bound by the engine ({name:Type}), never spliced.
VERSIONS_SQL = (
    "SELECT version, toUnixTimestamp64Milli(occurred_at) AS at_ms, published_by, diff, "  # noqa: S608
    "source_sha256 FROM control_events WHERE event_type = 'policy.published' "
    f"AND pack_name = {{name:String}} AND {TENANT_FILTER} ORDER BY version DESC LIMIT 100"
)
SOURCE_SQL = (
    "SELECT source_yaml FROM control_events WHERE event_type = 'policy.published' "  # noqa: S608
    f"AND pack_name = {{name:String}} AND version = {{version:Int64}} AND {TENANT_FILTER} "
    "LIMIT 1"
)
DONE = {
    "pushed": "Pushed as a new version.",
    "reverted": "Reverted: published as a new version.",
    "assigned": "Assigned: published as a new version.",
    "unchanged": "Already so: nothing was published.",
}
MAX_TARGETS_CHARS = 8 * 1024


def pack_name_of(value: str) -> str:
    """A pack name as the admin API allows it, else 403."""
    if not PACK_NAME.fullmatch(value):
        raise RefusedError("a pack name is lower-case letters, digits, '.', '_' or '-'")
    return value


async def policies(request: web.Request) -> web.Response:
    """Every pack the session may see, newest version first; the seed templates."""
    page = PageContext(request, console_of(request).backend)
    listed, templates = await asyncio.gather(
        page.admin("GET", "/v1/admin/policies"), page.admin("GET", "/v1/admin/policies/templates")
    )
    packs = [p for p in listed["data"] if page.tenant is None or p["tenant"] == page.tenant]
    return console_of(request).render(
        request,
        "policies.html",
        tenant=page.tenant,
        packs=packs,
        templates=[t["name"] for t in templates["data"]],
    )


async def render_pack(
    request: web.Request,
    *,
    tenant: str | None = None,
    name: str,
    source: str | None = None,
    error: ApiError | None = None,
    notice: str = "",
    status: int = 200,
) -> web.Response:
    """A pack's versions and diffs, and its editor (with `source` as last sent, and the
    lint errors of `error` at their lines)."""
    page = PageContext(request, console_of(request).backend, tenant)
    if page.tenant is None:
        raise RefusedError("choose a tenant (above) to see its packs")
    versions, listed = await asyncio.gather(
        page.sql(VERSIONS_SQL, name=name), page.admin("GET", "/v1/admin/policies")
    )
    published = max(
        (
            int(p["version"])
            for p in listed["data"]
            if (p["tenant"], p["pack"]) == (page.tenant, name)
        ),
        default=0,
    )
    stored = int(versions[0]["version"]) if versions else 0
    if source is None and versions:
        newest = await page.sql(SOURCE_SQL, name=name, version=versions[0]["version"])
        source = str(newest[0]["source_yaml"]) if newest else ""
    teams, gateways = current_targeting(source or "")
    lines = (error.details.get("lines") or error.details.get("violations") or []) if error else []
    marked = {int(item["line"]) for item in lines if isinstance(item.get("line"), int)}
    return console_of(request).render(
        request,
        "pack.html",
        status,
        tenant=page.tenant,
        name=name,
        versions=versions,
        source=source or "",
        numbered=list(enumerate((source or "").splitlines(), start=1)),
        marked=marked,
        problems=lines,
        error=error.message if error else "",
        notice=notice,
        published=published,
        behind=published > stored,
        teams=", ".join(teams),
        gateways=", ".join(gateways),
    )


NAME_LINE = re.compile(r"^name:.*$", re.MULTILINE)


def from_template(source: str, name: str) -> str:
    """A template's text as the start of pack `name` (its name line says so)."""
    if NAME_LINE.search(source):
        return NAME_LINE.sub(f"name: {name}", source, count=1)
    return f"name: {name}\n{source}"


async def pack(request: web.Request) -> web.Response:
    """One pack's page; `template` starts its editor from a seed template's text."""
    name = pack_name_of(request.query.get("name", ""))
    notice = DONE.get(request.query.get("done", ""), "")
    template = request.query.get("template", "")
    source = None
    if template:
        session = session_of(request)
        listed = await console_of(request).backend.admin(
            session.key, "GET", "/v1/admin/policies/templates"
        )
        found = [t for t in listed["data"] if t["name"] == template]
        if not found:
            raise web.HTTPNotFound(text=f"no template {template!r}")
        source = from_template(str(found[0]["source_yaml"]), name)
        notice = f"The editor starts from the template {template}: push it to publish."
    return await render_pack(request, name=name, source=source, notice=notice)


async def _form(request: web.Request) -> tuple[Any, str, str]:
    form = await request.post()
    tenant = str(form.get("tenant", "")).strip()
    if not TENANT_ID.fullmatch(tenant) or not session_of(request).sees(tenant):
        raise RefusedError(f"this key may not change tenant {tenant!r}")
    return form, tenant, pack_name_of(str(form.get("name", "")).strip())


def _done(request: web.Request, tenant: str, name: str, done: str) -> web.HTTPSeeOther:
    query = {"name": name, "done": done}
    if session_of(request).org_level:
        query["tenant"] = tenant
    return web.HTTPSeeOther(str(request.app.router["pack"].url_for().with_query(query)))


async def _publish(
    request: web.Request, tenant: str, name: str, source: str, done: str
) -> web.StreamResponse:
    session = session_of(request)
    body = {"tenant": tenant, "name": name, "source_yaml": source}
    try:
        await console_of(request).backend.admin(session.key, "POST", "/v1/admin/policies", body)
    except ApiError as exc:
        if exc.status == 401:
            raise
        return await render_pack(
            request, tenant=tenant, name=name, source=source, error=exc, status=exc.status
        )
    raise _done(request, tenant, name, done)


async def push(request: web.Request) -> web.StreamResponse:
    """Publish the edited text as the pack's next version (the admin API lints it)."""
    form, tenant, name = await _form(request)
    source = str(form.get("source_yaml", "")).replace("\r\n", "\n")
    if len(source) > MAX_SOURCE_CHARS:
        raise RefusedError(f"a pack is at most {MAX_SOURCE_CHARS} characters")
    return await _publish(request, tenant, name, source, "pushed")


async def revert(request: web.Request) -> web.StreamResponse:
    """Publish an earlier version's text as the next version: the admin API's revert (it
    keeps the newest versions of each pack); an older one is read from the store and
    pushed, as before that route existed."""
    form, tenant, name = await _form(request)
    version = str(form.get("version", ""))
    if not version.isdigit() or len(version) > 9:
        raise RefusedError("'version' is a version number")
    page = PageContext(request, console_of(request).backend, tenant)
    body = {"tenant": tenant, "to_version": int(version)}
    try:
        answer = await page.admin("POST", f"/v1/admin/policies/{name}/revert", body)
    except ApiError as exc:
        if exc.status == 401:
            raise
        if exc.status != 404:
            return await render_pack(
                request, tenant=tenant, name=name, error=exc, status=exc.status
            )
        found = await page.sql(SOURCE_SQL, name=name, version=version)
        if not found:
            raise web.HTTPNotFound(text=f"no version {version} of {name} in {tenant}") from None
        return await _publish(request, tenant, name, str(found[0]["source_yaml"]), "reverted")
    raise _done(request, tenant, name, "reverted" if answer.get("diff") else "unchanged")


async def assign(request: web.Request) -> web.StreamResponse:
    """Set the pack's top-level targeting (teams, gateways; none: the whole tenant) on
    the version in force, applied as the next version if it is still the one the page
    showed (If-Match)."""
    form, tenant, name = await _form(request)
    fields = {key: str(form.get(key, "")) for key in ("teams", "gateways", "version")}
    if any(len(value) > MAX_TARGETS_CHARS for value in fields.values()):
        raise RefusedError(f"the teams and gateways are at most {MAX_TARGETS_CHARS} characters")
    if not fields["version"].isdigit() or len(fields["version"]) > 9:
        raise RefusedError("'version' is a version number")
    try:
        teams = target_names(fields["teams"], "teams")
        gateways = target_names(fields["gateways"], "gateways")
    except TargetingError as exc:
        raise RefusedError(str(exc)) from None
    page = PageContext(request, console_of(request).backend, tenant)
    path = f"/v1/configurations/{name}"
    source = None
    try:
        current = await page.admin("GET", path, tenant=tenant)
        source = with_targeting(str(current["source_yaml"]), teams, gateways)
        answer = await page.backend.admin(
            page.session.key,
            "PUT",
            path,
            {"source_yaml": source},
            {"tenant": tenant},
            headers={"If-Match": f'"{int(fields["version"])}"'},
        )
    except TargetingError as exc:
        error = ApiError(400, "invalid_request", str(exc))
        return await render_pack(request, tenant=tenant, name=name, error=error, status=400)
    except ApiError as exc:
        if exc.status == 401:
            raise
        # Lint errors are marked on the text as sent; any other refusal (a stale page's
        # 412) leaves the editor on the pack as stored, not on text nobody published.
        shown = source if exc.status == 400 else None
        return await render_pack(
            request, tenant=tenant, name=name, source=shown, error=exc, status=exc.status
        )
    raise _done(request, tenant, name, "assigned" if answer.get("diff") else "unchanged")


def routes() -> list[web.RouteDef]:
    """The Policies routes."""
    return [
        web.get("/policies", policies),
        web.get("/policies/pack", pack, name="pack"),
        web.post("/policies/push", push),
        web.post("/policies/revert", revert),
        web.post("/policies/assign", assign),
    ]
