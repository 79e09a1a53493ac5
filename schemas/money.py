"""Money is integer nano-USD (1e-9 USD). Conversions from text are exact decimals."""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation

NANOUSD_PER_USD = 1_000_000_000
MAX_NANOUSD = 2**63 - 1  # Avro long
# Enough digits that no amount that fits an Avro long is ever rounded on the way.
_EXACT = Context(prec=60)


def usd_to_nanousd(amount: str | int | Decimal) -> int:
    """Parse a USD amount exactly; more than nine decimals is an error, never rounded."""
    try:
        value = _EXACT.multiply(Decimal(str(amount)), Decimal(NANOUSD_PER_USD))
    except InvalidOperation as exc:
        raise ValueError(f"not a USD amount: {amount!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a finite USD amount: {amount!r}")
    if value != value.to_integral_value():
        raise ValueError(f"{amount!r} has more precision than a nano-dollar")
    if abs(value) > MAX_NANOUSD:
        raise ValueError(f"{amount!r} is larger than a wallet can hold")
    return int(value)


def format_usd(amount_nanousd: int) -> str:
    """Exact decimal USD text, nine places, e.g. 12.500000000."""
    sign = "-" if amount_nanousd < 0 else ""
    whole, frac = divmod(abs(amount_nanousd), NANOUSD_PER_USD)
    return f"{sign}{whole}.{frac:09d}"
