"""Model catalogue and price table: public model name → provider, upstream model, prices."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.settings import GatewaySettings


@dataclass(frozen=True, slots=True)
class Target:
    """A model the gateway serves, where it goes, and what a token costs in nano-USD."""

    model: str
    provider: str
    upstream_model: str
    input_nanousd_per_token: int
    output_nanousd_per_token: int

    def cost_nanousd(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Exact integer price of a call."""
        assert prompt_tokens >= 0 and completion_tokens >= 0, "token counts are non-negative"
        return (
            prompt_tokens * self.input_nanousd_per_token
            + completion_tokens * self.output_nanousd_per_token
        )


# Prices of the built-in sim models mirror small and large hosted models so demos and
# benchmarks produce realistic, non-zero costs.
SIM_TARGETS: tuple[Target, ...] = (
    Target("sim-small", "sim", "sim-small", 150, 600),
    Target("sim-large", "sim", "sim-large", 2_500, 10_000),
)

# Upstream models not in this table are priced as a mid-size model; an operator adds
# exact prices here when they route a new model.
UPSTREAM_PRICES: dict[str, tuple[int, int]] = {
    "gpt-4o-mini": (150, 600),
    "gpt-4o": (2_500, 10_000),
    "gpt-4.1-mini": (400, 1_600),
    "gpt-4.1": (2_000, 8_000),
}
DEFAULT_UPSTREAM_PRICE = (1_000, 4_000)


def build_catalogue(settings: GatewaySettings) -> dict[str, Target]:
    """The models this gateway serves under its settings."""
    targets = {t.model: t for t in SIM_TARGETS}
    if settings.upstream_base_url:
        for name in filter(None, (m.strip() for m in settings.upstream_models.split(","))):
            prompt_price, completion_price = UPSTREAM_PRICES.get(name, DEFAULT_UPSTREAM_PRICE)
            targets[name] = Target(name, "openai", name, prompt_price, completion_price)
    return targets
