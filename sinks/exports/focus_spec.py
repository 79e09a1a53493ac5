"""What the FinOps Open Cost and Usage Specification (FOCUS) 1.2 asks of a dataset, as far as
the FOCUS export is concerned: its mandatory columns with their data types and whether they
allow nulls, the types of the other FOCUS columns the export writes, the allowed values of
the columns it fills with constants, and a check of rows against all of it (pure: used by
the unit tests on the declared columns and by the integration test on an exported file).

Read from the specification's text at the tag v1.2 of
github.com/FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec (specification/columns/*.md: each
column's "Feature level", "Allows nulls" and "Data type"; specification/attributes/*.md for
the formats)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

FOCUS_VERSION = "1.2"

DataType = Literal["Decimal", "String", "Date/Time", "JSON"]


@dataclass(frozen=True, slots=True)
class FocusColumn:
    """A column as the specification defines it."""

    name: str
    data_type: DataType
    allows_nulls: bool


def _columns(*specs: tuple[str, DataType, bool]) -> dict[str, FocusColumn]:
    return {name: FocusColumn(name, kind, nulls) for name, kind, nulls in specs}


# Feature level "Mandatory" in 1.2: every FOCUS dataset has these 21 columns.
MANDATORY: dict[str, FocusColumn] = _columns(
    ("BilledCost", "Decimal", False),
    ("BillingAccountId", "String", False),
    ("BillingAccountName", "String", True),
    ("BillingCurrency", "String", False),
    ("BillingPeriodEnd", "Date/Time", False),
    ("BillingPeriodStart", "Date/Time", False),
    ("ChargeCategory", "String", False),
    ("ChargeClass", "String", True),
    ("ChargeDescription", "String", True),
    ("ChargePeriodEnd", "Date/Time", False),
    ("ChargePeriodStart", "Date/Time", False),
    ("ContractedCost", "Decimal", False),
    ("EffectiveCost", "Decimal", False),
    ("InvoiceIssuerName", "String", False),
    ("ListCost", "Decimal", False),
    ("PricingQuantity", "Decimal", True),
    ("PricingUnit", "String", True),
    ("ProviderName", "String", False),
    ("PublisherName", "String", False),
    ("ServiceCategory", "String", False),
    ("ServiceName", "String", False),
)

# Conditional and recommended columns the export also writes (their conditions hold for
# govledger: it measures usage, has sub accounts (teams), regions, tags and a price list).
OTHER: dict[str, FocusColumn] = _columns(
    ("BillingAccountType", "String", False),
    ("ChargeFrequency", "String", False),
    ("ConsumedQuantity", "Decimal", True),
    ("ConsumedUnit", "String", True),
    ("RegionId", "String", True),
    ("RegionName", "String", True),
    ("ResourceId", "String", True),
    ("ResourceType", "String", True),
    ("ServiceSubcategory", "String", False),
    ("SkuId", "String", True),
    ("SkuPriceId", "String", True),
    ("SubAccountId", "String", True),
    ("SubAccountName", "String", True),
    ("SubAccountType", "String", True),
    ("Tags", "JSON", True),
)
DEFINED: dict[str, FocusColumn] = {**MANDATORY, **OTHER}

# Columns a provider adds must carry this prefix (attributes/column_handling.md).
CUSTOM_PREFIX = "x_"

# The allowed values of the columns that take one (a subset where the table is long).
CHARGE_CATEGORIES = frozenset({"Usage", "Purchase", "Tax", "Credit", "Adjustment"})
CHARGE_FREQUENCIES = frozenset({"One-Time", "Recurring", "Usage-Based"})
SERVICE_CATEGORY_AI = "AI and Machine Learning"
AI_SUBCATEGORIES = frozenset(
    {
        "AI Platforms",
        "Bots",
        "Generative AI",
        "Machine Learning",
        "Natural Language Processing",
        "Other (AI and Machine Learning)",
    }
)
ALLOWED_VALUES: dict[str, frozenset[str]] = {
    "ChargeCategory": CHARGE_CATEGORIES,
    "ChargeFrequency": CHARGE_FREQUENCIES,
    "ChargeClass": frozenset({"Correction"}),
}

# attributes/datetime_format.md: 'YYYY-MM-DDTHH:mm:ssZ', in UTC.
DATETIME_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
# attributes/numeric_format.md: an integer, a decimal, or "mEn" with no "+" anywhere.
NUMERIC_TEXT = re.compile(r"^-?\d+(\.\d+)?(E-?\d+)?$")
PASCAL_CASE = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def column_problems(names: Iterable[str]) -> list[str]:
    """What is wrong with a dataset's column names: a missing mandatory column, a custom
    column without the `x_` prefix, a FOCUS column after a custom one, a duplicate."""
    names = list(names)
    problems = [f"missing mandatory column {name}" for name in MANDATORY if name not in names]
    problems += [f"duplicate column {name}" for name in sorted(set(names)) if names.count(name) > 1]
    custom_seen = False
    for name in names:
        if name.startswith(CUSTOM_PREFIX):
            custom_seen = True
            if not PASCAL_CASE.match(name.removeprefix(CUSTOM_PREFIX)):
                problems.append(f"custom column {name} is not x_ and Pascal case")
        elif name not in DEFINED:
            problems.append(f"column {name} is neither FOCUS 1.2 nor prefixed {CUSTOM_PREFIX}")
        elif custom_seen:
            problems.append(f"FOCUS column {name} comes after custom columns")
    return problems


def _type_problem(column: FocusColumn, value: Any) -> str | None:
    """Why a value (as a text format or Parquet gives it back) is not of its column's type."""
    if column.data_type == "Decimal":
        if isinstance(value, Decimal | int) and not isinstance(value, bool):
            return None
        if isinstance(value, str) and NUMERIC_TEXT.match(value):
            try:
                Decimal(value)
            except InvalidOperation:
                return "not a decimal"
            return None
        return f"not a decimal: {value!r}"
    if column.data_type == "Date/Time":
        if isinstance(value, datetime):
            offset = value.utcoffset()
            return None if offset is not None and not offset else "not in UTC"
        if isinstance(value, str) and DATETIME_TEXT.match(value):
            return None
        return f"not a UTC date/time 'YYYY-MM-DDTHH:mm:ssZ': {value!r}"
    if column.data_type == "JSON":
        try:
            parsed = json.loads(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        # attributes/key_value_format.md: an object whose values are scalars.
        if not isinstance(parsed, dict) or any(isinstance(v, dict | list) for v in parsed.values()):
            return f"not a JSON object of scalars: {value!r}"
        return None
    return None if isinstance(value, str) else f"not a string: {value!r}"


# Columns a Usage row (not a correction) must fill, and columns only Usage rows may fill
# (columns/pricingquantity.md, consumedquantity.md, skuid.md, skupriceid.md).
USAGE_FILLS = ("PricingQuantity", "PricingUnit", "ConsumedQuantity", "ConsumedUnit", "SkuId")
ONLY_USAGE = ("ConsumedQuantity",)  # its unit follows it (UNIT_OF)
# A quantity and its unit are null together (columns/pricingunit.md, consumedunit.md).
UNIT_OF = {"PricingQuantity": "PricingUnit", "ConsumedQuantity": "ConsumedUnit"}


def _conditional_nulls(row: Mapping[str, Any]) -> list[str]:
    """The nullability that depends on ChargeCategory, and on a quantity for its unit."""
    category = row.get("ChargeCategory")
    usage = category == "Usage" and row.get("ChargeClass") is None
    problems = [
        f"{name} is null on a Usage row"
        for name in USAGE_FILLS
        if usage and name in row and row[name] is None
    ]
    problems += [
        f"{name} is set on a {category} row"
        for name in ONLY_USAGE
        if category not in (None, "Usage") and row.get(name) is not None
    ]
    problems += [
        f"{quantity} and {unit} are not null together"
        for quantity, unit in UNIT_OF.items()
        if quantity in row and (row[quantity] is None) != (row.get(unit) is None)
    ]
    # columns/listcost.md, contractedcost.md, effectivecost.md: a charge unrelated to
    # others (a credit, an adjustment) lists, contracts and takes effect at what it bills.
    if category in ("Credit", "Adjustment"):
        problems += [
            f"{name} is not BilledCost on a {category} row"
            for name in ("ListCost", "ContractedCost", "EffectiveCost")
            if name in row and row[name] != row.get("BilledCost")
        ]
    return problems


def row_problems(row: Mapping[str, Any]) -> list[str]:
    """What is wrong with one row of a FOCUS dataset: a null where the column allows none,
    a value not of the column's type or not among its allowed values, an empty string for a
    null (attributes/null_handling.md), a charge period that ends before it starts."""
    problems = []
    for name, value in row.items():
        column = DEFINED.get(name)
        if column is None:
            continue
        if value is None:
            if not column.allows_nulls:
                problems.append(f"{name} is null")
            continue
        if value == "":
            problems.append(f"{name} is an empty string (a null must be null)")
            continue
        wrong = _type_problem(column, value)
        if wrong is not None:
            problems.append(f"{name} {wrong}")
        elif name in ALLOWED_VALUES and value not in ALLOWED_VALUES[name]:
            problems.append(f"{name} {value!r} is not an allowed value")
    problems += _conditional_nulls(row)
    if row.get("ServiceCategory") not in (None, SERVICE_CATEGORY_AI):
        problems.append(f"ServiceCategory {row['ServiceCategory']!r} is not {SERVICE_CATEGORY_AI}")
    if "ServiceSubcategory" in row and row["ServiceSubcategory"] not in AI_SUBCATEGORIES:
        problems.append(f"ServiceSubcategory {row['ServiceSubcategory']!r} is not an AI one")
    for start, end in (
        ("ChargePeriodStart", "ChargePeriodEnd"),
        ("BillingPeriodStart", "BillingPeriodEnd"),
    ):
        if isinstance(row.get(start), type(row.get(end))) and not row[start] < row[end]:
            problems.append(f"{end} is not after {start}")
    return problems
