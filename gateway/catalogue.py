"""Model catalogue and price table: public model name → provider, upstream model, prices."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from gateway.providers.sim import FLAKY_MODEL
from gateway.providers.sim_api import SIM_EMBEDDING_MODEL
from schemas.pricing import LIST_PRICES, TOKENS_PER_MILLION, Price, PriceBook
from schemas.settings import GatewaySettings, SettingsError


@dataclass(frozen=True, slots=True)
class Target:
    """A model the gateway serves, where it goes, and what a token costs in nano-USD."""

    model: str
    provider: str
    upstream_model: str
    input_nanousd_per_token: int
    output_nanousd_per_token: int

    # The provider's list price when schemas.pricing knows one (cache and reasoning
    # rates); else the two per-token rates above.
    list_price: Price | None = None

    def price(self) -> Price:
        """What a call costs, by token kind (schemas.pricing)."""
        if self.list_price is not None:
            return self.list_price
        return _per_token_price(
            self.provider,
            self.upstream_model,
            self.input_nanousd_per_token,
            self.output_nanousd_per_token,
        )

    def cost_nanousd(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Exact integer price of a call counted as plain text tokens (reservations)."""
        assert prompt_tokens >= 0 and completion_tokens >= 0, "token counts are non-negative"
        return (
            prompt_tokens * self.input_nanousd_per_token
            + completion_tokens * self.output_nanousd_per_token
        )


@functools.cache
def _per_token_price(
    provider: str, model: str, input_nanousd_per_token: int, output_nanousd_per_token: int
) -> Price:
    """A catalogue price as a Price (made once: the per-call lookup is hot)."""
    return Price(
        provider,
        model,
        0,
        input_nanousd_per_token * TOKENS_PER_MILLION,
        output_nanousd_per_token * TOKENS_PER_MILLION,
    )


# Prices of the built-in sim models mirror small and large hosted models so demos and
# benchmarks produce realistic, non-zero costs.
SIM_TARGETS: tuple[Target, ...] = (
    Target("sim-small", "sim", "sim-small", 150, 600),
    Target("sim-large", "sim", "sim-large", 2_500, 10_000),
    Target(FLAKY_MODEL, "sim", FLAKY_MODEL, 150, 600),
    # An embedding model: input tokens only, at text-embedding-3-small's price.
    Target(SIM_EMBEDDING_MODEL, "sim", SIM_EMBEDDING_MODEL, 20, 0),
)
# sim-flaky's outages (see gateway.providers.sim) must have somewhere to fail over to on a
# gateway with default settings; GOVLEDGER_FALLBACKS naming sim-flaky replaces this chain.
SIM_FALLBACKS: dict[str, tuple[str, ...]] = {FLAKY_MODEL: ("sim-small",)}

# Upstream models not in this table are priced as a mid-size model; an operator adds
# exact prices here when they route a new model (nano-USD per prompt, completion token).
UPSTREAM_PRICES: dict[str, tuple[int, int]] = {
    "gpt-4o-mini": (150, 600),
    "gpt-4o": (2_500, 10_000),
    "gpt-4.1-mini": (400, 1_600),
    "gpt-4.1": (2_000, 8_000),
    "claude-3-5-haiku-latest": (800, 4_000),
    "claude-sonnet-4-0": (3_000, 15_000),
    "claude-opus-4-0": (15_000, 75_000),
    "mistral-small-latest": (100, 300),
    "mistral-large-latest": (2_000, 6_000),
    "text-embedding-3-small": (20, 0),
    "text-embedding-3-large": (130, 0),
    "text-embedding-ada-002": (100, 0),
    "gpt-3.5-turbo-instruct": (1_500, 2_000),
}
DEFAULT_UPSTREAM_PRICE = (1_000, 4_000)
_LISTED = {(p.provider, p.model): p for p in LIST_PRICES}


def names(text: str) -> list[str]:
    """A comma-separated setting as a list of names."""
    return [item.strip() for item in text.split(",") if item.strip()]


def azure_deployments(text: str) -> dict[str, str]:
    """`model=deployment,…` as a mapping; SettingsError on a malformed pair."""
    pairs: dict[str, str] = {}
    for item in names(text):
        model, _, deployment = item.partition("=")
        if not model.strip() or not deployment.strip():
            raise SettingsError(f"GOVLEDGER_AZURE_DEPLOYMENTS: {item!r} is not model=deployment")
        pairs[model.strip()] = deployment.strip()
    return pairs


def provider_models(settings: GatewaySettings) -> dict[str, list[str]]:
    """The upstream models each configured provider serves."""
    served: dict[str, list[str]] = {}
    if settings.upstream_base_url:
        served["openai"] = names(settings.upstream_models)
    if settings.anthropic_api_key and settings.anthropic_models:
        served["anthropic"] = names(settings.anthropic_models)
    if settings.azure_endpoint and settings.azure_deployments:
        served["azure"] = list(azure_deployments(settings.azure_deployments))
    if settings.mistral_api_key and settings.mistral_models:
        served["mistral"] = names(settings.mistral_models)
    if settings.ollama_base_url and settings.ollama_models:
        served["ollama"] = names(settings.ollama_models)
    return served


def build_catalogue(settings: GatewaySettings) -> dict[str, Target]:
    """The models this gateway serves under its settings; a model name is served by one
    provider only (routing across providers comes with model groups)."""
    targets = {t.model: t for t in SIM_TARGETS}
    for provider, models in provider_models(settings).items():
        for model in models:
            if model in targets:
                raise SettingsError(
                    f"model {model!r} is served by both {targets[model].provider} and {provider}"
                )
            prompt_price, completion_price = UPSTREAM_PRICES.get(model, DEFAULT_UPSTREAM_PRICE)
            listed = _LISTED.get((provider, model))
            targets[model] = Target(
                model, provider, model, prompt_price, completion_price, list_price=listed
            )
    return targets


def model_object(target: Target) -> dict[str, Any]:
    """OpenAI's `model` object of a target, as `GET /v1/models` lists it."""
    return {"id": target.model, "object": "model", "created": 0, "owned_by": target.provider}


def price_in_force(prices: PriceBook | None, target: Target, at_ms: int) -> Price:
    """The target's price at `at_ms`: the latest listed or published one (the gateway's
    views), else the catalogue's per-token rates."""
    published = None
    if prices is not None:
        published = prices.price_at(target.provider, target.upstream_model, at_ms)
    return published or target.price()
