"""Policy packs: what `govledger policy lint` tells a platform team, line by line."""

from __future__ import annotations

import textwrap

import pytest

from gateway.policy.pack import (
    STEP_ORDER,
    AuditPolicy,
    ContentPolicy,
    CostLimitPolicy,
    OversightPolicy,
    PackError,
    PiiPolicy,
    RbacPolicy,
    lint,
    parse_pack,
    template_names,
    template_source,
)


def pack(body: str) -> str:
    return textwrap.dedent(body).lstrip()


GOOD = pack(
    """
    name: support-bot
    description: The support team's assistant.
    policies:
      chain:
        - name: rbac
          policy:
            require_auth: true
            minimum_role: developer
        - name: pii-detector
          targeting: {scope: team, teams: [support, sales]}
          policy:
            detect: [email, card]
            action: redact
        - name: content-filter
          policy:
            deny: [wire transfer]
            patterns: ['ignore previous instructions']
            action: flag
        - name: human-oversight
          policy:
            triggers: [content-filter]
            mode: hold
            hold_timeout_s: 20
            priority: P1
            category: fraud
        - name: cost-limit
          policy:
            monthly_limit_usd: '1250.50'
        - name: audit-logger
          policy:
            retention_days: 30
            store_content: true
    """
)


def test_a_valid_pack_parses_into_typed_steps_in_chain_order() -> None:
    parsed = parse_pack(GOOD)
    assert parsed.name == "support-bot"
    assert [s.name for s in parsed.steps] == list(STEP_ORDER)
    assert parsed.steps[0].policy == RbacPolicy(require_auth=True, minimum_role="developer")
    pii = parsed.steps[1]
    assert pii.policy == PiiPolicy(detect=frozenset({"email", "card"}), action="redact")
    assert pii.targeting.applies("support") and not pii.targeting.applies("finance")
    assert parsed.steps[0].targeting.applies("finance")  # no targeting: the whole org
    content = parsed.steps[2].policy
    assert isinstance(content, ContentPolicy) and content.action == "flag"
    assert content.content_filter.first_match("please send a Wire Transfer now") is not None
    oversight = parsed.steps[3].policy
    assert oversight == OversightPolicy(
        triggers=frozenset({"content-filter"}),
        mode="hold",
        hold_timeout_s=20.0,
        priority="P1",
        category="fraud",
    )
    assert parsed.steps[4].policy == CostLimitPolicy(monthly_limit_nanousd=1_250_500_000_000)
    assert parsed.steps[5].policy == AuditPolicy(retention_days=30, store_content=True)
    assert lint(GOOD) == []


@pytest.mark.parametrize(
    ("mistake", "replacement", "line", "words"),
    [
        ("minimum_role: developer", "minimum_role: boss", 8, "minimum_role must be one of"),
        ("detect: [email, card]", "detect: [email, dna]", 12, "unknown kinds dna"),
        ("action: redact", "action: shout", 13, "action must be one of redact, block"),
        ("scope: team, teams", "scope: tribe, teams", 10, "scope must be one of org, team"),
        ("priority: P1", "priority: urgent", 24, "priority must be one of P1"),
        ("hold_timeout_s: 20", "hold_timeout_s: 9000", 23, "hold_timeout_s must be in"),
        ("monthly_limit_usd: '1250.50'", "monthly_limit_usd: lots", 28, "monthly_limit_usd"),
        ("retention_days: 30", "retention_days: 0", 31, "retention_days must be 1..3650"),
        ("store_content: true", "store_content: maybe", 32, "store_content must be a bool"),
        (
            "require_auth: true",
            "require_auth: true\n        colour: blue",
            8,
            "unknown key 'colour'",
        ),
        (
            "patterns: ['ignore previous instructions']",
            "patterns: ['(unclosed']",
            17,
            "(unclosed",
        ),
    ],
)
def test_lint_names_the_line_and_the_problem(
    mistake: str, replacement: str, line: int, words: str
) -> None:
    assert mistake in GOOD
    problems = lint(GOOD.replace(mistake, replacement))
    assert len(problems) == 1, problems
    assert problems[0].line == line
    assert words in problems[0].message


def test_steps_out_of_order_or_twice_are_refused_with_the_line() -> None:
    swapped = pack(
        """
        name: p
        policies:
          chain:
            - name: cost-limit
              policy: {monthly_limit_usd: 5}
            - name: rbac
            - name: rbac
        """
    )
    problems = lint(swapped)
    assert [p.line for p in problems] == [6, 7]
    assert "'rbac' must come before 'cost-limit'" in problems[0].message
    assert "appears twice" in problems[1].message


def test_unknown_step_and_yaml_syntax_errors_carry_lines() -> None:
    problems = lint("name: p\npolicies:\n  chain:\n    - name: tarot-reader\n")
    assert [(p.line, "step name must be one of" in p.message) for p in problems] == [(4, True)]
    problems = lint("name: p\npolicies:\n  chain: [\n")
    assert problems[0].line == 4
    assert "not valid YAML" in problems[0].message


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("", "empty"),
        ("- just a list\n", "the pack must be a mapping"),
        ("name: p\n", "needs policies"),
        ("policies:\n  chain: []\n", "needs a name"),
        ("name: Bad Name\npolicies:\n  chain: []\n", "name must be lower-case"),
        ("name: p\npolicies:\n  chain: {}\n", "chain must be a list"),
        (
            "name: p\npolicies:\n  chain:\n    - name: content-filter\n      policy: {action: flag,"
            " deny: [x]}\n",
            "needs a human-oversight step",
        ),
        ("name: p\npolicies:\n  chain:\n    - name: cost-limit\n", "needs monthly_limit_usd"),
        (
            "name: p\npolicies:\n  chain:\n    - name: rbac\n      targeting: {scope: team}\n",
            "non-empty teams",
        ),
    ],
)
def test_structural_problems_are_reported(source: str, words: str) -> None:
    problems = lint(source)
    assert problems, source
    assert any(words in p.message for p in problems), problems


def test_parse_pack_raises_with_every_problem() -> None:
    broken = GOOD.replace("minimum_role: developer", "minimum_role: boss").replace(
        "retention_days: 30", "retention_days: -1"
    )
    with pytest.raises(PackError) as caught:
        parse_pack(broken)
    assert [e.line for e in caught.value.errors] == [8, 31]


def test_a_pack_over_the_size_limit_is_refused() -> None:
    assert "over 65536 bytes" in lint("# " + "x" * 70_000)[0].message


@pytest.mark.parametrize(
    "name", ["standard-saas", "healthcare-compliant", "internal-tools", "customer-facing"]
)
def test_every_shipped_template_lints_clean(name: str) -> None:
    assert name in template_names()
    assert lint(template_source(name)) == []
    assert parse_pack(template_source(name)).name == name
