"""The one shape of an escalation listing, answered by both routes that list escalations:
the admin API's `GET /v1/admin/escalations` (a gateway's view, with claims, reassigns,
queues and deadlines folded by `streams.escalations.logic`) and the query API's
`GET /v1/escalations` (the store, with who decided and when).

Every row has every field below; a field the route's source does not know is null: the
query API knows no queue, claim or deadline (`queue`, `claimed_by`, `deadline_at_ms`,
`overdue`), a gateway's view keeps a decision but not who made it or when
(`resolved_by`, `resolved_at_ms`). Times are epoch milliseconds; units go last.

Both routes filter with `?status=` (`ESCALATION_STATUSES`, default
`DEFAULT_ESCALATION_STATUS`: open, the work still waiting for a reviewer) and answer
`{"tenant_id", "status", "data": [rows]}`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ESCALATION_STATUSES = ("open", "resolved", "all")
DEFAULT_ESCALATION_STATUS = "open"


def escalation_status(value: str | None) -> str:
    """The status filter a request names (absent: the default); ValueError for anything
    but open, resolved or all."""
    if value is None:
        return DEFAULT_ESCALATION_STATUS
    if value not in ESCALATION_STATUSES:
        raise ValueError("'status' must be open, resolved or all")
    return value


def is_listed(status: str, *, decided: bool) -> bool:
    """Whether an escalation, decided or not, is listed under the status filter: open is
    every undecided one (claimed or not), resolved every decided one."""
    assert status in ESCALATION_STATUSES, "the status filter is validated first"
    return status == "all" or decided == (status == "resolved")


def escalation_row(
    *,
    escalation_id: str,
    tenant_id: str,
    team_id: str,
    key_id: str,
    policy_pack: str,
    category: str,
    priority: str,
    mode: str,
    reason: str,
    model_requested: str,
    trace_id: str,
    opened_at_ms: int,
    decision: str | None,
    now_ms: int,
    undecided_status: str = "open",
    queue: str | None = None,
    claimed_by: str | None = None,
    deadline_at_ms: int | None = None,
    resolved_by: str | None = None,
    resolved_at_ms: int | None = None,
) -> dict[str, Any]:
    """One listed escalation. `undecided_status` is open or claimed (a decided one is
    resolved); `overdue` is whether an undecided one is past its deadline (null without
    a deadline)."""
    decided = decision is not None
    return {
        "escalation_id": escalation_id,
        "tenant_id": tenant_id,
        "team_id": team_id,
        "key_id": key_id,
        "policy_pack": policy_pack,
        "category": category,
        "priority": priority,
        "mode": mode,
        "reason": reason,
        "model_requested": model_requested,
        "trace_id": trace_id,
        "queue": queue,
        "status": "resolved" if decided else undecided_status,
        "claimed_by": claimed_by,
        "decision": decision,
        "resolved_by": resolved_by,
        "opened_at_ms": opened_at_ms,
        "age_ms": max(now_ms - opened_at_ms, 0),
        "deadline_at_ms": deadline_at_ms,
        "overdue": None if deadline_at_ms is None else not decided and now_ms > deadline_at_ms,
        "resolved_at_ms": resolved_at_ms,
    }


def escalation_page(
    rows: Sequence[dict[str, Any]], *, status: str, tenant_id: str | None
) -> dict[str, Any]:
    """The listing's body: the filters applied (`tenant_id` null: every tenant the caller
    sees) and the rows."""
    return {"tenant_id": tenant_id, "status": status, "data": list(rows)}
