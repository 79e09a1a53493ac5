"""The model catalogue and its integer price table."""

from __future__ import annotations

from gateway.catalogue import DEFAULT_UPSTREAM_PRICE, Target, build_catalogue
from schemas.money import usd_to_nanousd
from schemas.settings import GatewaySettings, load

SIM_MODELS = {"sim-small", "sim-large"}


def test_cost_is_exact_integer_nanousd():
    # gpt-4o-mini list prices: $0.15 per million prompt tokens, $0.60 per million completion.
    mini = Target("gpt-4o-mini", "openai", "gpt-4o-mini", 150, 600)
    cost = mini.cost_nanousd(1_000_000, 1_000_000)
    assert type(cost) is int
    assert cost == usd_to_nanousd("0.15") + usd_to_nanousd("0.60")


def test_cost_of_a_small_call_is_the_sum_of_both_sides():
    target = Target("gpt-4.1", "openai", "gpt-4.1", 2_000, 8_000)
    assert target.cost_nanousd(1_200, 350) == 1_200 * 2_000 + 350 * 8_000
    assert target.cost_nanousd(0, 0) == 0


def test_without_an_upstream_only_sim_models_are_served():
    catalogue = build_catalogue(load(GatewaySettings, environ={}))
    assert set(catalogue) == SIM_MODELS
    assert {t.provider for t in catalogue.values()} == {"sim"}
    assert all(
        t.input_nanousd_per_token > 0 and t.output_nanousd_per_token > 0 for t in catalogue.values()
    )


def test_upstream_models_without_a_base_url_are_not_served():
    settings = load(GatewaySettings, environ={"GOVLEDGER_UPSTREAM_MODELS": "gpt-4o-mini"})
    assert set(build_catalogue(settings)) == SIM_MODELS


def test_upstream_models_are_served_when_a_base_url_is_set():
    settings = load(
        GatewaySettings,
        environ={
            "GOVLEDGER_UPSTREAM_BASE_URL": "http://llm.internal:8000/v1",
            "GOVLEDGER_UPSTREAM_MODELS": " gpt-4o-mini, llama-3.1-70b ,,",
        },
    )
    catalogue = build_catalogue(settings)
    assert set(catalogue) == SIM_MODELS | {"gpt-4o-mini", "llama-3.1-70b"}
    mini = catalogue["gpt-4o-mini"]
    assert (mini.provider, mini.upstream_model) == ("openai", "gpt-4o-mini")
    assert mini.cost_nanousd(1_000_000, 0) == usd_to_nanousd("0.15")
    assert mini.cost_nanousd(0, 1_000_000) == usd_to_nanousd("0.60")
    llama = catalogue["llama-3.1-70b"]
    assert llama.provider == "openai"
    prices = (llama.input_nanousd_per_token, llama.output_nanousd_per_token)
    assert prices == DEFAULT_UPSTREAM_PRICE
