"""A mergeable quantile sketch (DDSketch). Pure: no I/O, no clock.

Why this sketch: SLA windows are built per minute and rolled up into hours and days, so
percentiles must merge *exactly*, which averaged percentiles or reservoir samples cannot.
A value v > 0 goes to the log bucket `ceil(log(v) / log(gamma))`, with gamma =
(1 + alpha) / (1 - alpha); bucket i holds (gamma^(i-1), gamma^i] and answers with
2·gamma^i / (gamma + 1), within relative error alpha of every value in it. The bucket
depends on the value alone, so a merge adds counts index by index: minutes merged into
an hour give exactly the buckets the hour's values give directly, whatever the order or
grouping. Zeros have their own bucket; negative, infinite and NaN values are refused
(ValueError).

Bounded: the buckets span at most `max_buckets` consecutive indices. When a larger value
pushes the span over, the lowest buckets fold into the lowest kept one (DDSketch's
collapsing-lowest store); the result depends only on the values, so merging stays exact.
The span is a factor of gamma^max_buckets, so a finer alpha needs more buckets for the
same range. With alpha = 0.01 and 2,048 buckets it is about 6·10^17: for latencies in
milliseconds nothing ever folds, and if something did, only quantiles that fall in
folded buckets lose the alpha guarantee (they read too high); high percentiles never do.

The sum is kept as an integer count of thousandths of the value's unit (µs for values in
ms), each value rounded half-even: integer addition is associative, float addition is
not, and merges must be exact.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from bisect import bisect_left
from collections.abc import Iterable

DEFAULT_ALPHA = 0.01
DEFAULT_MAX_BUCKETS = 2_048
SUM_SCALE = 1_000
"""The sum is kept in units of 1/SUM_SCALE of the values' unit."""


@functools.lru_cache(maxsize=8)
def _inverse_log_gamma(alpha: float) -> float:
    return 1.0 / math.log((1.0 + alpha) / (1.0 - alpha))


def bucket_index(value: float, alpha: float = DEFAULT_ALPHA) -> int:
    """The bucket of a value > 0: monotonic in the value, so buckets keep values ordered."""
    return math.ceil(math.log(value) * _inverse_log_gamma(alpha))


def bucket_value(index: int, alpha: float = DEFAULT_ALPHA) -> float:
    """The value a bucket answers with: within alpha of every value the bucket holds."""
    gamma = (1.0 + alpha) / (1.0 - alpha)
    return 2.0 * math.exp(index / _inverse_log_gamma(alpha)) / (gamma + 1.0)


@dataclasses.dataclass(frozen=True, slots=True)
class Sketch:
    """Counts per log bucket, sorted by index, plus zeros, sum, min and max.

    `indices` is strictly increasing, `counts` is parallel to it and every count is >= 1;
    the indices span at most `max_buckets`. `min` and `max` are the exact extremes seen
    (inf and -inf while empty). Build with `of`, `add`, `add_all` or `from_pairs`, never by hand.
    """

    alpha: float = DEFAULT_ALPHA
    max_buckets: int = DEFAULT_MAX_BUCKETS
    indices: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()
    zero_count: int = 0
    sum_thousandths: int = 0
    min: float = math.inf
    max: float = -math.inf

    def __post_init__(self) -> None:
        assert 0.0 < self.alpha < 1.0, "relative accuracy is a fraction"
        assert self.max_buckets >= 1, "a sketch keeps at least one bucket"
        assert len(self.indices) == len(self.counts), "one count per bucket"

    @property
    def count(self) -> int:
        """How many values the sketch holds."""
        return self.zero_count + sum(self.counts)

    @property
    def sum(self) -> float:
        """The sum of the values, to the nearest thousandth of their unit."""
        return self.sum_thousandths / SUM_SCALE

    def add(self, value: float) -> Sketch:
        """The sketch with one more value (>= 0 and finite, else ValueError)."""
        _check(value)
        indices, counts, zero_count = self.indices, self.counts, self.zero_count
        if value == 0.0:
            zero_count += 1
        else:
            index = bucket_index(value, self.alpha)
            if indices and index < indices[-1] - self.max_buckets + 1:
                index = indices[-1] - self.max_buckets + 1
            at = bisect_left(indices, index)
            if at < len(indices) and indices[at] == index:
                counts = (*counts[:at], counts[at] + 1, *counts[at + 1 :])
            else:
                indices = (*indices[:at], index, *indices[at:])
                counts = (*counts[:at], 1, *counts[at:])
                if indices[-1] - indices[0] >= self.max_buckets:
                    indices, counts = _collapsed(indices, counts, self.max_buckets)
        return Sketch(
            self.alpha,
            self.max_buckets,
            indices,
            counts,
            zero_count,
            self.sum_thousandths + round(value * SUM_SCALE),
            min(self.min, value),
            max(self.max, value),
        )

    def add_all(self, values: Iterable[float]) -> Sketch:
        """The sketch with more values: the same as adding them one by one, in one pass
        (one copy of the buckets however many values)."""
        inverse = _inverse_log_gamma(self.alpha)
        zero_count, total, low, high = self.zero_count, self.sum_thousandths, self.min, self.max
        fresh: dict[int, int] = {}
        added = 0
        for value in values:
            _check(value)
            added += 1
            total += round(value * SUM_SCALE)
            low, high = min(low, value), max(high, value)
            if value == 0.0:
                zero_count += 1
            else:
                index = math.ceil(math.log(value) * inverse)
                fresh[index] = fresh.get(index, 0) + 1
        if not added:
            return self
        indices, counts = self.indices, self.counts
        if fresh:
            index_list, count_list = list(indices), list(counts)
            for index in sorted(fresh):
                at = bisect_left(index_list, index)
                if at < len(index_list) and index_list[at] == index:
                    count_list[at] += fresh[index]
                else:
                    index_list.insert(at, index)
                    count_list.insert(at, fresh[index])
            indices, counts = tuple(index_list), tuple(count_list)
            if indices[-1] - indices[0] >= self.max_buckets:
                indices, counts = _collapsed(indices, counts, self.max_buckets)
        return Sketch(self.alpha, self.max_buckets, indices, counts, zero_count, total, low, high)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile (the value of rank max(1, ceil(q·count)) in
        ascending order) within relative error alpha; the lowest and highest ranks are
        the exact min and max; None for an empty sketch."""
        assert 0.0 <= q <= 1.0, "a quantile is a fraction"
        total = self.count
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        if rank == 1:
            return self.min
        if rank == total:
            return self.max
        if rank <= self.zero_count:
            return 0.0
        seen = self.zero_count
        for index, count in zip(self.indices, self.counts, strict=True):
            seen += count
            if seen >= rank:
                # Clamping to the exact extremes only moves the answer toward the truth.
                return min(max(bucket_value(index, self.alpha), self.min), self.max)
        raise AssertionError("the counts add up to the total")

    def to_pairs(self) -> tuple[tuple[int, int], ...]:
        """(bucket index, count) of every non-empty log bucket, by index: the compact
        form for a record (zeros, sum, min and max travel beside it)."""
        return tuple(zip(self.indices, self.counts, strict=True))


EMPTY = Sketch()
"""The empty sketch of default accuracy and size."""


def _check(value: float) -> None:
    if not (0.0 <= value < math.inf):
        raise ValueError(f"a sketch holds finite values >= 0, not {value!r}")


def _collapsed(
    indices: tuple[int, ...], counts: tuple[int, ...], max_buckets: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Fold every bucket below `highest - max_buckets + 1` into that index."""
    floor = indices[-1] - max_buckets + 1
    keep = bisect_left(indices, floor)
    if keep == 0:
        return indices, counts
    folded = sum(counts[:keep])
    if keep < len(indices) and indices[keep] == floor:
        return indices[keep:], (counts[keep] + folded, *counts[keep + 1 :])
    return (floor, *indices[keep:]), (folded, *counts[keep:])


def of(
    values: Iterable[float],
    *,
    alpha: float = DEFAULT_ALPHA,
    max_buckets: int = DEFAULT_MAX_BUCKETS,
) -> Sketch:
    """The sketch of some values, built in one pass (same result as adding one by one)."""
    return Sketch(alpha, max_buckets).add_all(values)


def merge(a: Sketch, b: Sketch) -> Sketch:
    """The sketch of both sketches' values: exact, associative and commutative."""
    if (a.alpha, a.max_buckets) != (b.alpha, b.max_buckets):
        raise ValueError(
            f"cannot merge sketches of alpha={a.alpha}/{a.max_buckets} buckets "
            f"and alpha={b.alpha}/{b.max_buckets} buckets"
        )
    if not b.count:
        return a
    if not a.count:
        return b
    buckets = dict(zip(a.indices, a.counts, strict=True))
    for index, count in zip(b.indices, b.counts, strict=True):
        buckets[index] = buckets.get(index, 0) + count
    return _from_buckets(
        buckets,
        alpha=a.alpha,
        max_buckets=a.max_buckets,
        zero_count=a.zero_count + b.zero_count,
        sum_thousandths=a.sum_thousandths + b.sum_thousandths,
        low=min(a.min, b.min),
        high=max(a.max, b.max),
    )


def merge_all(sketches: Iterable[Sketch], empty: Sketch | None = None) -> Sketch:
    """The sketch of all the sketches' values; `empty` (default alpha) when there are none."""
    return functools.reduce(merge, sketches, empty if empty is not None else EMPTY)


def from_pairs(
    pairs: Iterable[tuple[int, int]],
    *,
    zero_count: int = 0,
    sum_thousandths: int = 0,
    min_value: float = math.inf,
    max_value: float = -math.inf,
    alpha: float = DEFAULT_ALPHA,
    max_buckets: int = DEFAULT_MAX_BUCKETS,
) -> Sketch:
    """The sketch a record describes (see `to_pairs`). Input from the wire: anything
    inconsistent raises ValueError; `min_value`/`max_value` are ignored when empty."""
    if not (0.0 < alpha < 1.0) or max_buckets < 1:
        raise ValueError(f"bad sketch parameters alpha={alpha}, max_buckets={max_buckets}")
    buckets: dict[int, int] = {}
    for index, count in pairs:
        if count < 1 or index in buckets:
            raise ValueError(f"bucket {index}: counts are positive, one per index")
        buckets[index] = count
    if zero_count < 0 or sum_thousandths < 0:
        raise ValueError("zero count and sum are never negative")
    if not buckets and not zero_count:
        return Sketch(alpha, max_buckets)
    if not (0.0 <= min_value <= max_value < math.inf):
        raise ValueError(f"bad extremes min={min_value!r}, max={max_value!r}")
    if (min_value == 0.0) != (zero_count > 0) or (max_value == 0.0) != (not buckets):
        raise ValueError("extremes disagree with the zero bucket")
    return _from_buckets(
        buckets,
        alpha=alpha,
        max_buckets=max_buckets,
        zero_count=zero_count,
        sum_thousandths=sum_thousandths,
        low=min_value,
        high=max_value,
    )


def _from_buckets(
    buckets: dict[int, int],
    *,
    alpha: float,
    max_buckets: int,
    zero_count: int,
    sum_thousandths: int,
    low: float,
    high: float,
) -> Sketch:
    indices = tuple(sorted(buckets))
    counts = tuple(map(buckets.__getitem__, indices))
    if indices and indices[-1] - indices[0] >= max_buckets:
        indices, counts = _collapsed(indices, counts, max_buckets)
    return Sketch(alpha, max_buckets, indices, counts, zero_count, sum_thousandths, low, high)
