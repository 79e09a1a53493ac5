"""The org baseline: what a tenant pack may not weaken, the retention floor, the role
ceiling, and the chain a call runs under the baseline and a tenant's pack."""

from __future__ import annotations

import textwrap

import pytest

from gateway.policy.baseline import (
    DEFAULT_BASELINE,
    DEFAULT_BASELINE_YAML,
    floor_retention,
    grant_violation,
    lint_against,
    lint_baseline,
    pack_violations,
    parse_baseline,
)
from gateway.policy.baseline import effective_pack as effective
from gateway.policy.chain import CallFacts, evaluate
from gateway.policy.pack import PackError, parse_pack, template_names, template_source
from schemas.records import Guardrail


def doc(chain: str, name: str = "default", head: str = "") -> str:
    return f"name: {name}\n{head}policies:\n  chain:\n" + textwrap.indent(
        textwrap.dedent(chain).strip() + "\n", "    "
    )


STRICT = parse_baseline(
    doc(
        """
        - name: rbac
          policy: {require_auth: true, minimum_role: developer}
        - name: pii-detector
          policy: {detect: [email, card], action: block}
        - name: content-filter
          policy: {deny: [wire transfer], action: block}
        - name: audit-logger
          policy: {retention_days: 90, log_all_access: true}
        """,
        name="org-baseline",
        head="role_ceiling: developer\n",
    )
)


def facts(text: str, team: str = "support") -> CallFacts:
    return CallFacts(
        team_id=team,
        role="developer",
        user_id="u-1",
        messages=[{"role": "user", "content": text}],
        team_month_spent_nanousd=0,
        estimated_cost_nanousd=0,
    )


# --- the default baseline -----------------------------------------------------------------


def test_the_default_baseline_redacts_pii_keeps_30_days_and_caps_grants_at_tenant_admin() -> None:
    assert lint_baseline(DEFAULT_BASELINE_YAML) == []
    assert DEFAULT_BASELINE.summary() == {
        "name": "org-baseline",
        "required_steps": ["pii-detector", "audit-logger"],
        "retention_floor_days": 30,
        "role_ceiling": "tenant-admin",
    }


@pytest.mark.parametrize("name", template_names())
def test_every_shipped_template_passes_the_default_baseline(name: str) -> None:
    assert pack_violations(DEFAULT_BASELINE, template_source(name)) == []


# --- weakening a required step is refused, naming the rule ---------------------------------


def test_a_retention_below_the_floor_is_refused_naming_the_rule_and_line() -> None:
    source = doc("- name: audit-logger\n  policy: {retention_days: 1}")
    (violation,) = pack_violations(DEFAULT_BASELINE, source)
    assert violation.rule == "retention_floor"
    assert violation.line == 4
    assert str(violation) == (
        "org baseline rule retention_floor: retention_days 1 is below the org floor of 30"
    )
    assert pack_violations(DEFAULT_BASELINE, source.replace("1}", "30}")) == []


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        (
            "- name: pii-detector\n  policy: {action: redact}",
            "pii-detector action redact is weaker than the org's block",
        ),
        (
            "- name: rbac\n  policy: {require_auth: false, minimum_role: developer}",
            "rbac require_auth false would drop the org's require_auth: true",
        ),
        (
            "- name: rbac\n  policy: {require_auth: true, minimum_role: viewer}",
            "rbac minimum_role viewer is below the org's developer",
        ),
        (
            "- name: content-filter\n  policy: {deny: [x], action: flag}\n"
            "- name: human-oversight\n  policy: {}",
            "content-filter action flag is weaker than the org's block",
        ),
        (
            "- name: audit-logger\n  policy: {retention_days: 90, log_all_access: false}",
            "audit-logger log_all_access false would drop the org's log_all_access: true",
        ),
    ],
)
def test_a_step_weaker_than_the_org_s_is_refused(chain: str, expected: str) -> None:
    violations = pack_violations(STRICT, doc(chain))
    assert [str(v) for v in violations] == [f"org baseline rule required_step: {expected}"]


def test_a_pack_at_least_as_strict_or_without_the_step_is_accepted() -> None:
    stricter = doc(
        """
        - name: rbac
          policy: {require_auth: true, minimum_role: tenant-admin}
        - name: pii-detector
          targeting: {scope: team, teams: [support]}
          policy: {detect: [email], action: block}
        - name: audit-logger
          policy: {retention_days: 400, log_all_access: true}
        """
    )
    assert pack_violations(STRICT, stricter) == []
    no_such_step = doc("- name: cost-limit\n  policy: {monthly_limit_usd: 5}")
    assert pack_violations(STRICT, no_such_step) == []


def test_every_violation_of_a_pack_is_listed_in_line_order() -> None:
    source = doc(
        """
        - name: pii-detector
          policy: {action: redact}
        - name: audit-logger
          policy: {retention_days: 7}
        """
    )
    assert [(v.rule, v.line) for v in pack_violations(STRICT, source)] == [
        ("required_step", 4),
        ("retention_floor", 6),
        ("required_step", 6),
    ]


def test_lint_against_the_baseline_reports_syntax_first_then_org_rules() -> None:
    broken = doc("- name: audit-logger\n  policy: {retention_days: zero}")
    assert [e.message for e in lint_against(STRICT, broken)] == ["retention_days must be a int"]
    weak = doc("- name: audit-logger\n  policy: {retention_days: 1, log_all_access: true}")
    assert [str(e) for e in lint_against(STRICT, weak)] == [
        "line 4: org baseline rule retention_floor: retention_days 1 is below the org floor of 90"
    ]


# --- the role ceiling -----------------------------------------------------------------------


def test_the_role_ceiling_caps_what_a_tenant_admin_may_grant() -> None:
    assert grant_violation(DEFAULT_BASELINE, "tenant-admin") is None
    refused = grant_violation(DEFAULT_BASELINE, "org-admin")
    assert refused is not None and str(refused) == (
        "org baseline rule role_ceiling: a tenant admin may grant roles up to tenant-admin, "
        "not org-admin"
    )
    assert grant_violation(STRICT, "developer") is None
    lowered = grant_violation(STRICT, "tenant-admin")
    assert lowered is not None and lowered.rule == "role_ceiling"


# --- what a baseline document may say --------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "chain", "message"),
    [
        ("role_ceiling: org-admin\n", "- name: pii-detector", "role_ceiling must be one of"),
        ("", "- name: pii-detector", "the org baseline needs role_ceiling"),
        (
            "role_ceiling: developer\n",
            "- name: cost-limit\n  policy: {monthly_limit_usd: 5}",
            "cost-limit cannot be an org baseline step",
        ),
        (
            "role_ceiling: developer\n",
            "- name: pii-detector\n  targeting: {scope: team, teams: [a]}",
            "an org baseline step applies to every team",
        ),
        ("role_ceiling: developer\nextra: 1\n", "- name: pii-detector", "unknown key 'extra'"),
    ],
)
def test_a_baseline_that_would_not_bind_every_tenant_is_refused(
    head: str, chain: str, message: str
) -> None:
    source = doc(chain, name="org-baseline", head=head)
    assert any(message in e.message for e in lint_baseline(source)), lint_baseline(source)
    with pytest.raises(PackError):
        parse_baseline(source)


def test_a_tenant_pack_may_not_carry_the_baseline_s_keys() -> None:
    with pytest.raises(PackError, match="unknown key 'role_ceiling'"):
        parse_pack(doc("- name: pii-detector", head="role_ceiling: developer\n"))


# --- the chain a call runs -------------------------------------------------------------------


def test_the_baseline_redacts_pii_when_the_tenant_pack_has_no_pii_step() -> None:
    pack = parse_pack(doc("- name: cost-limit\n  policy: {monthly_limit_usd: 100}"))
    verdict = evaluate(effective(DEFAULT_BASELINE, pack), facts("mail jane@example.com"))
    assert verdict.triggered == (Guardrail("pii-detector", "redact"),)
    assert verdict.messages[0]["content"] == "mail [REDACTED:EMAIL]"
    assert verdict.applied == ("pii-detector", "cost-limit", "audit-logger")


def test_without_any_tenant_pack_the_baseline_still_runs() -> None:
    verdict = evaluate(effective(DEFAULT_BASELINE, None), facts("card 4111 1111 1111 1111"))
    assert "4111" not in verdict.messages[0]["content"]


def test_a_tenant_block_is_not_hidden_by_the_org_s_redaction() -> None:
    pack = parse_pack(doc("- name: pii-detector\n  policy: {detect: [card], action: block}"))
    chain = effective(DEFAULT_BASELINE, pack)
    refused = evaluate(chain, facts("card 4111 1111 1111 1111"))
    assert refused.refusal is not None and refused.refusal.reason == "pii_blocked"
    redacted = evaluate(chain, facts("mail jane@example.com"))
    assert redacted.refusal is None and "[REDACTED:EMAIL]" in redacted.messages[0]["content"]


def test_the_org_s_step_runs_before_the_tenant_s_and_both_hold() -> None:
    pack = parse_pack(
        doc(
            """
            - name: rbac
              policy: {require_auth: false, minimum_role: viewer}
            - name: content-filter
              policy: {deny: [launch codes], action: block}
            """
        )
    )
    chain = effective(STRICT, pack)
    assert [s.name for s in chain.steps] == [
        "rbac",
        "rbac",
        "pii-detector",
        "content-filter",
        "content-filter",
        "audit-logger",
    ]
    org_word = evaluate(chain, facts("start a wire transfer"))
    assert org_word.refusal is not None and org_word.refusal.reason == "content_blocked"
    own_word = evaluate(chain, facts("the launch codes"))
    assert own_word.refusal is not None and own_word.refusal.reason == "content_blocked"


# --- retention --------------------------------------------------------------------------------


def test_retention_is_never_below_the_floor_even_for_older_packs() -> None:
    assert floor_retention({"acme": 1, "globex": 365}, 30) == {"acme": 30, "globex": 365}
    assert floor_retention({"acme": 1}, None) == {"acme": 1}
