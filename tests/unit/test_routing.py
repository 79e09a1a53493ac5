"""Which targets a call may go to, and how long to wait between attempts."""

from __future__ import annotations

import pytest

from gateway.catalogue import SIM_TARGETS, Target
from gateway.routing import backoff_s, parse_fallbacks, plan
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
