"""The model catalogue and its integer price table."""

from __future__ import annotations

from gateway.catalogue import DEFAULT_UPSTREAM_PRICE, Target, build_catalogue
from schemas.money import usd_to_nanousd
from schemas.settings import GatewaySettings, load

SIM_MODELS = {"sim-small", "sim-large", "sim-flaky", "sim-embed"}


def test_cost_is_exact_integer_nanousd() -> None:
    # gpt-4o-mini list prices: $0.15 per million prompt tokens, $0.60 per million completion.
    mini = Target("gpt-4o-mini", "openai", "gpt-4o-mini", 150, 600)
    cost = mini.cost_nanousd(1_000_000, 1_000_000)
    assert type(cost) is int
    assert cost == usd_to_nanousd("0.15") + usd_to_nanousd("0.60")


def test_cost_of_a_small_call_is_the_sum_of_both_sides() -> None:
    target = Target("gpt-4.1", "openai", "gpt-4.1", 2_000, 8_000)
    assert target.cost_nanousd(1_200, 350) == 1_200 * 2_000 + 350 * 8_000
    assert target.cost_nanousd(0, 0) == 0


def test_without_an_upstream_only_sim_models_are_served() -> None:
    catalogue = build_catalogue(load(GatewaySettings, environ={}))
    assert set(catalogue) == SIM_MODELS
    assert {t.provider for t in catalogue.values()} == {"sim"}
    assert all(t.input_nanousd_per_token > 0 for t in catalogue.values())
    # Every model that writes text prices its output; an embedding model writes none.
    assert {t.model for t in catalogue.values() if t.output_nanousd_per_token == 0} == {"sim-embed"}


def test_upstream_models_without_a_base_url_are_not_served() -> None:
    settings = load(GatewaySettings, environ={"GOVLEDGER_UPSTREAM_MODELS": "gpt-4o-mini"})
    assert set(build_catalogue(settings)) == SIM_MODELS


def test_upstream_models_are_served_when_a_base_url_is_set() -> None:
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


def test_each_configured_provider_serves_its_models() -> None:
    from gateway.catalogue import build_catalogue
    from gateway.providers.anthropic import AnthropicProvider
    from gateway.providers.azure import AzureOpenAIProvider
    from gateway.server import build_providers
    from schemas.settings import GatewaySettings, load

    settings = load(
        GatewaySettings,
        environ={
            "GOVLEDGER_ANTHROPIC_API_KEY": "sk-ant",
            "GOVLEDGER_ANTHROPIC_MODELS": "claude-sonnet-4-0",
            "GOVLEDGER_AZURE_ENDPOINT": "https://acme.openai.azure.com",
            "GOVLEDGER_AZURE_API_KEY": "az",
            "GOVLEDGER_AZURE_DEPLOYMENTS": "gpt-4o=prod-gpt4o",
            "GOVLEDGER_MISTRAL_API_KEY": "mi",
            "GOVLEDGER_MISTRAL_MODELS": "mistral-small-latest",
            "GOVLEDGER_OLLAMA_BASE_URL": "http://127.0.0.1:11434/v1",
            "GOVLEDGER_OLLAMA_MODELS": "llama3.2",
        },
    )
    catalogue = build_catalogue(settings)
    assert {m: t.provider for m, t in catalogue.items() if t.provider != "sim"} == {
        "claude-sonnet-4-0": "anthropic",
        "gpt-4o": "azure",
        "mistral-small-latest": "mistral",
        "llama3.2": "ollama",
    }
    assert catalogue["claude-sonnet-4-0"].cost_nanousd(1_000, 100) == 1_000 * 3_000 + 100 * 15_000
    providers = build_providers(settings)
    assert set(providers) == {"sim", "anthropic", "azure", "mistral", "ollama"}
    assert isinstance(providers["anthropic"], AnthropicProvider)
    assert isinstance(providers["azure"], AzureOpenAIProvider)


def test_a_model_served_by_two_providers_is_a_settings_error() -> None:
    import pytest

    from gateway.catalogue import build_catalogue
    from schemas.settings import GatewaySettings, SettingsError, load

    settings = load(
        GatewaySettings,
        environ={
            "GOVLEDGER_UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1",
            "GOVLEDGER_UPSTREAM_MODELS": "llama3.2",
            "GOVLEDGER_OLLAMA_BASE_URL": "http://127.0.0.1:11434/v1",
            "GOVLEDGER_OLLAMA_MODELS": "llama3.2",
        },
    )
    with pytest.raises(SettingsError, match=r"llama3\.2"):
        build_catalogue(settings)


def test_azure_deployments_must_be_pairs() -> None:
    import pytest

    from gateway.catalogue import azure_deployments
    from schemas.settings import SettingsError

    assert azure_deployments("gpt-4o=prod, gpt-4o-mini = mini") == {
        "gpt-4o": "prod",
        "gpt-4o-mini": "mini",
    }
    with pytest.raises(SettingsError, match="model=deployment"):
        azure_deployments("gpt-4o")
