"""Events: the lineage table with filters (window, team, key, provider, model, status,
guardrail, selection reason) and keyset paging (newest first; the cursor is the last
row's time and id, so a page never shifts as calls arrive), and one call's whole record:
attempts and fallbacks, policies, guardrails, tokens and cost, the escalation it opened
and its place in its producer's hash chain."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from console.pages.common import TENANT_FILTER, WINDOWS, PageContext, now_ms, text_filter, window_of
from console.rendering import console_of
from console.security import RefusedError

PAGE_ROWS = 50
FILTERS = ("team", "key", "provider", "model", "status", "guardrail", "reason")
STATUSES = ("", "ok", "error")
CURSOR = re.compile(r"(\d{1,15})\.([0-9a-f-]{36})")
EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
GUARDRAIL_NAMES = "arrayMap(g -> tupleElement(g, 1), guardrails_triggered)"
# Fixed text; every value is bound by the engine ({name:Type}), never spliced.
LIST_SQL = (
    "SELECT toString(event_id) AS id, toUnixTimestamp64Milli(occurred_at) AS at_ms, "  # noqa: S608
    "tenant_id, team_id, key_id, provider, model_requested, model_selected, "
    "selection_reason, http_status, error_code, cost_nanousd, prompt_tokens, "
    f"completion_tokens, latency_ms, arrayStringConcat({GUARDRAIL_NAMES}, ', ') AS guardrails "
    "FROM lineage WHERE occurred_at >= fromUnixTimestamp64Milli({since_ms:Int64}) "
    f"AND {TENANT_FILTER} "
    "AND ({team:String} = '' OR team_id = {team:String}) "
    "AND ({key:String} = '' OR key_id = {key:String}) "
    "AND ({provider:String} = '' OR provider = {provider:String}) "
    "AND ({model:String} = '' OR model_selected = {model:String} "
    "OR model_requested = {model:String}) "
    "AND ({reason:String} = '' OR selection_reason = {reason:String}) "
    f"AND ({{guardrail:String}} = '' OR has({GUARDRAIL_NAMES}, {{guardrail:String}})) "
    "AND ({status:String} = '' OR ({status:String} = 'ok' AND error_code IS NULL) "
    "OR ({status:String} = 'error' AND error_code IS NOT NULL)) "
    "AND ({before_ms:Int64} = 0 OR (toUnixTimestamp64Milli(occurred_at), toString(event_id)) "
    "< ({before_ms:Int64}, {before_id:String})) "
    "ORDER BY at_ms DESC, id DESC LIMIT {rows:UInt32}"
)
RECORD_SQL = (
    "SELECT toString(event_id) AS id, toUnixTimestamp64Milli(occurred_at) AS at_ms, "  # noqa: S608
    "tenant_id, producer_id, seq, prev_hash, record_hash, trace_id, span_id, team_id, "
    "user_id, key_id, wallet_id, region, model_requested, model_selected, provider, "
    "selection_reason, attempts, policies_applied, guardrails_triggered, decision, "
    "prompt_tokens, completion_tokens, usage_source, cost_nanousd, reserved_nanousd, "
    "latency_ms, ttft_ms, gateway_overhead_ms, http_status, error_code, stream, "
    "request_sha256, response_sha256 "
    f"FROM lineage WHERE event_id = toUUID({{id:String}}) AND {TENANT_FILTER} LIMIT 1"
)
NEIGHBOURS_SQL = (
    "SELECT seq, record_hash, prev_hash, toString(event_id) AS id FROM lineage "  # noqa: S608
    "WHERE producer_id = {producer:String} AND seq IN ({before:UInt64}, {after:UInt64}) "
    f"AND {TENANT_FILTER} ORDER BY seq LIMIT 4"
)
ESCALATIONS_SQL = (
    "SELECT escalation_id, event_type, toUnixTimestamp64Milli(occurred_at) AS at_ms, "  # noqa: S608
    "category, priority, mode, reason FROM escalation_events "
    f"WHERE trace_id = {{trace:String}} AND {TENANT_FILTER} ORDER BY occurred_at LIMIT 20"
)


def cursor_of(request: web.Request) -> tuple[int, str]:
    """The keyset cursor (`before`): the last shown row's time and id; (0, '') for none."""
    before = request.query.get("before", "")
    if not before:
        return 0, ""
    matched = CURSOR.fullmatch(before)
    if matched is None:
        raise RefusedError("'before' is a cursor from the page's own Older link")
    return int(matched.group(1)), matched.group(2)


def named(value: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """A tuple as the engine wrote it (an object, or a list in field order) as a dict."""
    if isinstance(value, dict):
        return value
    return dict(zip(names, value, strict=False))


async def event_list(request: web.Request) -> web.Response:
    """The lineage table, filtered, one page at a time."""
    page = PageContext(request, console_of(request).backend)
    window, window_s = window_of(request)
    filters = {name: text_filter(request, name) for name in FILTERS}
    if filters["status"] not in STATUSES:
        raise RefusedError("'status' is ok, error or empty")
    before_ms, before_id = cursor_of(request)
    rows = await page.sql(
        LIST_SQL,
        since_ms=now_ms() - window_s * 1000,
        before_ms=before_ms,
        before_id=before_id,
        rows=PAGE_ROWS + 1,
        **filters,
    )
    older = ""
    if len(rows) > PAGE_ROWS:
        rows = rows[:PAGE_ROWS]
        older = f"{rows[-1]['at_ms']}.{rows[-1]['id']}"
    return console_of(request).render(
        request,
        "events.html",
        tenant=page.tenant,
        window=window,
        windows=list(WINDOWS),
        filters=filters,
        statuses=STATUSES,
        rows=rows,
        older=older,
        paged=bool(before_ms),
    )


async def event_record(request: web.Request) -> web.Response:
    """One call's whole record."""
    page = PageContext(request, console_of(request).backend)
    event_id = request.match_info["event_id"]
    if not EVENT_ID.fullmatch(event_id):
        raise RefusedError("an event id is a UUID")
    found = await page.sql(RECORD_SQL, id=event_id)
    if not found:
        raise web.HTTPNotFound(text="no such call in the tenants this key sees")
    record = found[0]
    seq = int(record["seq"])
    neighbours, escalations = await asyncio.gather(
        page.sql(
            NEIGHBOURS_SQL, producer=record["producer_id"], before=max(seq - 1, 0), after=seq + 1
        ),
        page.sql(ESCALATIONS_SQL, trace=record["trace_id"]),
    )
    previous = next((n for n in neighbours if int(n["seq"]) == seq - 1), None)
    following = next((n for n in neighbours if int(n["seq"]) == seq + 1), None)
    attempts = [
        named(a, ("provider", "model", "status", "latency_ms", "error_class"))
        for a in record["attempts"]
    ]
    guardrails = [named(g, ("name", "action")) for g in record["guardrails_triggered"]]
    return console_of(request).render(
        request,
        "event.html",
        tenant=page.tenant,
        record=record,
        attempts=attempts,
        guardrails=guardrails,
        escalations=escalations,
        previous=previous,
        following=following,
    )


def routes() -> list[web.RouteDef]:
    """The Events routes."""
    return [web.get("/events", event_list), web.get("/events/{event_id}", event_record)]
