"""The quantile sketch: accuracy against exact nearest rank, exact merges, round trips."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.sla import sketch
from streams.sla.sketch import DEFAULT_ALPHA, Sketch, from_pairs, merge, merge_all, of

# Latencies in ms as the gateway measures them: zeros (overhead clamped at 0), sub-ms
# overheads, and upstream calls up to a ten-minute timeout.
latencies = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-6, max_value=600_000.0, allow_nan=False, allow_infinity=False),
)
samples = st.lists(latencies, min_size=1, max_size=300)
fractions = st.floats(min_value=0.0, max_value=1.0)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def within(estimate: float | None, truth: float, alpha: float = DEFAULT_ALPHA) -> bool:
    assert estimate is not None
    if truth == 0.0:
        return estimate == 0.0
    return abs(estimate - truth) <= alpha * truth * (1 + 1e-9)


def round_trip(s: Sketch) -> Sketch:
    return from_pairs(
        s.to_pairs(),
        zero_count=s.zero_count,
        sum_thousandths=s.sum_thousandths,
        min_value=s.min,
        max_value=s.max,
        alpha=s.alpha,
        max_buckets=s.max_buckets,
    )


@settings(max_examples=150)
@given(samples, fractions)
def test_quantiles_are_within_alpha_of_the_exact_nearest_rank(
    values: list[float], q: float
) -> None:
    assert within(of(values).quantile(q), nearest_rank(values, q))


@settings(max_examples=50)
@given(samples)
def test_the_usual_percentiles_are_within_alpha(values: list[float]) -> None:
    s = of(values)
    for q in (0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0):
        assert within(s.quantile(q), nearest_rank(values, q))


@given(samples, st.sampled_from([0.001, 0.005, 0.02, 0.05]), fractions)
def test_accuracy_holds_for_other_alphas(values: list[float], alpha: float, q: float) -> None:
    # The span is gamma^max_buckets: a finer alpha needs more buckets for the same range
    # (alpha = 0.001 with 2,048 buckets spans a factor of only ~60).
    s = of(values, alpha=alpha, max_buckets=20_000)
    assert within(s.quantile(q), nearest_rank(values, q), alpha)


@given(samples)
def test_count_sum_min_max_are_those_of_the_values(values: list[float]) -> None:
    s = of(values)
    assert s.count == len(values)
    assert s.min == min(values)
    assert s.max == max(values)
    assert s.sum_thousandths == sum(round(v * 1000) for v in values)
    assert s.sum == pytest.approx(sum(values), abs=0.0005 * len(values))
    assert s.quantile(0.0) == min(values)
    assert s.quantile(1.0) == max(values)


@given(samples)
def test_adding_one_by_one_builds_the_same_sketch(values: list[float]) -> None:
    one_by_one = Sketch()
    for v in values:
        one_by_one = one_by_one.add(v)
    assert one_by_one == of(values)


@given(samples, samples, st.sampled_from([8, 2_048]))
def test_adding_many_to_a_sketch_builds_the_sketch_of_all(
    xs: list[float], ys: list[float], max_buckets: int
) -> None:
    s = of(xs, max_buckets=max_buckets)
    assert s.add_all(ys) == of(xs + ys, max_buckets=max_buckets)
    assert s.add_all(()) is s


@given(samples, st.lists(st.integers(min_value=0, max_value=300), max_size=5))
def test_merging_parts_gives_exactly_the_sketch_of_the_whole(
    values: list[float], cuts: list[int]
) -> None:
    bounds = [0, *sorted(c % (len(values) + 1) for c in cuts), len(values)]
    parts = [of(values[a:b]) for a, b in itertools.pairwise(bounds)]
    assert merge_all(parts) == of(values)
    assert merge_all(reversed(parts)) == of(values)


@given(samples, samples, samples)
def test_merge_is_associative_and_commutative(
    xs: list[float], ys: list[float], zs: list[float]
) -> None:
    a, b, c = of(xs), of(ys), of(zs)
    assert merge(a, merge(b, c)) == merge(merge(a, b), c)
    assert merge(a, b) == merge(b, a)
    assert merge(a, Sketch()) == a == merge(Sketch(), a)


def test_sixty_minute_sketches_merge_into_exactly_the_hour_sketch() -> None:
    rng = random.Random(7)
    minutes = [[rng.lognormvariate(6.5, 0.8) for _ in range(500)] for _ in range(60)]
    hour = [v for minute in minutes for v in minute]
    merged = merge_all(of(minute) for minute in minutes)
    assert merged == of(hour)
    assert merged.count == 30_000
    assert within(merged.quantile(0.99), nearest_rank(hour, 0.99))


@given(samples)
def test_pairs_round_trip(values: list[float]) -> None:
    s = of(values)
    assert round_trip(s) == s
    assert all(count >= 1 for _, count in s.to_pairs())
    assert [i for i, _ in s.to_pairs()] == sorted({i for i, _ in s.to_pairs()})


def test_empty_sketch() -> None:
    s = Sketch()
    assert (s.count, s.sum, s.quantile(0.5)) == (0, 0.0, None)
    assert of([]) == s
    assert round_trip(s) == s
    assert from_pairs((), min_value=0.0, max_value=0.0) == s


def test_zeros_have_their_own_bucket() -> None:
    s = of([0.0, 0.0, 0.0])
    assert (s.count, s.zero_count, s.to_pairs()) == (3, 3, ())
    assert s.quantile(0.99) == 0.0
    mixed = s.add(250.0)
    assert mixed.quantile(0.75) == 0.0
    assert mixed.quantile(0.76) == 250.0
    assert round_trip(mixed) == mixed


def test_a_single_value_is_every_quantile_exactly() -> None:
    s = Sketch().add(1_480.5)
    assert [s.quantile(q) for q in (0.0, 0.5, 1.0)] == [1_480.5] * 3
    assert (s.count, s.sum, s.min, s.max) == (1, 1_480.5, 1_480.5, 1_480.5)


@pytest.mark.parametrize("bad", [-1.0, -1e-9, math.inf, math.nan])
def test_negative_and_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite values >= 0"):
        Sketch().add(bad)
    with pytest.raises(ValueError, match="finite values >= 0"):
        of([1.0, bad])


def test_the_sum_is_exact_in_thousandths_whatever_the_grouping() -> None:
    # Float addition is not associative; the integer sum is.
    values = [0.1, 0.2, 0.3, 1e6, 3.25]
    left = merge(merge(of(values[:1]), of(values[1:3])), of(values[3:]))
    right = merge(of(values[:1]), merge(of(values[1:3]), of(values[3:])))
    assert left.sum_thousandths == right.sum_thousandths == 1_000_003_850


def test_bucket_count_is_bounded_by_folding_the_lowest() -> None:
    s = of([1e-300, 1e-100, 1.0, 1e100], max_buckets=64)
    assert s.indices[-1] - s.indices[0] < 64
    assert len(s.indices) <= 64
    assert s.count == 4
    assert s.quantile(1.0) == 1e100  # the top is never folded
    assert s.min == 1e-300  # extremes stay exact


@given(
    st.lists(
        st.floats(min_value=1e-30, max_value=1e30, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=100,
    ),
    st.integers(min_value=0, max_value=100),
)
def test_folded_sketches_still_merge_exactly_and_stay_bounded(
    values: list[float], cut: int
) -> None:
    cut %= len(values) + 1
    direct = of(values, max_buckets=32)
    one_by_one = Sketch(max_buckets=32)
    for v in values:
        one_by_one = one_by_one.add(v)
    merged = merge(of(values[:cut], max_buckets=32), of(values[cut:], max_buckets=32))
    assert direct == one_by_one == merged
    assert direct.indices[-1] - direct.indices[0] < 32
    assert direct.count == len(values)
    # Quantiles above the folded buckets keep their accuracy.
    assert within(direct.quantile(1.0), max(values))


def test_the_default_span_never_folds_millisecond_latencies() -> None:
    s = of([1e-6, 600_000.0])  # a nanosecond to a ten-minute timeout
    assert len(s.indices) == 2
    assert s.indices[-1] - s.indices[0] < sketch.DEFAULT_MAX_BUCKETS


def test_sketches_of_different_accuracy_do_not_merge() -> None:
    with pytest.raises(ValueError, match="cannot merge"):
        merge(of([1.0]), of([1.0], alpha=0.02))
    with pytest.raises(ValueError, match="cannot merge"):
        merge(of([1.0]), of([1.0], max_buckets=16))


@pytest.mark.parametrize(
    ("pairs", "fields"),
    [
        (((10, 0),), {"min_value": 1.0, "max_value": 1.0}),
        (((10, 1), (10, 2)), {"min_value": 1.0, "max_value": 1.0}),
        (((10, 1),), {"min_value": 2.0, "max_value": 1.0}),
        (((10, 1),), {"min_value": -1.0, "max_value": 1.0}),
        (((10, 1),), {"min_value": 0.0, "max_value": 1.0}),  # a zero, but no zero count
        ((), {"zero_count": 2, "min_value": 0.0, "max_value": 1.0}),  # a max, but no bucket
        ((), {"zero_count": -1}),
        (((10, 1),), {"min_value": 1.0, "max_value": 1.0, "alpha": 1.5}),
    ],
)
def test_inconsistent_records_are_refused(
    pairs: tuple[tuple[int, int], ...], fields: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        from_pairs(pairs, **fields)


def test_a_wide_record_is_folded_on_the_way_in() -> None:
    s = from_pairs(((0, 1), (100, 1)), min_value=1.0, max_value=7.0, max_buckets=10)
    assert s.to_pairs() == ((91, 1), (100, 1))
