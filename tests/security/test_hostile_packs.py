"""Pack files are hostile input, in either shape: YAML bombs, nesting, tags that build
objects, keys that are not strings, and shapes that smuggle a weaker step past the org
baseline. Each is refused with a lint error (never an exception, never a hang), quickly,
before any node of it is built."""

from __future__ import annotations

import time

import pytest

from gateway.policy.baseline import DEFAULT_BASELINE, lint_against
from gateway.policy.pack import lint
from gateway.policy.yaml_input import MAX_PACK_BYTES, MAX_PACK_DEPTH

TAIL = "name: p\npolicies:\n  chain: [audit-logger]\n"


def billion_laughs(levels: int = 9) -> str:
    """Nine lines that an expanding loader turns into 10**9 strings."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{n}: &l{n} [" + ",".join([f"*l{n - 1}"] * 10) + "]" for n in range(1, levels)]
    return "\n".join(lines) + "\n" + TAIL


BOMBS = {
    "billion laughs": billion_laughs(),
    "billion laughs inside the seed's policy map": (
        'policies:\n  chain: [pii-detector]\npolicy:\n  pii-detector:\n    detect: &a ["email"]\n'
        "    action: *a\nname: p\n"
    ),
    "a recursive alias": "x: &x [*x]\n" + TAIL,
    "a merge key": "name: p\npolicies:\n  <<: {chain: [audit-logger]}\n",
    "flow nesting past the limit": "name: p\npolicies: " + "[" * 5_000 + "]" * 5_000 + "\n",
    "block nesting past the limit": TAIL
    + "policy:\n"
    + "".join("  " * (n + 1) + f"k{n}:\n" for n in range(MAX_PACK_DEPTH + 2)),
    "over the size limit in one comment": "# " + "x" * MAX_PACK_BYTES + "\n" + TAIL,
    "over the size limit in multi-byte characters": TAIL + "# " + "\u00e9" * MAX_PACK_BYTES,
    "a python object": "name: !!python/object/apply:os.system [id]\npolicies: {chain: []}\n",
    "a python name": "name: p\npolicies: {chain: [!!python/name:os.system ]}\n",
    "a local tag": "name: !pwn p\npolicies: {chain: []}\n",
    "a binary tag": "name: !!binary aGk=\npolicies: {chain: []}\n",
    "a set tag": "name: p\npolicies: !!set {chain}\n",
    "an integer key": "name: p\n1: x\npolicies: {chain: []}\n",
    "a boolean key": "name: p\ntrue: x\npolicies: {chain: []}\n",
    "a null key": "name: p\n~: x\npolicies: {chain: []}\n",
    "a list key": "name: p\n? [a]\n: x\npolicies: {chain: []}\n",
    "an integer step name key": "name: p\npolicies:\n  chain:\n    - 1: {}\n",
    "a boolean parameter key": "name: p\npolicies:\n  chain: [rbac]\npolicy:\n  rbac: {true: 1}\n",
    "two documents": TAIL + "---\n" + TAIL,
    "a control character": TAIL + "\x07\n",
    "a lone surrogate": TAIL + "# \ud800\n",
    "a byte-order mark mid-file": TAIL + "\ufeffname: q\n",
}


@pytest.mark.parametrize("source", BOMBS.values(), ids=BOMBS.keys())
def test_a_hostile_pack_is_a_lint_error_found_fast(source: str) -> None:
    # This thread's CPU time, not wall time: a bomb costs CPU, while a busy machine (other
    # test processes) stretches wall time without saying anything about the parser; and
    # not the process's, which counts the threads earlier modules left in this test
    # process (a shared stack's servers: 0.54 s once in `make test`, 0.10 s alone).
    started = time.thread_time()
    problems = lint(source, default_name="from-file")
    elapsed_s = time.thread_time() - started
    assert problems, "accepted"
    assert all(p.line >= 1 and p.message for p in problems)
    assert elapsed_s < 0.5, f"took {elapsed_s:.3f} s"


def test_the_refusals_say_what_is_not_allowed() -> None:
    assert lint(billion_laughs())[0].message == (
        "anchors (&) and aliases (*) are not allowed in a pack"
    )
    assert lint(BOMBS["flow nesting past the limit"])[0].message == (
        f"the pack is nested too deeply (limit {MAX_PACK_DEPTH})"
    )
    assert "tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed" in (
        lint(BOMBS["a python object"])[0].message
    )
    assert lint(BOMBS["an integer key"])[0].message == "keys in the pack must be strings"
    assert lint(BOMBS["over the size limit in multi-byte characters"])[0].message == (
        f"pack is over {MAX_PACK_BYTES} bytes"
    )


# Seed-shaped ways of writing a weaker retention or dropping the org's redaction: each is
# a lint error or an org rule broken, whatever name the file gives the pack.
SEED_ATTACKS = [
    # the short retention in the seed's parameter map
    "policies:\n  chain: [audit-logger]\npolicy:\n  audit-logger: {retention_days: 1}\n",
    # a long retention in the step, a short one in the map
    "policies:\n  chain:\n    - name: audit-logger\n      policy: {retention_days: 365}\n"
    "policy:\n  audit-logger: {retention_days: 1}\n",
    # the step twice, once per shape
    "policies:\n  chain:\n    - name: audit-logger\n      policy: {retention_days: 365}\n"
    "    - audit-logger\npolicy:\n  audit-logger: {retention_days: 1}\n",
    # the parameter map key twice
    "policies:\n  chain: [audit-logger]\npolicy:\n  audit-logger: {retention_days: 365}\n"
    "  audit-logger: {retention_days: 1}\n",
    # a one-key step holding a second step's parameters
    "policies:\n  chain:\n    - audit-logger: {retention_days: 1}\n",
    # two keys in one step, the second the short one
    "policies:\n  chain:\n    - audit-logger:\n      name: audit-logger\n",
    # switching the redaction off through the seed's map
    "policies:\n  chain: [pii-detector]\npolicy:\n  pii-detector: {action: allow}\n",
    "policies:\n  chain: [pii-detector]\npolicy:\n  pii-detector: {detect: []}\n",
    # a role the seed does not have either, to get under the org's minimum
    "policies:\n  chain: [rbac]\npolicy:\n  rbac: {minimum_role: guest}\n",
    # a disabled pack header
    "pack: {enabled: false}\npolicies:\n  chain: [audit-logger]\n",
    # a step name look-alike (Cyrillic a), bare
    "policies:\n  chain: [\u0430udit-logger]\n",
]


@pytest.mark.parametrize("source", SEED_ATTACKS)
def test_no_seed_shaped_pack_gets_a_weaker_step_past_the_baseline(source: str) -> None:
    assert lint_against(DEFAULT_BASELINE, source, "default"), "accepted"
