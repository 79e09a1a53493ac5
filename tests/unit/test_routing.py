"""Which targets a call may go to, and how long to wait between attempts."""

from __future__ import annotations

import pytest

from gateway.catalogue import SIM_TARGETS, Target
from gateway.routing import (
    ModelGroup,
    backoff_s,
    group_order,
    in_regions,
    parse_fallbacks,
    parse_model_groups,
    parse_target_regions,
    parse_tenant_regions,
    pick_member,
    plan,
)
from schemas.settings import SettingsError

CATALOGUE = {t.model: t for t in SIM_TARGETS} | {
    "gpt-4o": Target("gpt-4o", "openai", "gpt-4o", 2_500, 10_000)
}


def test_fallback_chains_parse() -> None:
    assert parse_fallbacks("gpt-4o=sim-large|sim-small; a=b") == {
        "gpt-4o": ("sim-large", "sim-small"),
        "a": ("b",),
    }
    assert parse_fallbacks("") == {}


@pytest.mark.parametrize("text", ["gpt-4o", "=sim-small", "gpt-4o=", "m=" + "|".join("x" * 9)])
def test_malformed_chains_are_settings_errors(text: str) -> None:
    with pytest.raises(SettingsError, match="FALLBACKS"):
        parse_fallbacks(text)


def test_plan_is_primary_then_served_fallbacks_once_each() -> None:
    chains = {"gpt-4o": ("sim-large", "not-served", "gpt-4o", "sim-large", "sim-small")}
    assert [t.model for t in plan("gpt-4o", CATALOGUE, chains)] == [
        "gpt-4o",
        "sim-large",
        "sim-small",
    ]
    assert plan("unknown", CATALOGUE, chains) == []
    # A model only reachable as a fallback is still served through its chain.
    assert [t.model for t in plan("alias", CATALOGUE, {"alias": ("sim-small",)})] == ["sim-small"]


def test_backoff_doubles_is_jittered_and_capped() -> None:
    waits = [backoff_s(r, base_s=0.1, cap_s=1.0, retry_after_s=None, jitter=1.0) for r in range(6)]
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff_s(1, base_s=0.1, cap_s=1.0, retry_after_s=None, jitter=0.5) == 0.1


def test_retry_after_wins_but_never_past_the_cap() -> None:
    assert backoff_s(0, base_s=0.1, cap_s=2.0, retry_after_s=1.5, jitter=1.0) == 1.5
    assert backoff_s(0, base_s=0.1, cap_s=2.0, retry_after_s=30.0, jitter=1.0) == 2.0


def test_model_groups_parse() -> None:
    groups = parse_model_groups(
        "chat=sim-small:90|sim-large:10; support = gpt-4o-mini:100 ;;local=llama3.1:8b:1"
    )
    assert groups == {
        "chat": ModelGroup("chat", (("sim-small", 90), ("sim-large", 10))),
        "support": ModelGroup("support", (("gpt-4o-mini", 100),)),
        # The weight is after the last colon: model names may hold colons.
        "local": ModelGroup("local", (("llama3.1:8b", 1),)),
    }
    assert parse_model_groups("") == {}


@pytest.mark.parametrize(
    ("text", "bad_entry"),
    [
        ("chat", "chat"),
        ("=sim-small:1", "=sim-small:1"),
        ("chat=", "chat="),
        ("chat=sim-small", "chat=sim-small"),
        ("chat=sim-small:", "chat=sim-small:"),
        ("chat=:5", "chat=:5"),
        ("chat=sim-small:-1", "chat=sim-small:-1"),
        ("chat=sim-small:1.5", "chat=sim-small:1.5"),
        ("chat=sim-small:ten", "chat=sim-small:ten"),
        ("chat=sim-small:0|sim-large:0", "chat=sim-small:0|sim-large:0"),
        ("chat=sim-small:1|sim-small:2", "chat=sim-small:1|sim-small:2"),
        ("a=m:1;a=n:1", "a=n:1"),
        ("big=" + "|".join(f"m{i}:1" for i in range(9)), "big="),
    ],
)
def test_malformed_groups_are_settings_errors_naming_the_entry(text: str, bad_entry: str) -> None:
    with pytest.raises(SettingsError, match="MODEL_GROUPS") as raised:
        parse_model_groups(text)
    assert repr(bad_entry)[:-1] in str(raised.value)


AB = ModelGroup("chat", (("sim-small", 90), ("sim-large", 10)))


@pytest.mark.parametrize(
    ("draw", "model"),
    [(0.0, "sim-small"), (0.89, "sim-small"), (0.9, "sim-large"), (0.999, "sim-large")],
)
def test_pick_splits_draws_by_weight(draw: float, model: str) -> None:
    assert pick_member(AB, draw) == model


def test_pick_follows_the_weights_over_many_draws() -> None:
    draws = [i / 1_000 for i in range(1_000)]
    picks = [pick_member(AB, d) for d in draws]
    assert (picks.count("sim-small"), picks.count("sim-large")) == (900, 100)


def test_canary_takes_its_percentage() -> None:
    canary = ModelGroup("chat", (("stable", 95), ("canary", 5)))
    picks = [pick_member(canary, i / 10_000) for i in range(10_000)]
    assert picks.count("canary") == 500
    assert pick_member(canary, 0.9499) == "stable"
    assert pick_member(canary, 0.95) == "canary"


def test_zero_weight_member_is_never_first_but_still_a_fallback() -> None:
    group = ModelGroup("chat", (("spare", 0), ("sim-small", 3), ("sim-large", 1)))
    firsts = {group_order(group, i / 100)[0] for i in range(100)}
    assert firsts == {"sim-small", "sim-large"}
    assert group_order(group, 0.0) == ["sim-small", "sim-large", "spare"]
    assert group_order(group, 0.99) == ["sim-large", "sim-small", "spare"]


def test_group_order_ties_keep_the_configured_order() -> None:
    group = ModelGroup("ab", (("a", 1), ("b", 1), ("c", 1)))
    assert group_order(group, 0.5) == ["b", "a", "c"]


def test_regions_parse() -> None:
    assert parse_target_regions("sim-large=eu-west, gpt-4o=us-east") == {
        "sim-large": "eu-west",
        "gpt-4o": "us-east",
    }
    assert parse_tenant_regions("acme=eu-west|eu-central; globex=us-east") == {
        "acme": frozenset({"eu-west", "eu-central"}),
        "globex": frozenset({"us-east"}),
    }
    assert parse_target_regions("") == {}
    assert parse_tenant_regions("") == {}


@pytest.mark.parametrize("text", ["sim-large", "=eu-west", "sim-large=", "a=x,a=y"])
def test_malformed_target_regions_are_settings_errors(text: str) -> None:
    with pytest.raises(SettingsError, match="TARGET_REGIONS"):
        parse_target_regions(text)


@pytest.mark.parametrize("text", ["acme", "=eu-west", "acme=", "acme=|", "a=x;a=y"])
def test_malformed_tenant_regions_are_settings_errors(text: str) -> None:
    with pytest.raises(SettingsError, match="TENANT_REGIONS"):
        parse_tenant_regions(text)


def test_in_regions_keeps_allowed_targets_in_order() -> None:
    targets = [CATALOGUE["gpt-4o"], CATALOGUE["sim-large"], CATALOGUE["sim-small"]]
    regions = {"sim-large": "eu-west", "gpt-4o": "us-east"}
    kept = in_regions(targets, regions, "eu-central", frozenset({"eu-west", "eu-central"}))
    assert [t.model for t in kept] == ["sim-large", "sim-small"]
    assert in_regions(targets, regions, "eu-central", None) == targets
    assert in_regions(targets, regions, "eu-central", frozenset({"ap-south"})) == []
