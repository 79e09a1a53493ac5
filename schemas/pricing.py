"""Every token priced at its own rate: token counts by kind, prices by provider and model
with effective dates, and the one pricing function the gateway and replay share.

Counts follow OpenAI's convention: `prompt_tokens` counts every input token and
`completion_tokens` every output token; the other counts say how many of those were of a
kind with its own rate (cache reads, cache writes, audio, images; reasoning, audio out).
What is left of each total is plain text at the input or output rate. Anthropic reports
cache reads and writes apart from `input_tokens`: `anthropic_usage` adds them in.

Rates are integer nano-USD per million tokens (`_nanousd_per_mtok`), so published
prices such as $0.075 / M tokens are exact. Rounding (the only rounding of money here):
a call's cost is the sum over kinds of tokens x rate, then divided by one million
rounded UP to a whole nano-USD, once per call: a call is never priced under its rates,
and by less than one nano-USD over them.

A hostile or inconsistent report (parts larger than their total) is priced by the parts:
each part at its rate and no plain remainder, never less than what was reported.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.money import usd_to_nanousd
from schemas.records import PricePublished

TOKENS_PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call as reported (or estimated). Adapters fill the two totals;
    the detail counts are parts of those totals and default to 0 (no such tokens)."""

    prompt_tokens: int
    completion_tokens: int
    # Parts of prompt_tokens:
    cached_prompt_tokens: int = 0  # read from the provider's prompt cache
    cache_write_tokens: int = 0  # written to the prompt cache (Anthropic's cache creation)
    audio_prompt_tokens: int = 0
    image_prompt_tokens: int = 0
    # Parts of completion_tokens:
    reasoning_tokens: int = 0
    audio_completion_tokens: int = 0

    def __post_init__(self) -> None:
        for name in _USAGE_FIELDS:
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise TypeError(f"{name} is not a non-negative integer: {value!r}")


USAGE_DETAIL_FIELDS = (
    "cached_prompt_tokens",
    "cache_write_tokens",
    "audio_prompt_tokens",
    "image_prompt_tokens",
    "reasoning_tokens",
    "audio_completion_tokens",
)
_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", *USAGE_DETAIL_FIELDS)


@dataclass(frozen=True, slots=True)
class Price:
    """What one model of one provider costs from `effective_from_ms` on. A rate left None
    is the plain input rate (prompt parts) or the plain output rate (completion parts)."""

    provider: str
    model: str
    effective_from_ms: int
    input_nanousd_per_mtok: int
    output_nanousd_per_mtok: int
    cached_input_nanousd_per_mtok: int | None = None
    cache_write_nanousd_per_mtok: int | None = None
    audio_input_nanousd_per_mtok: int | None = None
    image_input_nanousd_per_mtok: int | None = None
    reasoning_nanousd_per_mtok: int | None = None
    audio_output_nanousd_per_mtok: int | None = None

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_per_mtok") or item.name == "effective_from_ms":
                if value is None and item.name not in _REQUIRED:
                    continue
                if type(value) is not int or value < 0:
                    raise ValueError(f"{item.name} is not a non-negative integer: {value!r}")
        if not self.provider or not self.model:
            raise ValueError("a price names its provider and model")


_REQUIRED = frozenset({"effective_from_ms", "input_nanousd_per_mtok", "output_nanousd_per_mtok"})


def _rate(own: int | None, base: int) -> int:
    return base if own is None else own


def cost_nanousd(price: Price, usage: Usage) -> int:
    """The exact cost of a call in nano-USD (rounding: see the module doc)."""
    base_in = price.input_nanousd_per_mtok
    base_out = price.output_nanousd_per_mtok
    cached, written = usage.cached_prompt_tokens, usage.cache_write_tokens
    audio_in, image_in = usage.audio_prompt_tokens, usage.image_prompt_tokens
    reasoning, audio_out = usage.reasoning_tokens, usage.audio_completion_tokens
    plain_in = max(usage.prompt_tokens - cached - written - audio_in - image_in, 0)
    plain_out = max(usage.completion_tokens - reasoning - audio_out, 0)
    total = (
        plain_in * base_in
        + cached * _rate(price.cached_input_nanousd_per_mtok, base_in)
        + written * _rate(price.cache_write_nanousd_per_mtok, base_in)
        + audio_in * _rate(price.audio_input_nanousd_per_mtok, base_in)
        + image_in * _rate(price.image_input_nanousd_per_mtok, base_in)
        + plain_out * base_out
        + reasoning * _rate(price.reasoning_nanousd_per_mtok, base_out)
        + audio_out * _rate(price.audio_output_nanousd_per_mtok, base_out)
    )
    return -(-total // TOKENS_PER_MILLION)


class PriceBook:
    """Prices by (provider, model), each a history ordered by effective date."""

    def __init__(self, prices: Iterable[Price] = ()) -> None:
        self._history: dict[tuple[str, str], list[Price]] = {}
        # The effective dates of each history, kept beside it for the per-call lookup.
        self._dates: dict[tuple[str, str], list[int]] = {}
        for price in prices:
            self.add(price)

    def add(self, price: Price) -> None:
        """Add a price; one at the same effective date replaces it (a correction)."""
        key = (price.provider, price.model)
        history = self._history.setdefault(key, [])
        dates = self._dates.setdefault(key, [])
        at = bisect.bisect_left(dates, price.effective_from_ms)
        if at < len(history) and dates[at] == price.effective_from_ms:
            history[at] = price
        else:
            history.insert(at, price)
            dates.insert(at, price.effective_from_ms)

    def price_at(self, provider: str, model: str, at_ms: int) -> Price | None:
        """The price in force at `at_ms`: the latest effective on or before it; None when
        the model has no price yet at that time."""
        key = (provider, model)
        dates = self._dates.get(key)
        if not dates:
            return None
        at = bisect.bisect_right(dates, at_ms)
        return self._history[key][at - 1] if at else None

    def prices(self) -> list[Price]:
        """Every price, by provider, model and date."""
        return [p for key in sorted(self._history) for p in self._history[key]]


def published_price(record: PricePublished) -> Price:
    """The price a PricePublished record publishes (ValueError when a rate is not one)."""
    return Price(
        record.provider,
        record.model,
        record.effective_from,
        record.input_nanousd_per_mtok,
        record.output_nanousd_per_mtok,
        cached_input_nanousd_per_mtok=record.cached_input_nanousd_per_mtok,
        cache_write_nanousd_per_mtok=record.cache_write_nanousd_per_mtok,
        audio_input_nanousd_per_mtok=record.audio_input_nanousd_per_mtok,
        image_input_nanousd_per_mtok=record.image_input_nanousd_per_mtok,
        reasoning_nanousd_per_mtok=record.reasoning_nanousd_per_mtok,
        audio_output_nanousd_per_mtok=record.audio_output_nanousd_per_mtok,
    )


def _count(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise TypeError(f"usage {name} is not a non-negative integer: {value!r}")
    return value


def _details(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"usage {name} is not an object")
    return value


def openai_usage(data: Any) -> Usage | None:
    """OpenAI's usage object, Chat Completions (`prompt_tokens`, `*_tokens_details`) or
    Responses (`input_tokens`, `input_tokens_details`) shape; None when absent.
    Anything but non-negative integers is a bad response (TypeError)."""
    if not isinstance(data, Mapping):
        return None
    if "input_tokens" in data and "prompt_tokens" not in data:
        prompt, completion = "input_tokens", "output_tokens"
    else:
        prompt, completion = "prompt_tokens", "completion_tokens"
    prompt_details = _details(data, prompt + "_details")
    completion_details = _details(data, completion + "_details")
    return Usage(
        _count(data, prompt),
        _count(data, completion),
        cached_prompt_tokens=_count(prompt_details, "cached_tokens"),
        audio_prompt_tokens=_count(prompt_details, "audio_tokens"),
        image_prompt_tokens=_count(prompt_details, "image_tokens"),
        reasoning_tokens=_count(completion_details, "reasoning_tokens"),
        audio_completion_tokens=_count(completion_details, "audio_tokens"),
    )


def anthropic_usage(data: Any) -> Usage | None:
    """Anthropic's usage object as counts in OpenAI's convention: cache reads and writes
    are added to input_tokens (Anthropic counts them apart). None when absent."""
    if not isinstance(data, Mapping) or data.get("input_tokens") is None:
        return None
    cache_read = _count(data, "cache_read_input_tokens")
    cache_write = _count(data, "cache_creation_input_tokens")
    return Usage(
        _count(data, "input_tokens") + cache_read + cache_write,
        _count(data, "output_tokens"),
        cached_prompt_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def _listed(provider: str, model: str, usd: tuple[str, str, str | None, str | None]) -> Price:
    """A list price from USD per million tokens (exact decimals): input, output, cache
    read, cache write."""
    usd_in, usd_out, cached, write = usd
    return Price(
        provider,
        model,
        0,
        usd_to_nanousd(usd_in),
        usd_to_nanousd(usd_out),
        cached_input_nanousd_per_mtok=None if cached is None else usd_to_nanousd(cached),
        cache_write_nanousd_per_mtok=None if write is None else usd_to_nanousd(write),
    )


# List prices (USD per million tokens: input, output, cache read, cache write) in force
# from the start of time; `govledger prices set` publishes later ones. Anthropic's cache
# write is its 5-minute rate (1.25 x input), its read 0.1 x input; OpenAI caches for free
# and reads at its published cached-input rate; reasoning tokens are output tokens.
LIST_PRICES: tuple[Price, ...] = (
    _listed("openai", "gpt-4o-mini", ("0.15", "0.60", "0.075", None)),
    _listed("openai", "gpt-4o", ("2.50", "10", "1.25", None)),
    _listed("openai", "gpt-4.1-mini", ("0.40", "1.60", "0.10", None)),
    _listed("openai", "gpt-4.1", ("2", "8", "0.50", None)),
    _listed("openai", "o3-mini", ("1.10", "4.40", "0.55", None)),
    _listed("openai", "o4-mini", ("1.10", "4.40", "0.275", None)),
    _listed("anthropic", "claude-3-5-haiku-latest", ("0.80", "4", "0.08", "1")),
    _listed("anthropic", "claude-sonnet-4-0", ("3", "15", "0.30", "3.75")),
    _listed("anthropic", "claude-opus-4-0", ("15", "75", "1.50", "18.75")),
)
