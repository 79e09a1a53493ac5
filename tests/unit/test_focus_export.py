"""The FOCUS export without a store: its columns against FOCUS 1.2's mandatory list and
naming rules, the row check catching what the specification forbids, and decimals written
digit for digit in every format (the file sums back to the integer nano-USD)."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sinks.exports import focus
from sinks.exports.focus_spec import (
    DEFINED,
    FOCUS_VERSION,
    MANDATORY,
    column_problems,
    row_problems,
)
from sinks.exports.manifest import write_pages
from sinks.exports.queries import EXPORT_TYPES

FOCUS = EXPORT_TYPES["focus"]
# FOCUS 1.2's columns whose feature level is Mandatory (specification/columns/*.md at v1.2).
MANDATORY_1_2 = [
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
]


def test_the_spec_module_lists_focus_1_2s_mandatory_columns_with_their_types() -> None:
    assert FOCUS_VERSION == "1.2"
    assert sorted(MANDATORY) == MANDATORY_1_2
    assert {n for n, c in MANDATORY.items() if c.data_type == "Decimal"} == {
        "BilledCost", "ContractedCost", "EffectiveCost", "ListCost", "PricingQuantity",
    }  # fmt: skip
    assert {n for n, c in MANDATORY.items() if c.data_type == "Date/Time"} == {
        "BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart",
    }  # fmt: skip
    nullable = {n for n, c in MANDATORY.items() if c.allows_nulls}
    assert nullable == {
        "BillingAccountName", "ChargeClass", "ChargeDescription", "PricingQuantity",
        "PricingUnit",
    }  # fmt: skip


def test_the_focus_export_has_every_mandatory_column_and_only_x_custom_ones_after() -> None:
    names = FOCUS.column_names
    assert column_problems(names) == []
    assert set(MANDATORY) <= set(names)
    focus_columns = [n for n in names if not n.startswith("x_")]
    assert focus_columns == sorted(focus_columns)  # alphabetical, as the spec lists them
    assert names[: len(focus_columns)] == focus_columns  # custom columns come last
    assert FOCUS.time_column in names and set(FOCUS.chain_columns) <= set(names)
    assert {key.column for key in FOCUS.keys} <= set(names)
    # Costs are the integer times 1e-9 in the engine, never through a float; a credit to
    # a wallet is a negative charge.
    costs = {name: (call, credit) for name, call, credit in focus.COLUMNS if name.endswith("Cost")}
    assert set(costs) == {"BilledCost", "EffectiveCost", "ListCost", "ContractedCost"}
    for call, credit in costs.values():
        assert call == "toDecimal64(t.cost_nanousd, 0) * toDecimal64('0.000000001', 9)"
        assert credit == "toDecimal64(-t.amount_nanousd, 0) * toDecimal64('0.000000001', 9)"
    assert tuple(FOCUS.column_names) == focus.NAMES


def test_the_manifest_carries_the_focus_metadata_of_the_columns() -> None:
    meta = focus.metadata()
    assert meta["DataGenerator"] == {"DataGenerator": "govledger"}
    schema = meta["Schema"]
    assert schema["FocusVersion"] == FOCUS_VERSION
    definitions = {d["ColumnName"]: d for d in schema["ColumnDefinition"]}
    assert list(definitions) == FOCUS.column_names
    kinds = {"Decimal": "DECIMAL", "Date/Time": "DATETIME", "String": "STRING", "JSON": "JSON"}
    for name, column in DEFINED.items():
        if name in definitions:
            assert definitions[name]["DataType"] == kinds[column.data_type], name
    assert definitions["BilledCost"]["NumberScale"] == 9
    assert definitions["x_CostNanoUsd"]["DataType"] == "INTEGER"
    assert definitions["Tags"]["ProviderTagPrefixes"] == ["govledger:"]
    # A change of columns is a new schema: a new SchemaId, and SCHEMA_CREATED to update.
    assert schema["SchemaId"] == "d00ea26d-4288-5671-a8bb-8b487b0a5560"
    assert schema["CreationDate"] == focus.SCHEMA_CREATED


def test_column_problems_names_what_is_wrong() -> None:
    names = [n for n in FOCUS.column_names if n != "BilledCost"]
    assert column_problems(names) == ["missing mandatory column BilledCost"]
    assert column_problems([*FOCUS.column_names, "Team"]) == [
        "column Team is neither FOCUS 1.2 nor prefixed x_"
    ]
    assert column_problems(["x_Tenant", *MANDATORY]) == [
        f"FOCUS column {name} comes after custom columns" for name in MANDATORY
    ]


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "BilledCost": "0.000012300",
        "BillingAccountId": "acme",
        "BillingAccountName": "acme",
        "BillingCurrency": "USD",
        "BillingPeriodEnd": "2026-01-01T00:00:00Z",
        "BillingPeriodStart": "2025-12-01T00:00:00Z",
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ChargeDescription": "gpt-4o chat.completions call",
        "ChargePeriodEnd": "2025-12-07T08:00:01Z",
        "ChargePeriodStart": "2025-12-07T08:00:00Z",
        "ContractedCost": "0.000012300",
        "EffectiveCost": "0.000012300",
        "InvoiceIssuerName": "openai",
        "ListCost": "0.000012300",
        "PricingQuantity": "15",
        "PricingUnit": "Tokens",
        "ProviderName": "openai",
        "PublisherName": "openai",
        "ServiceCategory": "AI and Machine Learning",
        "ServiceName": "openai chat.completions",
        "ServiceSubcategory": "Generative AI",
        "Tags": '{"govledger:tenant": "acme", "govledger:team": null}',
        "x_Anything": "",
    }
    row.update(changes)
    return row


def test_row_problems_accepts_a_valid_row_and_names_each_violation() -> None:
    assert row_problems(_row()) == []
    parquet_like = _row(
        BilledCost=Decimal("1E-9"),
        ChargePeriodStart=datetime(2025, 12, 7, 8, tzinfo=UTC),
        ChargePeriodEnd=datetime(2025, 12, 7, 8, 0, 1, tzinfo=UTC),
    )
    assert row_problems(parquet_like) == []
    cases: list[tuple[dict[str, Any], str]] = [
        ({"BilledCost": None}, "BilledCost is null"),
        ({"BilledCost": 1.5}, "BilledCost not a decimal: 1.5"),
        ({"ListCost": "+3"}, "ListCost not a decimal: '+3'"),
        ({"ListCost": "1,000"}, "ListCost not a decimal: '1,000'"),
        ({"ChargeClass": ""}, "ChargeClass is an empty string (a null must be null)"),
        ({"ChargeCategory": "Spend"}, "ChargeCategory 'Spend' is not an allowed value"),
        (
            {"ChargePeriodStart": "2025-12-07 08:00:00"},
            "ChargePeriodStart not a UTC date/time 'YYYY-MM-DDTHH:mm:ssZ': '2025-12-07 08:00:00'",
        ),
        (
            {"ChargePeriodEnd": "2025-12-07T08:00:00Z"},
            "ChargePeriodEnd is not after ChargePeriodStart",
        ),
        ({"Tags": '{"a": {"b": 1}}'}, 'Tags not a JSON object of scalars: \'{"a": {"b": 1}}\''),
        ({"Tags": "team=ops"}, "Tags not a JSON object of scalars: 'team=ops'"),
        ({"ServiceSubcategory": "Databases"}, "ServiceSubcategory 'Databases' is not an AI one"),
        ({"SkuId": None}, "SkuId is null on a Usage row"),
        (
            {"ChargeCategory": "Credit", "PricingQuantity": None},
            "PricingQuantity and PricingUnit are not null together",
        ),
        (
            {"ChargeCategory": "Credit", "ConsumedQuantity": "15", "ConsumedUnit": "Tokens"},
            "ConsumedQuantity is set on a Credit row",
        ),
        (
            {"ChargeCategory": "Adjustment", "EffectiveCost": "0"},
            "EffectiveCost is not BilledCost on a Adjustment row",
        ),
    ]
    for changes, problem in cases:
        assert row_problems(_row(**changes)) == [problem], changes
    assert DEFINED["Tags"].allows_nulls and row_problems(_row(Tags=None)) == []


# Costs that a float would change: 2**53 + 1 nano-USD, one nano-USD, and a negative one.
NANOUSD = [9_007_199_254_740_993, 1, -5, 0]


def _cost_page() -> pa.Table:
    costs = pa.array([Decimal(n).scaleb(-9) for n in NANOUSD], pa.decimal128(18, 9))
    return pa.table(
        {
            "BilledCost": costs,
            "ChargePeriodStart": pa.array([1_765_094_400] * 4, pa.timestamp("s", tz="UTC")),
            "x_OccurredAt": pa.array([1_765_094_400_123] * 4, pa.timestamp("ms", tz="UTC")),
            "x_ProducerId": ["gw"] * 4,
            "x_Seq": pa.array(range(4), pa.uint64()),
            "x_RecordHash": ["h"] * 4,
        }
    )


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_decimal_costs_are_written_digit_for_digit_and_sum_to_the_nanodollar(
    tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"focus.{fmt}"
    _, tally = write_pages(iter([_cost_page()]), fmt, path, FOCUS.time_column, FOCUS.chain_columns)
    assert tally.chain_heads()[0]["last_seq"] == 3
    if fmt == "csv":
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        written = [r["BilledCost"] for r in rows]
        assert written[1] == "0.000000001"  # plain notation, not 1E-9
        assert rows[0]["ChargePeriodStart"] == "2025-12-07T08:00:00Z"  # whole seconds
        assert rows[0]["x_OccurredAt"] == "2025-12-07T08:00:00.123Z"
        costs = [Decimal(text) for text in written]
    elif fmt == "jsonl":
        lines = path.read_text().splitlines()
        assert '"BilledCost":9007199.254740993,' in lines[0]  # a JSON number, every digit
        costs = [json.loads(line, parse_float=Decimal)["BilledCost"] for line in lines]
    else:
        table = pq.read_table(path)
        assert table.schema.field("BilledCost").type == pa.decimal128(18, 9)
        costs = table.column("BilledCost").to_pylist()
    assert [cost * 10**9 for cost in costs] == NANOUSD
    assert sum(costs) * 10**9 == sum(NANOUSD)
