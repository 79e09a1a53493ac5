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
    # The gateway's name (GOVLEDGER_GATEWAY_NAME), for steps that target gateways.
    gateway: str = ""


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


# Keys whose string values are identifiers, enums or binary payloads (base64), never text
# a model reads as prose: not scanned. Every other string in a message is: `content` (a
# string or its parts' text), `name`, tool-call `arguments`, a refusal, and any field this
# list does not know (fail closed). A `data:` URL is a binary payload too.
UNSCANNED_KEYS = frozenset(
    {"role", "type", "id", "tool_call_id", "detail", "format", "data", "file_data", "file_id"}
)


def _scanned(key: str | None, text: str) -> bool:
    return key not in UNSCANNED_KEYS and not (key == "url" and text.startswith("data:"))


def texts(message: dict[str, Any]) -> list[str]:
    """Every text of a message a provider reads (see `UNSCANNED_KEYS`), depth first."""
    found: list[str] = []
    stack: list[tuple[str | None, Any]] = [(None, message)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, str):
            if _scanned(key, value):
                found.append(value)
        elif isinstance(value, dict):
            stack.extend(reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((key, item) for item in reversed(value))
    return found


def _redacted(value: Any, key: str | None, kinds: frozenset[str]) -> Any:
    """The value with PII redacted in every scanned string; the very object when none.
    Depth is bounded by request validation (gateway.chat.MAX_MESSAGE_DEPTH)."""
    if isinstance(value, str):
        findings = find_pii(value, kinds) if _scanned(key, value) else []
        return redact(value, findings) if findings else value
    if isinstance(value, dict):
        items = {k: _redacted(v, k, kinds) for k, v in value.items()}
        changed = any(items[k] is not v for k, v in value.items())
        return items if changed else value
    if isinstance(value, list):
        listed = [_redacted(item, key, kinds) for item in value]
        changed = any(new is not old for new, old in zip(listed, value, strict=True))
        return listed if changed else value
    return value


def _redacted_message(message: dict[str, Any], kinds: frozenset[str]) -> dict[str, Any] | None:
    """The message with PII redacted in every text it carries, or None when it holds none."""
    redacted: dict[str, Any] = _redacted(message, None, kinds)
    return None if redacted is message else redacted


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


def reads_text(pack: PolicyPack, team_id: str, gateway: str = "") -> bool:
    """Whether a step of the pack that targets the team (on this gateway) reads the
    request's text (PII detection, the content filter)."""
    return any(
        isinstance(step.policy, PiiPolicy | ContentPolicy)
        and step.targeting.applies(team_id, gateway)
        for step in pack.steps
    )


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
        if not step.targeting.applies(facts.team_id, facts.gateway):
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
