"""The report routes of the query API: events, wallet balances, escalations and SLAs
over a window, ingestion figures and retention, each as JSON (`sinks/query_app.py`
assembles them with the SQL route, `sinks/sql_endpoint.py`, and the exports).

Who may read: the admin token and org-admin keys see every tenant; a tenant-admin key
sees its own tenant's rows only, on every route; other roles get 403. Each report is one
of our fixed queries, filtered by tenant in its own WHERE and, for a tenant-bound reader,
by the engine's `additional_table_filters` as the SQL route is."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from schemas import event_filters
from schemas.escalation_listing import escalation_page, escalation_row, escalation_status
from schemas.ids import now_ms
from sinks import sql_guard
from sinks.access import Reader
from sinks.http_layer import BadRequestError, Guard, json_response, window_ms
from sinks.retention import delete_expired
from sinks.sql_endpoint import MAX_EXECUTION_S, StoreTables
from sinks.store import Store
from sinks.tables import ALL_TABLES

log = structlog.get_logger(__name__)

MAX_GROUPS = 10_000
MAX_LISTED = 10_000
# /v1/events?group_by=…: the column each grouping reads from `lineage`.
GROUPS = {
    "gateway": "producer_id",
    "provider": "provider",
    "model": "if(model_selected = '', model_requested, model_selected)",
    "team": "team_id",
    "tenant": "tenant_id",
}


def _ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


# /v1/events/list: what each listed call shows (no request or reply content), by name.
LISTED = (
    ("event_id", "toString(event_id)"),
    ("occurred_at_ms", "toUnixTimestamp64Milli(occurred_at)"),
    ("tenant_id", "tenant_id"),
    ("team_id", "team_id"),
    ("key_id", "key_id"),
    ("gateway", "producer_id"),
    ("api", "api"),
    ("provider", "provider"),
    ("model", "if(model_selected = '', model_requested, model_selected)"),
    ("decision", "decision"),
    ("http_status", "http_status"),
    ("error_code", "error_code"),
    ("prompt_tokens", "prompt_tokens"),
    ("completion_tokens", "completion_tokens"),
    ("cost_nanousd", "cost_nanousd"),
    ("latency_ms", "latency_ms"),
    ("selection_reason", "selection_reason"),
    ("guardrails", "guardrails_triggered.name"),
    ("trace_id", "trace_id"),
)


def _listed(row: tuple[Any, ...]) -> dict[str, Any]:
    listed = {name: value for (name, _), value in zip(LISTED, row, strict=True)}
    listed["guardrails"] = list(listed["guardrails"])
    listed["occurred_at_ms"] = int(listed["occurred_at_ms"])
    return listed


class Reports:
    """The report handlers over a store; `stats`, `consumer_lag` and `retention_days` are
    the sink writer's figures and the tenants' retention, passed in by the assembly."""

    def __init__(
        self,
        store: Store,
        tables: StoreTables,
        stats: Callable[[], dict[str, Any]],
        *,
        consumer_lag: Callable[[], Awaitable[dict[str, int]]] | None = None,
        retention_days: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.store = store
        self._tables = tables
        self._stats = stats
        self._consumer_lag = consumer_lag
        self._retention_days = retention_days

    def routes(self, guard: Guard) -> list[web.RouteDef]:
        """The routes, each behind the query API's guard."""
        return [
            web.get("/v1/me", guard(self.me)),
            web.get("/v1/ingestion", guard(self.ingestion)),
            web.get("/v1/events", guard(self.events)),
            web.get("/v1/events/list", guard(self.event_list)),
            web.get("/v1/wallets/balance", guard(self.wallet_balances)),
            web.get("/v1/escalations", guard(self.escalations)),
            web.get("/v1/sla", guard(self.sla)),
            web.post("/v1/retention/run", guard(self.run_retention)),
        ]

    async def me(self, request: web.Request, reader: Reader) -> web.Response:
        """Who the presented secret is and which tenant it sees (null: every tenant)."""
        return json_response({"identity": reader.identity, "tenant": reader.tenant_id})

    # --- helpers ---------------------------------------------------------------------

    @staticmethod
    def _org_only(reader: Reader) -> None:
        if reader.tenant_id is not None:
            raise BadRequestError(
                403, "forbidden", "this route is for the admin token and org admins"
            )

    @staticmethod
    def _tenant_scope(request: web.Request, reader: Reader) -> str | None:
        """The tenant a report covers: the reader's own, or for an org-level reader the
        `tenant` parameter (None: every tenant). Naming another tenant is a 403."""
        asked = request.query.get("tenant") or None
        if asked is not None and not reader.sees(asked):
            raise BadRequestError(403, "forbidden", f"this key may not read tenant {asked!r}")
        return asked if asked is not None else reader.tenant_id

    async def _report(
        self, sql: str, parameters: dict[str, Any], tenant: str | None
    ) -> list[tuple[Any, ...]]:
        """Rows of one of our report queries. Each query filters by `{tenant}` itself;
        tenant-bound reports also run with the engine-side filters, as SQL does."""
        settings: dict[str, Any] = {"max_execution_time": MAX_EXECUTION_S}
        if tenant is not None:
            _, _, tenant_tables = await self._tables.read()
            settings["additional_table_filters"] = sql_guard.tenant_filters(tenant_tables, tenant)
        parameters = {"all": tenant is None, "tenant": tenant or "", **parameters}
        rows: list[tuple[Any, ...]] = await self.store.run(
            self.store.query_rows, sql, parameters, settings
        )
        return rows

    # --- reports ---------------------------------------------------------------------

    async def ingestion(self, request: web.Request, reader: Reader) -> web.Response:
        """Rows written, dead letters, time of the last insert; per table the newest
        `occurred_at` and how far behind now it is; per topic the records on the broker
        not yet written (consumer lag)."""
        self._org_only(reader)
        now = now_ms()
        union = " UNION ALL ".join(
            f"SELECT '{table}' AS t, count() AS n, max(occurred_at) AS latest FROM {table}"  # noqa: S608 - our table names
            for table in ALL_TABLES
        )
        try:
            rows = await self.store.run(self.store.query_rows, union)
        except Exception as exc:  # noqa: BLE001 - the sink's own figures still answer
            # An unwell store is what an operator comes here to see (`store` in the stats).
            log.warning("ingestion figures without the tables", error=str(exc))
            rows = []
        tables = {}
        for table, count, latest in rows:
            latest_ms = _ms(latest) if count else None
            tables[str(table)] = {
                "rows": int(count),
                "latest_occurred_at_ms": latest_ms,
                "lag_ms": None if latest_ms is None else max(0, now - latest_ms),
            }
        lag = await self._consumer_lag() if self._consumer_lag is not None else {}
        return json_response(
            {
                **self._stats(),
                "now_ms": now,
                "tables": tables,
                "consumer_lag_records": lag,
            }
        )

    async def events(self, request: web.Request, reader: Reader) -> web.Response:
        """Calls, tokens, cost and errors per group over a window."""
        since = request.query.get("since", "30d")
        group_by = request.query.get("group_by", "team")
        if group_by not in GROUPS:
            raise BadRequestError(
                400, "invalid_request", f"group_by must be one of {sorted(GROUPS)}"
            )
        tenant = self._tenant_scope(request, reader)
        since_ms = now_ms() - window_ms(since)
        rows = await self._report(
            f"SELECT {GROUPS[group_by]} AS grp, count(), sum(prompt_tokens), "  # noqa: S608 - grouping from a fixed table
            "sum(completion_tokens), sum(cost_nanousd), countIf(error_code IS NOT NULL) "
            "FROM lineage WHERE ({all:Bool} OR tenant_id = {tenant:String}) "
            "AND occurred_at >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC') "
            f"GROUP BY grp ORDER BY sum(cost_nanousd) DESC, grp LIMIT {MAX_GROUPS}",
            {"since_ms": since_ms},
            tenant,
        )
        groups = [
            {
                group_by: str(grp),
                "calls": int(calls),
                "prompt_tokens": int(prompt),
                "completion_tokens": int(completion),
                "total_tokens": int(prompt) + int(completion),
                "cost_nanousd": int(cost),
                "errors": int(errors),
            }
            for grp, calls, prompt, completion, cost, errors in rows
        ]
        return json_response(
            {
                "since": since,
                "since_ms": since_ms,
                "group_by": group_by,
                "tenant": tenant,
                "groups": groups,
            }
        )

    async def event_list(self, request: web.Request, reader: Reader) -> web.Response:
        """The calls themselves, newest first, filtered (`schemas.event_filters`) and paged
        by keyset: `next` is the `after` of the following page (null on the last)."""
        try:
            filters = event_filters.parse_filters(request.query)
            limit = event_filters.parse_limit(request.query.get("limit"))
            after = event_filters.parse_cursor(request.query.get("after"))
        except event_filters.FilterError as exc:
            raise BadRequestError(400, "invalid_request", str(exc)) from None
        tenant = self._tenant_scope(request, reader)
        since = request.query.get("since", "1h")
        since_ms = now_ms() - window_ms(since)
        after_ms, after_id = after if after is not None else (0, "")
        rows = await self._report(
            f"SELECT {', '.join(column for _, column in LISTED)} FROM lineage "  # noqa: S608 - fixed columns
            "WHERE ({all:Bool} OR tenant_id = {tenant:String}) "
            "AND occurred_at >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC') "
            f"AND {event_filters.LISTING_WHERE} "
            "AND ({after_ms:Int64} = 0 OR (occurred_at, toString(event_id)) < "
            "(fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC'), {after_id:String})) "
            "ORDER BY occurred_at DESC, toString(event_id) DESC LIMIT {limit:UInt32}",
            {
                "since_ms": since_ms,
                "after_ms": after_ms,
                "after_id": after_id,
                "limit": limit + 1,
                **filters.sql_parameters(),
            },
            tenant,
        )
        data = [_listed(row) for row in rows[:limit]]
        last = data[-1] if len(rows) > limit else None
        next_page = (
            event_filters.encode_cursor(last["occurred_at_ms"], last["event_id"]) if last else None
        )
        page = {"since": since, "since_ms": since_ms, "tenant": tenant, "data": data}
        return json_response({**page, "next": next_page})

    async def wallet_balances(self, request: web.Request, reader: Reader) -> web.Response:
        """The latest published balance of each wallet (the newest by entries, then by
        changes, as the gateways read them); `team` and `wallet` narrow the list."""
        tenant = self._tenant_scope(request, reader)
        team = request.query.get("team", "")
        wallet = request.query.get("wallet", "")
        newest = "(entry_count, greatest(revision, entry_count))"
        rows = await self._report(
            f"SELECT tenant_id, wallet_id, argMax(team_id, {newest}), "  # noqa: S608 - fixed text
            f"argMax(balance_nanousd, {newest}), argMax(funded_nanousd, {newest}), "
            f"argMax(spent_nanousd, {newest}), argMax(period_spent_nanousd, {newest}), "
            f"argMax(overdraft_limit_nanousd, {newest}), max(entry_count), "
            f"argMax(occurred_at, {newest}) "
            "FROM wallet_state WHERE ({all:Bool} OR tenant_id = {tenant:String}) "
            "AND ({team:String} = '' OR team_id = {team:String}) "
            "AND ({wallet:String} = '' OR wallet_id = {wallet:String}) "
            f"GROUP BY tenant_id, wallet_id ORDER BY tenant_id, wallet_id LIMIT {MAX_LISTED}",
            {"team": team, "wallet": wallet},
            tenant,
        )
        wallets = [
            {
                "tenant_id": str(t),
                "wallet_id": str(w),
                "team_id": str(team_id),
                "balance_nanousd": int(balance),
                "funded_nanousd": int(funded),
                "spent_nanousd": int(spent),
                "period_spent_nanousd": int(period),
                "overdraft_limit_nanousd": int(limit),
                "entry_count": int(entries),
                "as_of_ms": _ms(at),
            }
            for t, w, team_id, balance, funded, spent, period, limit, entries, at in rows
        ]
        return json_response({"tenant": tenant, "wallets": wallets})

    async def escalations(self, request: web.Request, reader: Reader) -> web.Response:
        """Escalations the gateways opened, with the first decision on each, if any."""
        tenant = self._tenant_scope(request, reader)
        try:
            status = escalation_status(request.query.get("status"))
        except ValueError as exc:
            raise BadRequestError(400, "invalid_request", str(exc)) from None
        where_status = {"open": "AND r.decision = ''", "resolved": "AND r.decision != ''"}.get(
            status, ""
        )
        rows = await self._report(
            "SELECT e.escalation_id, e.tenant_id, e.team_id, e.key_id, e.policy_pack, "  # noqa: S608 - fixed text
            "e.category, e.priority, e.mode, e.reason, e.model_requested, e.trace_id, "
            "e.occurred_at, r.decision, r.resolved_by, r.resolved_at "
            "FROM (SELECT * FROM escalation_events "
            "WHERE ({all:Bool} OR tenant_id = {tenant:String}) "
            "ORDER BY occurred_at LIMIT 1 BY escalation_id) AS e "
            "LEFT JOIN (SELECT escalation_id, argMin(decision, occurred_at) AS decision, "
            "argMin(resolved_by, occurred_at) AS resolved_by, "
            "min(occurred_at) AS resolved_at FROM control_events "
            "WHERE event_type = 'escalation.resolved' "
            "AND ({all:Bool} OR tenant_id = {tenant:String}) GROUP BY escalation_id) AS r "
            f"ON r.escalation_id = e.escalation_id WHERE 1 {where_status} "
            f"ORDER BY e.occurred_at DESC LIMIT {MAX_LISTED}",
            {},
            tenant,
        )
        now = now_ms()
        listed = []
        for row in rows:
            (esc, t, team, key, pack, category, priority, mode, reason, model, trace) = row[:11]
            opened_at, decision, resolved_by, resolved_at = row[11:]
            listed.append(
                escalation_row(
                    escalation_id=str(esc),
                    tenant_id=str(t),
                    team_id=str(team),
                    key_id=str(key),
                    policy_pack=str(pack),
                    category=str(category),
                    priority=str(priority),
                    mode=str(mode),
                    reason=str(reason),
                    model_requested=str(model),
                    trace_id=str(trace),
                    opened_at_ms=_ms(opened_at) or 0,
                    decision=str(decision) or None,
                    now_ms=now,
                    resolved_by=str(resolved_by) or None,
                    resolved_at_ms=_ms(resolved_at) if decision else None,
                )
            )
        return json_response(escalation_page(listed, status=status, tenant_id=tenant))

    async def sla(self, request: web.Request, reader: Reader) -> web.Response:
        """Closed SLA minutes per tenant, provider and model over a window (the latest
        revision of each minute), with latency quantiles from the hourly rollup."""
        since = request.query.get("since", "24h")
        tenant = self._tenant_scope(request, reader)
        since_ms = now_ms() - window_ms(since)
        rows = await self._report(
            "SELECT tenant_id, provider, model, count(), sum(requests), sum(errors), "  # noqa: S608 - fixed text
            "sum(caller_faults), sum(prompt_tokens), sum(completion_tokens), "
            "sum(cost_nanousd), sum(tupleElement(latency_ms, 'sum_thousandths')), "
            "max(tupleElement(latency_ms, 'max')) FROM ("
            "SELECT * FROM sla_windows WHERE ({all:Bool} OR tenant_id = {tenant:String}) "
            "AND window_start >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC') "
            "ORDER BY revision DESC LIMIT 1 BY tenant_id, provider, model, window_start) "
            f"GROUP BY tenant_id, provider, model ORDER BY tenant_id, provider, model "
            f"LIMIT {MAX_GROUPS}",
            {"since_ms": since_ms},
            tenant,
        )
        hourly = await self._report(
            "SELECT tenant_id, provider, model, "
            "quantilesTDigestMerge(0.5, 0.9, 0.99)(latency_ms) FROM provider_hourly "
            "WHERE ({all:Bool} OR tenant_id = {tenant:String}) "
            "AND hour >= toStartOfHour(fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')) "
            "GROUP BY tenant_id, provider, model",
            {"since_ms": since_ms},
            tenant,
        )
        quantiles = {(str(t), str(p), str(m)): q for t, p, m, q in hourly}
        targets = []
        for row in rows:
            t, provider, model, windows, requests, errors, faults, prompt, completion = row[:9]
            cost, latency_thousandths, latency_max = row[9:]
            eligible = int(requests) - int(faults)
            q = quantiles.get((str(t), str(provider), str(model)))
            targets.append(
                {
                    "tenant_id": str(t),
                    "provider": str(provider),
                    "model": str(model),
                    "windows": int(windows),
                    "requests": int(requests),
                    "errors": int(errors),
                    "caller_faults": int(faults),
                    "availability": 1.0 if eligible <= 0 else 1 - int(errors) / eligible,
                    "prompt_tokens": int(prompt),
                    "completion_tokens": int(completion),
                    "cost_nanousd": int(cost),
                    "latency_mean_ms": (
                        None if eligible <= 0 else int(latency_thousandths) / 1000 / eligible
                    ),
                    "latency_max_ms": float(latency_max) if eligible > 0 else None,
                    "latency_p50_p90_p99_ms": [round(float(v), 3) for v in q] if q else None,
                }
            )
        return json_response(
            {"since": since, "since_ms": since_ms, "tenant": tenant, "targets": targets}
        )

    async def run_retention(self, request: web.Request, reader: Reader) -> web.Response:
        """Apply every tenant's retention now; rows deleted per table."""
        self._org_only(reader)
        days = self._retention_days() if self._retention_days is not None else {}
        deleted = await self.store.run(delete_expired, self.store, days, now_ms())
        return json_response({"retention_days": days, "deleted": deleted})


async def retention_loop(
    store: Store, retention_days: Callable[[], dict[str, int]], every_s: float
) -> None:
    """Apply retention every `every_s` until cancelled; a failed run is logged and retried
    at the next turn (the rows stay until then)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await store.run(delete_expired, store, retention_days(), now_ms())
        except Exception:
            log.exception("retention run failed")
