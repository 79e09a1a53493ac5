"""Audit: each producer's chain head and last checkpoint as the store has them, the
verification of every chain (`POST /v1/audit/verify`: the query API runs `audit verify`
in the background for the session's key's tenant; the page shows the last result and
polls a running one), the exports (create, progress, list, download with its manifest;
the query API runs them, with the session's key, so a tenant admin exports its tenant
only), and the question auditors ask — who used which model with which key around time T."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from console.backend import ApiError
from console.pages.common import TENANT_FILTER, PageContext, form_fields, text_filter
from console.rendering import console_of
from console.security import SECURITY_HEADERS, TENANT_ID, RefusedError, session_of

EXPORT_TYPES = ("events", "escalations", "wallets")
EXPORT_FORMATS = ("csv", "jsonl", "parquet")
EXPORT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_AROUND_MIN = 24 * 60
# Fixed text; every value is bound by the engine ({name:Type}), never spliced.
HEADS_SQL = (
    "SELECT producer_id, count() AS records, min(seq) AS first_seq, max(seq) AS last_seq, "  # noqa: S608
    "argMax(record_hash, seq) AS head, max(toUnixTimestamp64Milli(occurred_at)) AS last_ms "
    f"FROM lineage WHERE {TENANT_FILTER} GROUP BY producer_id ORDER BY producer_id LIMIT 200"
)
CHECKPOINTS_SQL = (
    "SELECT producer_id, max(checkpoint_seq) AS seq, argMax(checkpoint_hash, checkpoint_seq) "  # noqa: S608
    "AS hash, max(toUnixTimestamp64Milli(occurred_at)) AS at_ms FROM chain_checkpoints "
    f"WHERE {TENANT_FILTER} GROUP BY producer_id LIMIT 200"
)
WHO_SQL = (
    "SELECT toString(event_id) AS id, toUnixTimestamp64Milli(occurred_at) AS at_ms, "  # noqa: S608
    "tenant_id, team_id, user_id, key_id, provider, model_selected, http_status, "
    "arrayStringConcat(arrayMap(g -> concat(tupleElement(g, 1), ':', tupleElement(g, 2)), "
    "guardrails_triggered), ', ') AS guardrails FROM lineage "
    "WHERE occurred_at BETWEEN fromUnixTimestamp64Milli({from_ms:Int64}) "
    "AND fromUnixTimestamp64Milli({to_ms:Int64}) "
    "AND ({model:String} = '' OR model_selected = {model:String} "
    f"OR model_requested = {{model:String}}) AND {TENANT_FILTER} "
    "ORDER BY occurred_at LIMIT 200"
)
PREFIXES_SQL = (
    "SELECT key_id, any(key_prefix) AS prefix FROM control_events "  # noqa: S608
    f"WHERE event_type = 'key.issued' AND {TENANT_FILTER} GROUP BY key_id LIMIT 10000"
)
DONE = {
    "export": "Export queued: its progress is below.",
    "verify": "Verification started: its progress is below.",
    "verifying": "A verification of this scope is already running: its progress is below.",
}
ACTIVE = ("queued", "running")


def moment_ms(text: str) -> int:
    """A UTC time as typed (2026-03-03 14:02, with seconds or a T) in milliseconds."""
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        raise RefusedError("the time is YYYY-MM-DD HH:MM (UTC)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


async def _who(page: PageContext, request: web.Request) -> dict[str, Any]:
    at = request.query.get("at", "").strip()
    if not at:
        return {"at": "", "around": "5", "model": "", "who": None}
    around = request.query.get("around", "5")
    if not around.isdigit() or not 0 < int(around) <= MAX_AROUND_MIN:
        raise RefusedError(f"'around' is whole minutes, 1 to {MAX_AROUND_MIN}")
    at_ms, span_ms = moment_ms(at), int(around) * 60_000
    model = text_filter(request, "model")
    rows, prefixes = await asyncio.gather(
        page.sql(WHO_SQL, from_ms=at_ms - span_ms, to_ms=at_ms + span_ms, model=model),
        page.sql(PREFIXES_SQL),
    )
    known = {p["key_id"]: p["prefix"] for p in prefixes}
    who = [{**r, "key_prefix": known.get(r["key_id"], "")} for r in rows]
    return {"at": at, "around": around, "model": model, "who": who}


async def exports_of(page: PageContext) -> list[dict[str, Any]]:
    """The export jobs the session's key may see, narrowed to the page's tenant."""
    listed = await page.backend.query(page.session.key, "/v1/exports")
    jobs = list(listed["exports"])
    return [j for j in jobs if page.tenant is None or j["tenant"] in (page.tenant, None)][:50]


def _scoped(path: str, tenant: str | None) -> str:
    return f"{path}?{urlencode({'tenant': tenant})}" if tenant else path


async def verification_of(page: PageContext) -> dict[str, Any] | None:
    """The newest verification of the page's scope (the tenant, or every tenant), if any."""
    try:
        job: dict[str, Any] = await page.backend.query(
            page.session.key, _scoped("/v1/audit/verify/latest", page.tenant)
        )
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return job


async def render_audit(
    request: web.Request, *, tenant: str | None = None, error: str = "", status: int = 200
) -> web.Response:
    """The page."""
    page = PageContext(request, console_of(request).backend, tenant)
    heads, checkpoints, exports, who, verification = await asyncio.gather(
        page.sql(HEADS_SQL),
        page.sql(CHECKPOINTS_SQL),
        exports_of(page),
        _who(page, request),
        verification_of(page),
    )
    marks = {c["producer_id"]: c for c in checkpoints}
    return console_of(request).render(
        request,
        "audit.html",
        status,
        tenant=page.tenant,
        heads=[{**h, "checkpoint": marks.get(h["producer_id"])} for h in heads],
        checkpoints_only=[
            c for c in checkpoints if c["producer_id"] not in {h["producer_id"] for h in heads}
        ],
        exports=exports,
        running=any(j["status"] in ACTIVE for j in exports),
        verification=verification,
        verifying=verification is not None and verification["status"] in ACTIVE,
        types=EXPORT_TYPES,
        formats=EXPORT_FORMATS,
        notice=DONE.get(request.query.get("done", ""), ""),
        error=error,
        **who,
    )


async def audit(request: web.Request) -> web.Response:
    """The page."""
    return await render_audit(request)


async def exports_live(request: web.Request) -> web.Response:
    """The export list alone, polled while a job is queued or running."""
    page = PageContext(request, console_of(request).backend)
    exports = await exports_of(page)
    running = any(j["status"] in ("queued", "running") for j in exports)
    return console_of(request).render(
        request, "_exports.html", tenant=page.tenant, exports=exports, running=running
    )


async def create_export(request: web.Request) -> web.StreamResponse:
    """Queue an export with the query API (of the form's tenant)."""
    session = session_of(request)
    form = await request.post()
    body: dict[str, Any] = form_fields(form, "type", "format", "since", "description", "tenant")
    tenant = body.get("tenant")
    if tenant is not None and (not TENANT_ID.fullmatch(tenant) or not session.sees(tenant)):
        raise RefusedError(f"this key may not export tenant {tenant!r}")
    try:
        await console_of(request).backend.query_post(session.key, "/v1/exports", body)
    except ApiError as exc:
        if exc.status == 401:
            raise
        return await render_audit(request, tenant=tenant, error=exc.message, status=exc.status)
    query = {"done": "export"}
    if session.org_level and tenant:
        query["tenant"] = tenant
    raise web.HTTPSeeOther(str(request.app.router["audit"].url_for().with_query(query)))


async def verification_live(request: web.Request) -> web.Response:
    """The verification's status alone, polled while it is queued or running."""
    page = PageContext(request, console_of(request).backend)
    verification = await verification_of(page)
    return console_of(request).render(
        request,
        "_verify.html",
        tenant=page.tenant,
        verification=verification,
        verifying=verification is not None and verification["status"] in ACTIVE,
    )


async def start_verification(request: web.Request) -> web.StreamResponse:
    """Ask the query API to verify the form's tenant's chains (an org admin without one:
    every chain), with the session's key."""
    session = session_of(request)
    tenant = form_fields(await request.post(), "tenant").get("tenant")
    if tenant is not None and (not TENANT_ID.fullmatch(tenant) or not session.sees(tenant)):
        raise RefusedError(f"this key may not verify tenant {tenant!r}")
    scope = tenant if tenant is not None else session.tenant
    done = "verify"
    try:
        await console_of(request).backend.query_post(
            session.key, _scoped("/v1/audit/verify", scope), None
        )
    except ApiError as exc:
        if exc.status == 401:
            raise
        if exc.status != 409:  # 409: one runs already, which the page shows
            return await render_audit(request, tenant=tenant, error=exc.message, status=exc.status)
        done = "verifying"
    query = {"done": done}
    if session.org_level and tenant:
        query["tenant"] = tenant
    raise web.HTTPSeeOther(str(request.app.router["audit"].url_for().with_query(query)))


def _export_id(request: web.Request) -> str:
    export_id = request.match_info["export_id"]
    if not EXPORT_ID.fullmatch(export_id):
        raise RefusedError("not an export id")
    return export_id


async def download(request: web.Request) -> web.StreamResponse:
    """The export's file, relayed from the query API with the session's key."""
    session = session_of(request)
    path = f"/v1/exports/{_export_id(request)}/download"
    return await console_of(request).backend.relay(
        session.key, path, request, {**SECURITY_HEADERS, "Cache-Control": "no-store"}
    )


async def manifest(request: web.Request) -> web.Response:
    """The export's manifest (rows, hashes, the chain heads it covers)."""
    session = session_of(request)
    export_id = _export_id(request)
    job = await console_of(request).backend.query(session.key, f"/v1/exports/{export_id}")
    shown = orjson.dumps(job.get("manifest"), option=orjson.OPT_INDENT_2).decode()
    return console_of(request).render(request, "manifest.html", job=job, manifest=shown)


def routes() -> list[web.RouteDef]:
    """The Audit routes."""
    return [
        web.get("/audit", audit, name="audit"),
        web.get("/audit/verify", verification_live),
        web.post("/audit/verify", start_verification),
        web.get("/audit/exports", exports_live),
        web.post("/audit/exports", create_export),
        web.get("/audit/exports/{export_id}/download", download),
        web.get("/audit/exports/{export_id}", manifest),
    ]
