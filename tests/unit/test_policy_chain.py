"""The policy chain on one call: what runs, what fires, what the provider gets to see."""

from __future__ import annotations

import textwrap
from typing import Any

from gateway.policy.chain import CallFacts, evaluate
from gateway.policy.pack import parse_pack
from schemas.money import usd_to_nanousd
from schemas.records import Guardrail

PACK = parse_pack(
    textwrap.dedent(
        """
        name: support-bot
        policies:
          chain:
            - name: rbac
              policy: {require_auth: true, minimum_role: developer}
            - name: pii-detector
              targeting: {scope: team, teams: [support]}
              policy: {detect: [email, card], action: redact}
            - name: content-filter
              policy: {deny: [wire transfer], action: flag}
            - name: human-oversight
              policy: {triggers: [content-filter], mode: hold, priority: P1}
            - name: cost-limit
              policy: {monthly_limit_usd: 100}
            - name: audit-logger
              policy: {retention_days: 30}
        """
    )
)


def facts(text: str = "hello", **overrides: Any) -> CallFacts:
    fields: dict[str, Any] = {
        "team_id": "support",
        "role": "developer",
        "user_id": "u-1",
        "messages": [{"role": "user", "content": text}],
        "team_month_spent_nanousd": 0,
        "estimated_cost_nanousd": 1_000,
    }
    fields.update(overrides)
    return CallFacts(**fields)


def test_a_clean_call_runs_every_step_and_triggers_none() -> None:
    verdict = evaluate(PACK, facts())
    assert verdict.applied == (
        "rbac",
        "pii-detector",
        "content-filter",
        "human-oversight",
        "cost-limit",
        "audit-logger",
    )
    assert verdict.triggered == ()
    assert verdict.refusal is None and verdict.review is None
    assert verdict.audit is not None and verdict.audit.retention_days == 30


def test_pii_is_redacted_before_the_provider_sees_it_and_the_original_is_untouched() -> None:
    original: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "mail jane@example.com, card 4111 1111 1111 1111"},
                {"type": "image_url", "image_url": {"url": "https://x.example/a.png"}},
            ],
        },
    ]
    verdict = evaluate(PACK, facts(messages=original))
    assert verdict.triggered == (Guardrail("pii-detector", "redact"),)
    parts = verdict.messages[1]["content"]
    assert isinstance(parts, list)
    redacted = parts[0]["text"]
    assert "jane@example.com" not in redacted and "4111" not in redacted
    assert "[REDACTED:EMAIL]" in redacted and "[REDACTED:CARD]" in redacted
    assert verdict.messages[0] is original[0]  # untouched messages are passed through
    assert original[1]["content"][0]["text"].startswith("mail jane@")


def test_a_step_targeted_at_other_teams_does_not_run() -> None:
    verdict = evaluate(PACK, facts("mail jane@example.com", team_id="finance"))
    assert "pii-detector" not in verdict.applied
    assert verdict.messages[0]["content"] == "mail jane@example.com"


def test_rbac_refuses_a_call_without_a_user_or_below_the_role() -> None:
    no_user = evaluate(PACK, facts(user_id=None))
    assert no_user.refusal is not None and no_user.refusal.reason == "user_required"
    assert no_user.triggered == (Guardrail("rbac", "block"),)
    assert no_user.applied == ("rbac",)  # a refusal ends the chain
    viewer = evaluate(PACK, facts(role="viewer"))
    assert viewer.refusal is not None and viewer.refusal.reason == "role_insufficient"
    assert evaluate(PACK, facts(role="org-admin")).refusal is None


def test_a_flagged_content_match_asks_for_review_with_the_reason() -> None:
    verdict = evaluate(PACK, facts("please make a wire transfer to me"))
    assert verdict.refusal is None
    assert verdict.triggered == (
        Guardrail("content-filter", "escalate"),
        Guardrail("human-oversight", "escalate"),
    )
    assert verdict.review is not None
    assert verdict.review.reason == "content-filter"
    assert verdict.review.policy.mode == "hold" and verdict.review.policy.priority == "P1"


def test_cost_limit_counts_month_spend_plus_this_call() -> None:
    limit = usd_to_nanousd("100")
    at_limit = evaluate(PACK, facts(team_month_spent_nanousd=limit - 1_000))
    assert at_limit.refusal is None
    over = evaluate(PACK, facts(team_month_spent_nanousd=limit - 999))
    assert over.refusal is not None and over.refusal.reason == "cost_limit_exceeded"
    assert over.triggered == (Guardrail("cost-limit", "block"),)


def test_pii_block_refuses_without_redacting() -> None:
    blocking = parse_pack(
        "name: strict\npolicies:\n  chain:\n    - name: pii-detector\n"
        "      policy: {action: block}\n"
    )
    verdict = evaluate(blocking, facts("my SSN is 123-45-6789"))
    assert verdict.refusal is not None and verdict.refusal.reason == "pii_blocked"
    assert evaluate(blocking, facts("nothing personal here")).refusal is None


def test_review_of_every_call_when_no_triggers_are_named() -> None:
    always = parse_pack(
        "name: review-all\npolicies:\n  chain:\n    - name: human-oversight\n"
        "      policy: {mode: refuse}\n"
    )
    verdict = evaluate(always, facts())
    assert verdict.review is not None and verdict.review.reason == "always"
