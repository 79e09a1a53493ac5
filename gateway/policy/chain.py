"""The policy chain: a pack's steps evaluated against one call. Pure: no I/O, no clock.

Steps run in `STEP_ORDER`; a step that blocks ends the chain. Every step that ran is
listed in `applied`, every step that fired in `triggered` with what it did, so the
lineage record shows the whole decision. Redaction rewrites the messages here, before
any provider sees them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

from gateway.policy.detectors import find_pii, redact
from gateway.policy.pack import (
    AuditPolicy,
    ContentPolicy,
    CostLimitPolicy,
    OversightPolicy,
    PiiPolicy,
    PolicyPack,
    RbacPolicy,
)
from schemas.records import Guardrail, Role
from streams.keys.logic import role_rank

RefusalReason = Literal[
    "user_required",
    "role_insufficient",
    "pii_blocked",
    "content_blocked",
    "cost_limit_exceeded",
]


@dataclasses.dataclass(frozen=True, slots=True)
class CallFacts:
    """What the chain needs to know about a call."""

    team_id: str
    role: Role
    user_id: str | None
    messages: Sequence[dict[str, Any]]
    team_month_spent_nanousd: int
    estimated_cost_nanousd: int


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why the chain refused the call."""

    reason: RefusalReason
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Review:
    """A human must review the call: what the human-oversight step asked for and why."""

    policy: OversightPolicy
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """The chain's decision on one call."""

    applied: tuple[str, ...]
    triggered: tuple[Guardrail, ...]
    messages: Sequence[dict[str, Any]]
    refusal: Refusal | None = None
    review: Review | None = None
    audit: AuditPolicy | None = None


def texts(message: dict[str, Any]) -> list[str]:
    """The text a message carries: its string content or the text of its content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
    return []


def _redacted_message(message: dict[str, Any], kinds: frozenset[str]) -> dict[str, Any] | None:
    """The message with PII redacted, or None when it holds none."""
    content = message.get("content")
    if isinstance(content, str):
        findings = find_pii(content, kinds)
        return {**message, "content": redact(content, findings)} if findings else None
    if not isinstance(content, list):
        return None
    changed = False
    parts: list[Any] = []
    for part in content:
        text = part.get("text") if isinstance(part, dict) else None
        findings = find_pii(text, kinds) if isinstance(text, str) else []
        if isinstance(text, str) and findings:
            changed = True
            parts.append({**part, "text": redact(text, findings)})
        else:
            parts.append(part)
    return {**message, "content": parts} if changed else None


def _pii(
    policy: PiiPolicy, messages: Sequence[dict[str, Any]]
) -> tuple[bool, list[dict[str, Any]]]:
    """(found any, messages with findings redacted)."""
    found = False
    result: list[dict[str, Any]] = []
    for message in messages:
        redacted = _redacted_message(message, policy.detect)
        found = found or redacted is not None
        result.append(redacted if redacted is not None else message)
    return found, result


def _content_match(policy: ContentPolicy, messages: Sequence[dict[str, Any]]) -> str | None:
    for message in messages:
        for text in texts(message):
            match = policy.content_filter.first_match(text)
            if match is not None:
                return match
    return None


def evaluate(pack: PolicyPack, facts: CallFacts) -> Verdict:
    """Run the pack's steps that target the call's team, in order."""
    applied: list[str] = []
    triggered: list[Guardrail] = []
    messages: Sequence[dict[str, Any]] = facts.messages
    review: Review | None = None
    audit: AuditPolicy | None = None

    def refuse(step: str, reason: RefusalReason, message: str) -> Verdict:
        triggered.append(Guardrail(step, "block"))
        return Verdict(tuple(applied), tuple(triggered), messages, Refusal(reason, message))

    for step in pack.steps:
        if not step.targeting.applies(facts.team_id):
            continue
        applied.append(step.name)
        policy = step.policy
        if isinstance(policy, RbacPolicy):
            if policy.require_auth and not facts.user_id:
                return refuse(step.name, "user_required", "this policy requires 'user' on calls")
            if role_rank(facts.role) < role_rank(policy.minimum_role):
                return refuse(
                    step.name,
                    "role_insufficient",
                    f"key role {facts.role!r} is below the required {policy.minimum_role!r}",
                )
        elif isinstance(policy, PiiPolicy):
            found, redacted = _pii(policy, messages)
            if found and policy.action == "block":
                return refuse(step.name, "pii_blocked", "the request contains personal data")
            if found:
                messages = redacted
                triggered.append(Guardrail(step.name, "redact"))
        elif isinstance(policy, ContentPolicy):
            match = _content_match(policy, messages)
            if match is not None and policy.action == "block":
                return refuse(step.name, "content_blocked", f"content policy matched {match!r}")
            if match is not None:
                triggered.append(Guardrail(step.name, "escalate"))
        elif isinstance(policy, OversightPolicy):
            fired = [g.name for g in triggered if g.name in policy.triggers]
            if policy.require_review and (fired or not policy.triggers):
                review = Review(policy, ",".join(fired) or "always")
                triggered.append(Guardrail(step.name, "escalate"))
        elif isinstance(policy, CostLimitPolicy):
            after = facts.team_month_spent_nanousd + facts.estimated_cost_nanousd
            if after > policy.monthly_limit_nanousd:
                return refuse(
                    step.name,
                    "cost_limit_exceeded",
                    "the team's monthly cost limit would be exceeded by this call",
                )
        elif isinstance(policy, AuditPolicy):
            audit = policy
    return Verdict(tuple(applied), tuple(triggered), messages, None, review, audit)
