"""Money is integer nano-USD; text conversions are exact, never rounded."""

from __future__ import annotations

from decimal import Decimal

import pytest

from schemas.money import format_usd, usd_to_nanousd


@pytest.mark.parametrize(
    ("amount", "nanousd"),
    [
        ("0.000000001", 1),
        ("12.5", 12_500_000_000),
        ("0.15", 150_000_000),
        ("100", 100_000_000_000),
        ("0", 0),
        ("-3.000000007", -3_000_000_007),
        ("9223372036.854775807", 2**63 - 1),
        (7, 7_000_000_000),
        (Decimal("0.1"), 100_000_000),
    ],
)
def test_usd_to_nanousd_is_exact(amount: str, nanousd: int) -> None:
    assert usd_to_nanousd(amount) == nanousd
    assert type(usd_to_nanousd(amount)) is int


def test_a_float_sum_that_drifts_does_not_drift_in_nanousd() -> None:
    # 0.1 + 0.2 != 0.3 in binary floating point; in nano-dollars it is exact.
    assert usd_to_nanousd("0.1") + usd_to_nanousd("0.2") == usd_to_nanousd("0.3")


@pytest.mark.parametrize("amount", ["0.0000000001", "1.0000000005", "12.3456789012"])
def test_more_than_nine_decimals_is_rejected(amount: str) -> None:
    with pytest.raises(ValueError, match="precision"):
        usd_to_nanousd(amount)


@pytest.mark.parametrize("amount", ["", "abc", "12,50", "$5", "1.2.3", "NaN", "sNaN", "0x10"])
def test_junk_is_rejected(amount: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)usd|precision"):
        usd_to_nanousd(amount)


@pytest.mark.parametrize("amount", ["Infinity", "-inf"])
def test_infinity_is_rejected_as_a_value_error(amount: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)usd|precision"):
        usd_to_nanousd(amount)


def test_large_amounts_are_never_rounded() -> None:
    # The largest amount an Avro long holds, every digit significant.
    assert usd_to_nanousd("9223372036.854775807") == 2**63 - 1


def test_amounts_beyond_what_a_wallet_holds_are_refused_not_rounded() -> None:
    with pytest.raises(ValueError, match="larger than a wallet"):
        usd_to_nanousd("12345678901234567890.123456789")


@pytest.mark.parametrize(
    ("nanousd", "text"),
    [
        (0, "0.000000000"),
        (1, "0.000000001"),
        (12_500_000_000, "12.500000000"),
        (-1, "-0.000000001"),
        (-12_500_000_001, "-12.500000001"),
        (390_000, "0.000390000"),
    ],
)
def test_format_usd_writes_nine_places(nanousd: int, text: str) -> None:
    assert format_usd(nanousd) == text


@pytest.mark.parametrize(
    "nanousd", [0, 1, -1, 999_999_999, -999_999_999, 1_000_000_000, -7_000_000_003, 2**63 - 1]
)
def test_format_then_parse_round_trips(nanousd: int) -> None:
    assert usd_to_nanousd(format_usd(nanousd)) == nanousd
