"""Attacks of a tenant admin on the org baseline, through the pack it pushes: every way
of writing a weaker retention, PII step or role that YAML offers. Each pack of the corpus
is refused (a lint error, or an org rule it breaks), never crashes the parser, and the
chain a call runs still redacts. The admin API route refuses with these same functions
(tests/unit/test_admin_baseline.py shows the HTTP side)."""

from __future__ import annotations

import pytest

from gateway.policy.baseline import DEFAULT_BASELINE, effective_pack, lint_against, lint_baseline
from gateway.policy.chain import CallFacts, evaluate
from gateway.policy.pack import PackError, parse_pack


def audit(days: str) -> str:
    return (
        "name: default\npolicies:\n  chain:\n"
        f"    - name: audit-logger\n      policy: {{retention_days: {days}}}\n"
    )


RETENTION_SPELLINGS = [
    "1",
    "29",
    "0",
    "-30",
    "'30'",
    "1.5",
    "29.0",
    "0x1d",  # YAML 1.1 hex: 29
    "0o35",
    "035",  # YAML 1.1 octal: 29
    "2_9",  # YAML 1.1 digit groups: 29
    "0b11101",  # YAML 1.1 binary: 29
    "0:29",  # YAML 1.1 sexagesimal: 29
    "!!int '1'",
    "!!float 1",
    "!!str 365",
    "!!python/object:os.system 1",
    "!!python/name:os.system",
    "!<tag:example.com,2000:days> 1",
    ".inf",
    "-.inf",
    ".nan",
    "true",
    "null",
    "~",
    "[365]",
    "{days: 365}",
    "1e1",
    "1 # 365",
]

OTHER_ATTACKS = [
    # the step twice: a long one for show, a short one that would win
    "name: default\npolicies:\n  chain:\n"
    "    - name: audit-logger\n      policy: {retention_days: 365}\n"
    "    - name: audit-logger\n      policy: {retention_days: 1}\n",
    # the key twice in one mapping
    "name: default\npolicies:\n  chain:\n"
    "    - name: audit-logger\n      policy: {retention_days: 365, retention_days: 1}\n",
    # a merge key smuggling the short retention in
    "name: default\npolicies:\n  chain:\n"
    "    - name: audit-logger\n      policy: {<<: {retention_days: 1}}\n",
    # an alias of a short retention
    "x: &short 1\nname: default\npolicies:\n  chain:\n"
    "    - name: audit-logger\n      policy: {retention_days: *short}\n",
    # a second document overriding the first
    audit("365") + "---\n" + audit("1"),
    # the short retention for one team only
    "name: default\npolicies:\n  chain:\n    - name: audit-logger\n"
    "      targeting: {scope: team, teams: [shadow]}\n      policy: {retention_days: 1}\n",
    # the baseline's own keys in a tenant pack
    "name: default\nrole_ceiling: org-admin\npolicies:\n  chain: []\n",
    # actions that do not exist, to switch the step off
    *(
        "name: default\npolicies:\n  chain:\n"
        f"    - name: pii-detector\n      policy: {{action: {action}}}\n"
        for action in ("allow", "none", "off", "'redact '", "REDACT", "false", "null")
    ),
    # detecting nothing
    "name: default\npolicies:\n  chain:\n    - name: pii-detector\n      policy: {detect: []}\n",
    # look-alike step names (hyphen U+2010, Cyrillic a)
    "name: default\npolicies:\n  chain:\n    - name: pii\u2010detector\n",
    "name: default\npolicies:\n  chain:\n    - name: \u0430udit-logger\n",
    # nesting past the parser's recursion limit
    "name: default\npolicies: " + "[" * 5_000 + "]" * 5_000 + "\n",
    "name: default\npolicies:\n  chain:\n    - " + "{a: " * 3_000 + "1" + "}" * 3_000 + "\n",
]


@pytest.mark.parametrize("source", [audit(d) for d in RETENTION_SPELLINGS] + OTHER_ATTACKS)
def test_no_spelling_of_a_weaker_pack_gets_past_the_baseline(source: str) -> None:
    assert lint_against(DEFAULT_BASELINE, source), "accepted"


@pytest.mark.parametrize("days", ["!!python/object:os.system 1", "[" * 5_000 + "]" * 5_000])
def test_what_the_parser_cannot_read_is_a_lint_error_not_a_crash(days: str) -> None:
    with pytest.raises(PackError):
        parse_pack(audit(days))
    assert lint_baseline(audit(days).replace("name: default", "name: b\nrole_ceiling: viewer"))


def test_a_pack_accepted_without_a_pii_step_still_runs_the_org_s_redaction() -> None:
    pack = parse_pack(audit("400"))
    facts = CallFacts(
        team_id="shadow",
        role="developer",
        user_id=None,
        messages=[{"role": "user", "content": "card 4111 1111 1111 1111, jane@example.com"}],
        team_month_spent_nanousd=0,
        estimated_cost_nanousd=0,
    )
    verdict = evaluate(effective_pack(DEFAULT_BASELINE, pack), facts)
    text = verdict.messages[0]["content"]
    assert "4111" not in text and "jane@example.com" not in text


def test_the_corpus_size() -> None:
    size = len(RETENTION_SPELLINGS) + len(OTHER_ATTACKS)
    print(f"\norg baseline attack corpus: {size} packs")
    assert size >= 45
