"""The pricing rule (schemas/pricing.py) for any counts and rates: the cost is the exact
sum of tokens x rate over kinds rounded up once to a whole nano-USD, and a report that
moves tokens from a kind into the plain remainder never costs less than the plain rate
says (parts are priced, never lost)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from schemas.pricing import TOKENS_PER_MILLION, Price, Usage, cost_nanousd

COUNTS = st.integers(min_value=0, max_value=10**9)
RATES = st.integers(min_value=0, max_value=10**12)
OPTIONAL_RATES = st.none() | RATES


@st.composite
def prices(draw: st.DrawFn) -> Price:
    return Price(
        "p",
        "m",
        0,
        draw(RATES),
        draw(RATES),
        cached_input_nanousd_per_mtok=draw(OPTIONAL_RATES),
        cache_write_nanousd_per_mtok=draw(OPTIONAL_RATES),
        audio_input_nanousd_per_mtok=draw(OPTIONAL_RATES),
        image_input_nanousd_per_mtok=draw(OPTIONAL_RATES),
        reasoning_nanousd_per_mtok=draw(OPTIONAL_RATES),
        audio_output_nanousd_per_mtok=draw(OPTIONAL_RATES),
    )


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    parts_in = [draw(COUNTS) for _ in range(4)]
    parts_out = [draw(COUNTS) for _ in range(2)]
    return Usage(
        sum(parts_in) + draw(COUNTS),
        sum(parts_out) + draw(COUNTS),
        *parts_in,
        *parts_out,
    )


def _exact_usd_nanos(price: Price, usage: Usage) -> Fraction:
    def rate(own: int | None, base: int) -> int:
        return base if own is None else own

    i, o = price.input_nanousd_per_mtok, price.output_nanousd_per_mtok
    parts = [
        (usage.cached_prompt_tokens, rate(price.cached_input_nanousd_per_mtok, i)),
        (usage.cache_write_tokens, rate(price.cache_write_nanousd_per_mtok, i)),
        (usage.audio_prompt_tokens, rate(price.audio_input_nanousd_per_mtok, i)),
        (usage.image_prompt_tokens, rate(price.image_input_nanousd_per_mtok, i)),
        (usage.reasoning_tokens, rate(price.reasoning_nanousd_per_mtok, o)),
        (usage.audio_completion_tokens, rate(price.audio_output_nanousd_per_mtok, o)),
    ]
    plain_in = usage.prompt_tokens - sum(n for n, _ in parts[:4])
    plain_out = usage.completion_tokens - sum(n for n, _ in parts[4:])
    total = plain_in * i + plain_out * o + sum(n * r for n, r in parts)
    return Fraction(total, TOKENS_PER_MILLION)


@given(prices(), usages())
def test_the_cost_is_the_exact_sum_rounded_up_once(price: Price, usage: Usage) -> None:
    exact = _exact_usd_nanos(price, usage)
    cost = cost_nanousd(price, usage)
    assert exact <= cost < exact + 1


@given(prices(), COUNTS, COUNTS, COUNTS)
def test_parts_beyond_their_total_are_still_priced(
    price: Price, total: int, part: int, completion: int
) -> None:
    claimed = Usage(total, completion, cached_prompt_tokens=total + part)
    honest = Usage(total + part, completion, cached_prompt_tokens=total + part)
    assert cost_nanousd(price, claimed) == cost_nanousd(price, honest)
