"""Whom a step runs for: its own targeting (teams, gateways) and the pack's, both holding."""

from __future__ import annotations

import textwrap

import pytest

from gateway.policy.chain import CallFacts, evaluate, reads_text
from gateway.policy.pack import lint, parse_pack
from gateway.policy.targeting import Targeting, narrowed


def pack(body: str) -> str:
    return textwrap.dedent(body).strip() + "\n"


def applied(source: str, team: str, gateway: str) -> tuple[str, ...]:
    facts = CallFacts(team, "developer", "u-1", [{"role": "user", "content": "hi"}], 0, 0, gateway)
    return evaluate(parse_pack(source), facts).applied


STEP_GATEWAYS = pack(
    """
    name: edge
    policies:
      chain:
        - name: pii-detector
          targeting: {gateways: [prod-gw-01]}
          policy: {detect: [email], action: redact}
        - name: audit-logger
          policy: {retention_days: 30}
    """
)
PACK_TARGETING = pack(
    """
    name: alpha-only
    targeting: {teams: [alpha, beta], gateways: [team-alpha-gw]}
    policies:
      chain:
        - name: pii-detector
          targeting: {teams: [alpha]}
          policy: {detect: [email], action: redact}
        - name: audit-logger
          policy: {retention_days: 30}
    """
)


def test_a_step_naming_gateways_runs_only_there() -> None:
    assert applied(STEP_GATEWAYS, "any", "prod-gw-01") == ("pii-detector", "audit-logger")
    assert applied(STEP_GATEWAYS, "any", "staging-gw") == ("audit-logger",)
    assert applied(STEP_GATEWAYS, "any", "") == ("audit-logger",)  # an unnamed gateway
    assert reads_text(parse_pack(STEP_GATEWAYS), "any", "prod-gw-01")
    assert not reads_text(parse_pack(STEP_GATEWAYS), "any", "staging-gw")


def test_the_pack_s_targeting_narrows_every_step() -> None:
    assert applied(PACK_TARGETING, "alpha", "team-alpha-gw") == ("pii-detector", "audit-logger")
    assert applied(PACK_TARGETING, "beta", "team-alpha-gw") == ("audit-logger",)
    assert applied(PACK_TARGETING, "gamma", "team-alpha-gw") == ()
    assert applied(PACK_TARGETING, "alpha", "other-gw") == ()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            PACK_TARGETING.replace("teams: [alpha]}", "teams: [gamma]}"),
            "pii-detector targets no team or gateway of the pack's",
        ),
        (
            STEP_GATEWAYS.replace("gateways: [prod-gw-01]", "gateways: []"),
            "targeting.gateways is empty",
        ),
        (STEP_GATEWAYS.replace("gateways:", "hosts:"), "unknown key 'hosts'"),
    ],
)
def test_targeting_nobody_is_a_lint_error(source: str, message: str) -> None:
    assert any(message in problem.message for problem in lint(source)), lint(source)


def test_narrowing_keeps_what_both_allow() -> None:
    org, alpha = Targeting(), Targeting("team", frozenset({"alpha"}))
    gw = Targeting(gateways=frozenset({"g1"}))
    assert narrowed(org, org) == org
    assert narrowed(org, alpha) == alpha
    assert narrowed(alpha, gw) == Targeting("team", frozenset({"alpha"}), frozenset({"g1"}))
    assert narrowed(Targeting(gateways=frozenset({"g2"})), gw) is None
    assert narrowed(Targeting("team", frozenset({"beta"})), alpha) is None
