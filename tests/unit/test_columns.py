"""The column check of `audit verify` (replay/columns.py): a stored row's typed columns
against the decode of its `raw`. Pages are built here as the store sends them (Arrow
types of ClickHouse's columns, values taken from the typed record, not from the decoder
under test); each column type changed in one row is a `column_mismatch` naming that row's
event and that column, and only it."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from replay.columns import (
    UNKNOWN,
    Column,
    check_page,
    checked_columns,
    expected_value,
    zero_of,
)
from schemas import codec
from schemas.records import Event
from tests.unit import builders

TS = pa.timestamp("ms", tz="UTC")
ATTEMPT = pa.struct(
    [
        pa.field("provider", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("status", pa.int32(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("error_class", pa.string()),
    ]
)
GUARDRAIL = pa.struct(
    [pa.field("name", pa.string(), nullable=False), pa.field("action", pa.string(), nullable=False)]
)
SKETCH = pa.struct(
    [
        pa.field("alpha", pa.float64()),
        pa.field("max_buckets", pa.int32()),
        pa.field("zero_count", pa.int64()),
        pa.field("sum_thousandths", pa.int64()),
        pa.field("min", pa.float64()),
        pa.field("max", pa.float64()),
        pa.field("bucket_indices", pa.list_(pa.int32())),
        pa.field("bucket_counts", pa.list_(pa.int64())),
    ]
)

ENVELOPE: list[tuple[Column, pa.DataType]] = [
    (Column("event_id", "UUID"), pa.string()),
    (Column("event_type", "LowCardinality(String)"), pa.string()),
    (Column("occurred_at", "DateTime64(3, 'UTC')"), TS),
    (Column("tenant_id", "LowCardinality(String)"), pa.string()),
    (Column("producer_id", "String"), pa.string()),
    (Column("seq", "UInt64"), pa.uint64()),
    (Column("prev_hash", "String"), pa.string()),
    (Column("record_hash", "String"), pa.string()),
]
LINEAGE = [
    *ENVELOPE,
    (Column("team_id", "LowCardinality(String)"), pa.string()),
    (Column("user_id", "Nullable(String)"), pa.string()),
    (Column("model_requested", "String"), pa.string()),
    (
        Column(
            "attempts",
            "Array(Tuple(provider String, model String, status Int32, latency_ms Float64, "
            "error_class Nullable(String)))",
        ),
        pa.list_(ATTEMPT),
    ),
    (Column("policies_applied", "Array(String)"), pa.list_(pa.string())),
    (
        Column("guardrails_triggered", "Array(Tuple(name String, action String))"),
        pa.list_(GUARDRAIL),
    ),
    (Column("decision", "LowCardinality(String)"), pa.string()),
    (Column("cost_nanousd", "Int64"), pa.int64()),
    (Column("latency_ms", "Float64"), pa.float64()),
    (Column("ttft_ms", "Nullable(Float64)"), pa.float64()),
    (Column("http_status", "UInt16"), pa.uint16()),
    (Column("stream", "Bool"), pa.bool_()),
    (Column("response_sha256", "Nullable(String)"), pa.string()),
]
WALLET_STATE = [
    *ENVELOPE,
    (Column("balance_nanousd", "Int64"), pa.int64()),
    (Column("last_occurred_at", "DateTime64(3, 'UTC')"), TS),
    (Column("applied_seqs", "Map(String, Int64)"), pa.map_(pa.string(), pa.int64())),
    (Column("period_start_at", "DateTime64(3, 'UTC')", "0"), TS),
]
SLA_WINDOWS = [*ENVELOPE, (Column("latency_ms", "Tuple(alpha Float64, …)"), SKETCH)]
CONTROL = [
    *ENVELOPE,
    (Column("key_id", "String", "''"), pa.string()),
    (Column("expires_at", "Nullable(DateTime64(3, 'UTC'))"), TS),
    (Column("models", "Array(String)"), pa.list_(pa.string())),
    (Column("amount_nanousd", "Int64", "0"), pa.int64()),
    (Column("memo", "String", "''"), pa.string()),
    (Column("stamped_at", "DateTime64(3, 'UTC')", "now64(3)"), TS),
]


def _sealed(records: list[Event]) -> list[bytes]:
    chain = codec.HashChain(records[0].producer_id)
    return [codec.encode(chain.seal(r)) for r in records]


def _stored(column: Column, avro: dict[str, Any]) -> Any:
    """What the store holds for the column of a row whose record is `avro`."""
    if column.name not in avro:
        zero = zero_of(column)
        return None if zero is UNKNOWN else zero
    value = avro[column.name]
    return list(value.items()) if isinstance(value, dict) and "Map(" in column.type else value


def page(
    layout: list[tuple[Column, pa.DataType]],
    raws: list[bytes],
    changed: dict[tuple[int, str], Any] | None = None,
) -> tuple[list[Column], pa.Table]:
    """The columns and the page a store sends for rows with these wire bytes, with the
    `changed` cells (row, column) holding another value."""
    records = [codec.decode(raw).to_avro() for raw in raws]
    arrays = []
    for column, kind in layout:
        values = [_stored(column, avro) for avro in records]
        for (row, name), value in (changed or {}).items():
            if name == column.name:
                values[row] = value
        arrays.append(pa.array(values, type=kind))
    arrays.append(pa.array(raws, type=pa.binary()))
    names = [c.name for c, _ in layout] + ["raw"]
    columns = [c for c, _ in layout] + [Column("raw", "String")]
    return columns, pa.table(arrays, names=names)


CALLS = _sealed(
    [
        builders.call(seq=1),
        builders.call(seq=2, ttft_ms=210.5, user_id=None, stream=True),
        builders.call(seq=3, guardrails_triggered=()),
    ]
)


def test_a_page_as_the_sink_stored_it_has_no_finding() -> None:
    for layout, raws in (
        (LINEAGE, CALLS),
        (WALLET_STATE, _sealed([builders.balance(seq=1), builders.balance(seq=2)])),
        (SLA_WINDOWS, _sealed([builders.sla_window(seq=1)])),
        (CONTROL, _sealed([builders.key_issued(seq=1), builders.funding(seq=2)])),
    ):
        columns, stored = page(layout, raws)
        assert check_page("t", columns, stored) == []


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("model_requested", "cheap-model"),  # String
        ("team_id", "other-team"),  # LowCardinality(String)
        ("user_id", None),  # Nullable(String): a value removed
        ("tenant_id", "globex"),  # a row moved to another tenant
        ("event_id", "01955c50-47c0-7476-859e-000000000000"),  # UUID, read as text
        ("occurred_at", builders.T0 - 86_400_000),  # DateTime64(3)
        ("cost_nanousd", 1),  # Int64
        ("http_status", 500),  # UInt16
        ("latency_ms", 1.5),  # Float64
        ("ttft_ms", 99.0),  # Nullable(Float64): a value added
        ("stream", True),  # Bool
        ("policies_applied", ["auth"]),  # Array(String)
        ("guardrails_triggered", []),  # Array(Tuple): a guardrail hidden
        (
            "attempts",
            [
                {
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "status": 200,
                    "latency_ms": 640.25,
                    "error_class": None,
                }
            ],
        ),
        ("record_hash", "0" * 64),
    ],
)
def test_each_changed_typed_column_is_named_at_its_event(column: str, value: Any) -> None:
    columns, stored = page(LINEAGE, CALLS, {(0, column): value})
    (finding,) = check_page("lineage", columns, stored)
    first = codec.decode(CALLS[0])
    assert finding.kind == "column_mismatch"
    assert (finding.table, finding.event_id, finding.seq) == ("lineage", first.event_id, 1)
    assert finding.detail.startswith(f"column {column} differs from raw"), finding.detail
    assert finding.tenant_id == "acme"  # the record's tenant, whatever the column says


def test_several_changed_columns_of_a_row_are_one_finding_naming_each() -> None:
    changed = {(1, "model_requested"): "cheap-model", (1, "cost_nanousd"): 1}
    columns, stored = page(LINEAGE, CALLS, changed)
    (finding,) = check_page("lineage", columns, stored)
    assert finding.seq == 2
    assert finding.detail.startswith("columns model_requested, cost_nanousd differ from raw")
    assert "stored 'cheap-model', raw 'gpt-4o-mini'" in finding.detail


def test_map_tuple_and_timestamp_columns_of_state_tables() -> None:
    raws = _sealed([builders.balance(seq=1), builders.balance(seq=2)])
    for column, value in (
        ("applied_seqs", [("admin-7f3e9d", 1)]),
        ("balance_nanousd", 10**12),
        ("last_occurred_at", 0),
    ):
        columns, stored = page(WALLET_STATE, raws, {(1, column): value})
        (finding,) = check_page("wallet_state", columns, stored)
        assert finding.detail.startswith(f"column {column} differs"), finding.detail
    sketch = dict(builders.sla_window().to_avro()["latency_ms"], zero_count=7)
    columns, stored = page(
        SLA_WINDOWS, _sealed([builders.sla_window()]), {(0, "latency_ms"): sketch}
    )
    (finding,) = check_page("sla_windows", columns, stored)
    assert "latency_ms" in finding.detail


def test_a_column_the_record_does_not_fill_must_hold_its_default() -> None:
    raws = _sealed([builders.key_issued(seq=1), builders.funding(seq=2)])
    # A key issue carries no amount: a funding's amount written onto it is found.
    columns, stored = page(CONTROL, raws, {(0, "amount_nanousd"): 5})
    (finding,) = check_page("control_events", columns, stored)
    assert (finding.seq, finding.detail.split(":")[0]) == (
        1,
        "column amount_nanousd differs from raw (amount_nanousd",
    )
    # A default that is not its type's zero cannot be known here: not judged.
    columns, stored = page(CONTROL, raws, {(0, "stamped_at"): 123})
    assert check_page("control_events", columns, stored) == []


def test_raw_that_does_not_decode_is_reported_not_skipped() -> None:
    broken = CALLS[1][:-40]
    columns, stored = page(LINEAGE, [CALLS[0]], None)
    stored = pa.concat_tables([stored, stored])
    raw = pa.array([CALLS[0], broken], type=pa.binary())
    stored = stored.set_column(stored.num_columns - 1, "raw", raw)
    (finding,) = check_page("lineage", columns, stored)
    assert finding.kind == "column_mismatch" and finding.seq == 1  # the stored position
    assert "raw does not decode" in finding.detail


def test_low_cardinality_sent_as_a_dictionary_and_nan_compare_as_equal() -> None:
    raws = _sealed([builders.call(seq=1, latency_ms=float("nan"))])
    columns, stored = page(LINEAGE, raws)
    index = stored.column_names.index("team_id")
    dictionary = stored.column("team_id").combine_chunks().dictionary_encode()
    stored = stored.set_column(index, "team_id", dictionary)
    assert check_page("lineage", columns, stored) == []


def test_what_the_check_leaves_to_the_chain_walk_and_the_store() -> None:
    stored = [c for c, _ in LINEAGE]
    stored += [Column("raw", "String"), Column("ingested_at", "DateTime64(3, 'UTC')", "now64(3)")]
    names = [c.name for c in checked_columns(stored)]
    assert "producer_id" not in names and "seq" not in names  # `reordered` / `modified`
    assert "raw" not in names and "ingested_at" not in names
    assert "event_id" in names and "tenant_id" in names


def test_conversions_and_zeros_follow_clickhouse() -> None:
    uuid_column = Column("event_id", "UUID")
    assert expected_value(uuid_column, "01955C50-47C0-7476-859E-9C3D3F295658") == (
        "01955c50-47c0-7476-859e-9c3d3f295658"
    )
    assert expected_value(Column("m", "Map(String, Int64)"), {"a": 1}) == [("a", 1)]
    assert zero_of(Column("x", "Nullable(DateTime64(3, 'UTC'))")) is None
    assert zero_of(Column("x", "Array(Int32)")) == []
    assert zero_of(Column("x", "String", "''")) == ""
    assert zero_of(Column("x", "LowCardinality(String)", "''")) == ""
    assert zero_of(Column("x", "Int64", "0")) == 0
    # A plain string literal is what an older record's row holds (lineage.api on v1 rows).
    assert zero_of(Column("x", "LowCardinality(String)", "'chat.completions'")) == (
        "chat.completions"
    )
    assert zero_of(Column("x", "String", "'it''s'")) is UNKNOWN  # quoting: not evaluated
    assert zero_of(Column("x", "String", "concat('a', 'b')")) is UNKNOWN
    assert zero_of(Column("x", "Int64", "'7'")) is UNKNOWN
