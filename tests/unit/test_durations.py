"""Durations as typed ('90d', '12h'): one parser for the admin API's key expiry and the
query API's report windows, refusing anything but ASCII digits and one unit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.durations import DURATION_UNITS_MS, parse_duration_ms
from sinks.http_layer import MAX_WINDOW_MS, BadRequestError, window_ms


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [("45s", 45_000), ("30m", 1_800_000), ("12h", 43_200_000), ("90d", 7_776_000_000)],
)
def test_each_unit_is_read(text: str, expected_ms: int) -> None:
    assert parse_duration_ms(text) == expected_ms


@pytest.mark.parametrize(
    "text",
    [
        "",
        "d",
        "30",
        "0d",
        "-1d",
        "+1d",
        "1.5h",
        " 5d",
        "5d ",
        "5d\n",
        "5D",
        "5w",
        "5 d",
        "²d",  # str.isdigit() says yes; int() says no
        "٣d",  # Arabic-Indic three: str.isdigit() and int() both say yes
        "\uff11d",  # fullwidth one
        "9" * 5_000 + "d",  # int() would refuse past 4300 digits; the bound comes first
        "1" * 12 + "d",  # past the length bound
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ms(text)


@given(st.integers(1, 10**9), st.sampled_from(sorted(DURATION_UNITS_MS)))
def test_a_number_and_a_unit_is_their_product(number: int, unit: str) -> None:
    assert parse_duration_ms(f"{number}{unit}") == number * DURATION_UNITS_MS[unit]


def test_the_query_api_window_is_the_same_rule_capped_at_ten_years() -> None:
    assert window_ms("30d") == parse_duration_ms("30d")
    assert window_ms("99999999d") == MAX_WINDOW_MS
    with pytest.raises(BadRequestError) as refused:
        window_ms("٣d")
    assert (refused.value.status, refused.value.code) == (400, "invalid_request")
