"""Packs in the seed's (Keeptrusts') shape: steps as a bare name or a one-key mapping, one
top-level `policy:` map of parameters by step name, the seed's role names, the name from
the file. They read into the same typed pack as ours, and each mistake is a lint error
with its line and the path to fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.policy.baseline import DEFAULT_BASELINE, lint_against
from gateway.policy.pack import (
    SEED_ROLES,
    PolicyPack,
    RbacPolicy,
    lint,
    pack_name_from_file,
    parse_pack,
)

SEED_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "keeptrusts-enterprise.yaml"
SEED = SEED_FILE.read_text()

# The same pack in our shape.
OURS = """\
name: keeptrusts-enterprise
policies:
  chain:
    - name: rbac
      targeting: {scope: team, teams: [support]}
      policy: {minimum_role: developer}
    - name: pii-detector
      targeting: {scope: team, teams: [support]}
      policy: {detect: [email, phone, card], action: redact}
    - name: audit-logger
      policy: {retention_days: 365}
"""


def seed(body: str) -> str:
    return textwrap.dedent(body).lstrip()


def test_the_seed_s_pack_reads_as_the_same_typed_pack_as_ours() -> None:
    name = pack_name_from_file(str(SEED_FILE))
    assert name == "keeptrusts-enterprise"
    assert lint(SEED, default_name=name) == []
    assert parse_pack(SEED, default_name=name) == parse_pack(OURS)


def test_a_pack_of_ours_keeps_its_own_name_whatever_the_file_is_called() -> None:
    assert parse_pack(OURS, default_name="other").name == "keeptrusts-enterprise"


def test_a_seed_pack_without_a_name_or_a_usable_file_name_is_refused() -> None:
    problems = lint(SEED)
    assert [(p.line, p.message) for p in problems] == [
        (4, "the pack needs a name (name:, pack.name, or a file name that gives one)")
    ]
    assert lint(SEED, default_name="Not A Name")[0].message.startswith("the pack needs a name")


def test_the_seed_s_pack_header_names_and_describes_the_pack() -> None:
    source = seed(
        """
        pack:
          name: support-guard
          version: 1.0.0
          enabled: true
          description: Support's guard rails.
        policies:
          chain: [audit-logger]
        """
    )
    parsed = parse_pack(source, default_name="from-file")
    assert (parsed.name, parsed.description) == ("support-guard", "Support's guard rails.")


@pytest.mark.parametrize(("seed_role", "ours"), sorted(SEED_ROLES.items()))
def test_the_seed_s_role_names_map_onto_ours(seed_role: str, ours: str) -> None:
    source = seed(
        f"""
        name: p
        policies:
          chain: [rbac]
        policy:
          rbac: {{minimum_role: {seed_role}}}
        """
    )
    assert parse_pack(source).steps[0].policy == RbacPolicy(minimum_role=ours)  # type: ignore[arg-type]


def test_teams_without_a_scope_target_those_teams_not_the_org() -> None:
    source = "name: p\npolicies:\n  chain:\n    - pii-detector: {targeting: {teams: [support]}}\n"
    (step,) = parse_pack(source).steps
    assert step.targeting.applies("support") and not step.targeting.applies("finance")
    assert parse_pack(source) == parse_pack(
        "name: p\npolicies:\n  chain:\n"
        "    - pii-detector: {targeting: {scope: team, teams: [support]}}\n"
    )
    empty = "name: p\npolicies:\n  chain:\n    - rbac: {targeting: {teams: []}}\n"
    assert [p.message for p in lint(empty)] == [
        "targeting.teams is empty: list the teams (or write scope: org)"
    ]


def test_steps_without_parameters_take_the_defaults() -> None:
    source = "name: p\npolicies:\n  chain:\n    - rbac:\n    - audit-logger\n"
    assert parse_pack(source) == parse_pack(
        "name: p\npolicies:\n  chain:\n    - name: rbac\n    - name: audit-logger\n"
    )
    assert isinstance(parse_pack(source), PolicyPack)


@pytest.mark.parametrize(
    ("source", "line", "message"),
    [
        (  # an unknown step, bare
            "name: p\npolicies:\n  chain:\n    - prompt-injection\n",
            4,
            "step name must be one of rbac, pii-detector, content-filter, human-oversight, "
            "cost-limit, audit-logger, not 'prompt-injection'",
        ),
        (  # an unknown step, as a one-key mapping
            "name: p\npolicies:\n  chain:\n    - tarot: {targeting: {scope: org}}\n",
            4,
            "step name must be one of rbac, pii-detector, content-filter, human-oversight, "
            "cost-limit, audit-logger, not 'tarot'",
        ),
        (  # an unknown parameter
            "name: p\npolicies:\n  chain: [rbac]\npolicy:\n  rbac:\n    colour: blue\n",
            6,
            "unknown key 'colour' in policy.rbac (known: require_auth, minimum_role)",
        ),
        (  # parameters of a step the chain does not have
            "name: p\npolicies:\n  chain: [rbac]\npolicy:\n  cost-limit: {monthly_limit_usd: 5}\n",
            5,
            "policy.cost-limit: there is no cost-limit step in the chain",
        ),
        (  # parameters for a step that does not exist
            "name: p\npolicies:\n  chain: [rbac]\npolicy:\n  tarot: {}\n",
            5,
            "unknown key 'tarot' in policy (known: rbac, pii-detector, content-filter, "
            "human-oversight, cost-limit, audit-logger)",
        ),
        (  # two keys in a one-key step
            "name: p\npolicies:\n  chain:\n    - rbac:\n      audit-logger:\n",
            4,
            "a chain step is {name, targeting, policy} or a mapping of one key, the step's "
            "name; this one has 2 keys: rbac, audit-logger",
        ),
        (  # a parameter inside the one-key step
            "name: p\npolicies:\n  chain:\n    - rbac: {minimum_role: member}\n",
            4,
            "unknown key 'minimum_role' in chain step rbac (its parameters go under "
            "policy.rbac) (known: targeting)",
        ),
        (  # parameters in two places
            "name: p\npolicies:\n  chain:\n    - name: rbac\n      policy: {require_auth: true}\n"
            "policy:\n  rbac: {require_auth: false}\n",
            7,
            "rbac has parameters both in its chain step and in policy",
        ),
        (  # a role neither of us has
            "name: p\npolicies:\n  chain: [rbac]\npolicy:\n  rbac: {minimum_role: boss}\n",
            5,
            "minimum_role must be one of viewer, developer, tenant-admin, org-admin, member, "
            "editor, admin, owner, not 'boss'",
        ),
        (  # policy that is not a map
            "name: p\npolicies:\n  chain: [rbac]\npolicy: [rbac]\n",
            4,
            "policy must be a mapping",
        ),
        (  # a disabled pack
            "pack: {name: p, enabled: false}\npolicies:\n  chain: [rbac]\n",
            1,
            "pack.enabled is false: a pushed pack runs; do not push it",
        ),
        (  # the name twice
            "name: p\npack: {name: q}\npolicies:\n  chain: [rbac]\n",
            2,
            "name is given twice: name and pack.name",
        ),
        (  # an unknown key in the header
            "pack: {name: p, owner: me}\npolicies:\n  chain: [rbac]\n",
            1,
            "unknown key 'owner' in pack (known: name, description, version, enabled)",
        ),
        (  # a step name that is not a string
            "name: p\npolicies:\n  chain:\n    - 12\n",
            4,
            "step name must be a str",
        ),
    ],
)
def test_each_mistake_in_the_seed_s_shape_is_a_lint_error_with_its_line(
    source: str, line: int, message: str
) -> None:
    problems = lint(source)
    assert [(p.line, p.message) for p in problems] == [(line, message)], problems


def test_the_chain_order_holds_in_the_seed_s_shape_too() -> None:
    problems = lint("name: p\npolicies:\n  chain: [audit-logger, rbac, rbac]\n")
    assert [p.message.split(":")[0] for p in problems] == [
        "'rbac' must come before 'audit-logger'",
        "'rbac' appears twice in the chain",
    ]


def test_the_org_baseline_holds_over_a_seed_shaped_pack_named_by_its_file() -> None:
    short = SEED.replace("retention_days: 365", "retention_days: 1")
    problems = lint_against(DEFAULT_BASELINE, short, "keeptrusts-enterprise")
    assert [p.message for p in problems] == [
        "org baseline rule retention_floor: retention_days 1 is below the org floor of 30"
    ]
    assert lint_against(DEFAULT_BASELINE, SEED, "keeptrusts-enterprise") == []


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("keeptrusts-enterprise.yaml", "keeptrusts-enterprise"),
        ("/srv/packs/Support Bot.YML", "support-bot"),
        ("C:\\packs\\support_bot.yml", "support_bot"),
        ("pack.v2.yaml", "pack.v2"),
        ("../../etc/passwd", "passwd"),
        ("--help.yaml", "help"),
        (".hidden.yaml", "hidden"),
        ("a\nb\x00c\u202e.yaml", "a-b-c"),
        ("\u212aey.yaml", "ey"),  # KELVIN SIGN lower-cases to an ASCII k: not taken
        ("\uff24\uff25\uff26.yaml", None),  # full-width letters
        ("pii\u2010detector.yaml", "pii-detector"),  # the hyphen look-alike is a separator
        ("x" * 500 + ".yaml", "x" * 64),
        ("a" * 63 + "-b.yaml", "a" * 63),
        (".yaml", None),
        ("", None),
        ("---.yaml", None),
    ],
)
def test_a_name_from_a_file_name_is_safe_or_none(path: str, name: str | None) -> None:
    assert pack_name_from_file(path) == name
