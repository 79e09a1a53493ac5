"""Escalations: list them as a gateway has heard of them (the opens, with claims and
reassigns folded by `streams.escalations.logic` under the escalation configuration the
caller passes in), claim, reassign and decide them. A listed row has the one shape of
`schemas.escalation_listing`, which the query API answers too."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.admin import requests
from gateway.admin.context import AdminContext, Guard
from gateway.admin.principals import Principal
from gateway.errors import GatewayError
from gateway.views import MAX_ESCALATIONS
from schemas.escalation_listing import (
    escalation_page,
    escalation_row,
    escalation_status,
    is_listed,
)
from schemas.http_errors import json_response
from schemas.ids import now_ms
from schemas.records import EscalationChanged, EscalationOpened, EscalationResolved
from streams.escalations import logic as escalations_logic
from streams.escalations.logic import CLAIMED, REASSIGNED, action_of

NOTE_MAX_CHARS = 2_000


def escalation_listing(
    opened: Iterable[EscalationOpened],
    changes: Iterable[EscalationChanged],
    decisions: Mapping[str, str],
    config: escalations_logic.EscalationConfig,
    *,
    now: int,
    status: str = "open",
    queue: str | None = None,
) -> list[dict[str, Any]]:
    """Escalations as the admin API lists them, most urgent first: the opens and the claims
    and reassigns folded with `streams.escalations.logic`, decided ones marked from the
    decisions (`escalation_id -> approve|reject`). `status` is open (every undecided one,
    claimed or not), resolved or all."""
    records = {o.escalation_id: o for o in opened}
    actions = (a for a in (action_of(c) for c in changes) if a is not None)
    state, _ = escalations_logic.fold([*records.values(), *actions], config)
    rows = []
    for e in escalations_logic.open_escalations(state, queue):
        decision = decisions.get(e.escalation_id)
        if not is_listed(status, decided=decision is not None):
            continue
        record = records[e.escalation_id]
        rows.append(
            escalation_row(
                escalation_id=e.escalation_id,
                tenant_id=e.tenant_id,
                team_id=e.team_id,
                key_id=record.key_id,
                policy_pack=record.policy_pack,
                category=e.category,
                priority=e.priority,
                mode=record.mode,
                reason=e.reason,
                model_requested=record.model_requested,
                trace_id=e.trace_id,
                opened_at_ms=e.opened_at,
                decision=decision,
                now_ms=now,
                undecided_status=e.status,
                queue=e.queue,
                claimed_by=e.claimed_by,
                deadline_at_ms=e.deadline_at,
            )
        )
    return rows


class EscalationRoutes:
    """List, claim, reassign and resolve escalations."""

    def __init__(self, context: AdminContext) -> None:
        self.context = context
        # Claims and reassigns this gateway published, by escalation (see `_changes_of`).
        self.own_changes: dict[str, list[EscalationChanged]] = {}

    def routes(self, guard: Guard) -> list[web.RouteDef]:
        """The escalation routes."""
        return [
            web.get("/v1/admin/escalations", guard(self.list_escalations)),
            web.post("/v1/admin/escalations/{escalation_id}/claim", guard(self.claim_escalation)),
            web.post(
                "/v1/admin/escalations/{escalation_id}/reassign", guard(self.reassign_escalation)
            ),
            web.post("/v1/admin/escalations/{escalation_id}/resolve", guard(self.resolve)),
        ]

    async def list_escalations(self, request: web.Request, principal: Principal) -> web.Response:
        """Escalations this gateway has heard of, with priority, queue, age and deadline;
        `?status=open|resolved|all` (default open), `?queue=`, `?tenant=`."""
        try:
            status = escalation_status(request.query.get("status"))
        except ValueError as exc:
            raise GatewayError(errors.INVALID_REQUEST, str(exc)) from None
        tenant = request.query.get("tenant")
        views = self.context.views
        opened = [
            o
            for o in views.escalations.values()
            if principal.sees(o.tenant_id) and tenant in (None, o.tenant_id)
        ]
        rows = escalation_listing(
            opened,
            (c for o in opened for c in self._changes_of(o.escalation_id)),
            views.escalation_decisions,
            self.context.escalation_config,
            now=now_ms(),
            status=status,
            queue=request.query.get("queue") or None,
        )
        page = escalation_page(rows, status=status, tenant_id=tenant or principal.tenant_id)
        return json_response(page)

    async def claim_escalation(self, request: web.Request, principal: Principal) -> web.Response:
        """Take an undecided escalation: the first claim wins until a reassign."""
        opened = self._undecided_escalation(request, principal)
        current = self._escalation_state(opened)
        if current.claimed_by not in (None, principal.identity):
            raise GatewayError(
                errors.CONFLICT,
                f"escalation {opened.escalation_id} is claimed by {current.claimed_by}; "
                "reassign it first",
            )
        await self._change_escalation(opened, CLAIMED, principal.identity)
        return json_response(
            {
                "escalation_id": opened.escalation_id,
                "status": "claimed",
                "claimed_by": principal.identity,
                "queue": current.queue,
            }
        )

    async def reassign_escalation(self, request: web.Request, principal: Principal) -> web.Response:
        """Move an undecided escalation to a queue, unclaimed or claimed by `reviewer`."""
        opened = self._undecided_escalation(request, principal)
        data = await requests.read_body(request)
        queue = requests.identifier(data, "queue")
        reviewer = requests.short_string(data, "reviewer")
        await self._change_escalation(opened, REASSIGNED, principal.identity, queue, reviewer)
        return json_response(
            {
                "escalation_id": opened.escalation_id,
                "status": "claimed" if reviewer else "open",
                "claimed_by": reviewer or None,
                "queue": queue,
            }
        )

    async def resolve(self, request: web.Request, principal: Principal) -> web.Response:
        """Approve or reject an escalation; a call held for it proceeds or is refused."""
        views = self.context.views
        escalation_id = request.match_info["escalation_id"]
        opened = views.escalations.get(escalation_id)
        if opened is None or not principal.sees(opened.tenant_id):
            raise GatewayError(errors.NOT_FOUND, f"no escalation {escalation_id}")
        data = await requests.read_body(request)
        decision = data.get("decision")
        if decision not in ("approve", "reject"):
            raise GatewayError(errors.INVALID_REQUEST, "'decision' must be approve or reject")
        if escalation_id in views.escalation_decisions:
            raise GatewayError(errors.CONFLICT, f"escalation {escalation_id} is already decided")
        record = EscalationResolved(
            **self.context.envelope(EscalationResolved, opened.tenant_id),
            escalation_id=escalation_id,
            decision=decision,
            resolved_by=principal.identity,
            note=str(data.get("note", ""))[:NOTE_MAX_CHARS],
        )
        await self.context.publish(record)
        await self.context.wait_until(lambda: escalation_id in views.escalation_decisions)
        return json_response({"escalation_id": escalation_id, "decision": decision})

    def _undecided_escalation(self, request: web.Request, principal: Principal) -> EscalationOpened:
        escalation_id = request.match_info["escalation_id"]
        opened = self.context.views.escalations.get(escalation_id)
        if opened is None or not principal.sees(opened.tenant_id):
            raise GatewayError(errors.NOT_FOUND, f"no escalation {escalation_id}")
        if escalation_id in self.context.views.escalation_decisions:
            raise GatewayError(errors.CONFLICT, f"escalation {escalation_id} is already decided")
        return opened

    def _changes_of(self, escalation_id: str) -> list[EscalationChanged]:
        """Claims and reassigns of an escalation: every gateway's, as the control topic
        has them, then this gateway's own not read back yet. A repeat would apply twice
        (a reassign again after a later claim), so an own change read back is skipped."""
        read = list(self.context.views.escalation_changes.get(escalation_id, ()))
        seen = {(c.producer_id, c.seq) for c in read}
        own = self.own_changes.get(escalation_id, ())
        return read + [c for c in own if (c.producer_id, c.seq) not in seen]

    def _escalation_state(self, opened: EscalationOpened) -> escalations_logic.Escalation:
        changes = self._changes_of(opened.escalation_id)
        actions = (a for a in (action_of(c) for c in changes) if a is not None)
        state, _ = escalations_logic.fold([opened, *actions], self.context.escalation_config)
        found = escalations_logic.find(state, opened.escalation_id)
        assert found is not None, "an escalation folded from its open is found"
        return found

    async def _change_escalation(
        self,
        opened: EscalationOpened,
        event_type: str,
        actor: str,
        queue: str = "",
        reviewer: str = "",
    ) -> None:
        """Publish a claim or reassign and remember it until the views read it back, so
        the answer and the next listing already show it."""
        sealed = await self.context.publish(
            EscalationChanged(
                **{
                    **self.context.envelope(EscalationChanged, opened.tenant_id),
                    "event_type": event_type,
                },
                escalation_id=opened.escalation_id,
                actor=actor,
                queue=queue,
                reviewer=reviewer,
            )
        )
        self.own_changes.setdefault(opened.escalation_id, []).append(sealed)
        while len(self.own_changes) > MAX_ESCALATIONS:
            del self.own_changes[next(iter(self.own_changes))]
