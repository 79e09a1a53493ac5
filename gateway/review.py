"""A call the policy chain sends for human review: its escalation opened, and the call
refused with its reference or held until a reviewer decides (or the hold times out)."""

from __future__ import annotations

import asyncio
import time

from gateway import errors
from gateway.call_record import CallRecord
from gateway.errors import GatewayError
from gateway.policy.chain import Review
from gateway.views import LocalViews
from schemas.ids import now_ms, uuid7
from schemas.publisher import Publisher
from schemas.records import EscalationOpened
from schemas.topics import ESCALATIONS
from streams.keys.logic import Key

DECISION_POLL_S = 0.05


async def hold_for_review(
    views: LocalViews,
    lineage: Publisher,
    *,
    call: CallRecord,
    key: Key,
    pack_name: str,
    review: Review,
) -> None:
    """Open an escalation; refuse the call with its reference, or hold it for a decision
    (approved: return; rejected or no decision in time: GatewayError)."""
    policy = review.policy
    escalation_id = f"esc_{uuid7().replace('-', '')}"
    opened = EscalationOpened(
        event_id=uuid7(),
        event_type=EscalationOpened.event_type_name,
        occurred_at=now_ms(),
        tenant_id=key.tenant_id,
        escalation_id=escalation_id,
        trace_id=call.trace_id,
        team_id=key.team_id,
        key_id=key.key_id,
        policy_pack=pack_name,
        category=policy.category,
        priority=policy.priority,
        mode=policy.mode,
        reason=review.reason,
        model_requested=call.model_requested,
        request_sha256=call.request_sha256,
    )
    await lineage.publish(ESCALATIONS.name, key.tenant_id, opened)
    reference = {"X-Govledger-Escalation": escalation_id}
    if policy.mode == "refuse":
        raise GatewayError(
            errors.REVIEW_REQUIRED,
            f"this call needs human review; reference {escalation_id}",
            headers=reference,
        )
    decision = await _decision(views, escalation_id, policy.hold_timeout_s)
    if decision == "approve":
        return
    if decision == "reject":
        raise GatewayError(
            errors.REVIEW_REJECTED,
            f"a reviewer rejected this call; reference {escalation_id}",
            headers=reference,
        )
    raise GatewayError(
        errors.REVIEW_REQUIRED,
        f"no review decision within {policy.hold_timeout_s:g}s; reference {escalation_id}",
        headers=reference,
    )


async def _decision(views: LocalViews, escalation_id: str, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while (decision := views.escalation_decisions.get(escalation_id)) is None:
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(DECISION_POLL_S)
    return decision
