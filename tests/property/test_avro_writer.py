"""The compiled Avro writers (schemas/avro_writer.py) write what fastavro writes for
`record.to_avro()`, byte for byte, for every record type with its fields varied across
what its schema holds; and refuse a value its schema does not hold."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import avro_writer, codec
from schemas.codec import HashChain
from schemas.records import Event, replaced
from tests.unit import builders

UNICODE = st.characters(exclude_categories=["Cs"])
RECORDS = builders.one_of_each()
ENVELOPE_ORDER = avro_writer.ENVELOPE_FIELDS
ENVELOPE = frozenset(ENVELOPE_ORDER)


def values_of(schema: Any, names: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the schema holds, in the Python form `to_avro` hands fastavro."""
    if isinstance(schema, str):
        simple = {
            "string": st.text(alphabet=UNICODE, max_size=40),
            "bytes": st.binary(max_size=40),
            "long": st.integers(min_value=avro_writer.LONG_MIN, max_value=avro_writer.LONG_MAX),
            "int": st.integers(min_value=avro_writer.INT_MIN, max_value=avro_writer.INT_MAX),
            "double": st.floats(allow_nan=False) | st.integers(-(2**53), 2**53),
            "float": st.floats(width=32, allow_nan=False),
            "boolean": st.booleans(),
            "null": st.none(),
        }
        return simple[schema] if schema in simple else values_of(names[schema], names)
    if isinstance(schema, list):
        return st.one_of(*(values_of(branch, names) for branch in schema))
    kind = schema["type"]
    if isinstance(kind, str) and kind not in ("enum", "array", "map", "record"):
        return values_of(kind, names)
    if "name" in schema:
        names[schema["name"]] = schema
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(values_of(schema["items"], names), max_size=3)
    if kind == "map":
        keys = st.text(alphabet=UNICODE, max_size=10)
        return st.dictionaries(keys, values_of(schema["values"], names), max_size=3)
    fields = {f["name"]: values_of(f["type"], names) for f in schema["fields"]}
    return st.fixed_dictionaries(fields)


def fields_of(record: Event) -> st.SearchStrategy[dict[str, Any]]:
    """New values for every field of the record but its envelope."""
    parsed = codec.schema_for(type(record)).parsed
    names: dict[str, Any] = {}
    values_of(parsed, names)  # registers the named types, in the schema's order
    return st.fixed_dictionaries(
        {
            f["name"]: values_of(f["type"], names)
            for f in parsed["fields"]
            if f["name"] not in ENVELOPE
        }
    )


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_every_record_type_has_a_compiled_writer_matching_fastavro(record: Event) -> None:
    assert codec.schema_for(type(record)).writer is not None
    assert codec.encode_body(record) == codec.fastavro_body(record)
    sealed, value = HashChain("gateway-eu1-0a1b2c").seal_encoded(record)
    assert value == codec.MAGIC + codec.schema_for(type(record)).fingerprint + (
        codec.fastavro_body(sealed)
    )
    assert codec.decode(value) == sealed


@settings(max_examples=40, deadline=None)
@given(data=st.data(), record=st.sampled_from(RECORDS))
def test_varied_records_are_written_as_fastavro_writes_them(
    data: st.DataObject, record: Event
) -> None:
    varied = replaced(record, **data.draw(fields_of(record)))
    assert codec.encode_body(varied) == codec.fastavro_body(varied)
    sealed, value = HashChain("streams-wallets-1").seal_encoded(varied)
    assert value[codec.HEADER_BYTES :] == codec.fastavro_body(sealed)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_varied_lineage_records_are_written_as_fastavro_writes_them(data: st.DataObject) -> None:
    # The gateway's record, the one sealed for every call: attempts, guardrails, optionals.
    call = builders.call()
    varied = replaced(call, **data.draw(fields_of(call)))
    assert codec.encode_body(varied) == codec.fastavro_body(varied)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("team_id", 7, TypeError),  # string
        ("team_id", b"bytes", TypeError),
        ("cost_nanousd", 1 << 63, ValueError),  # long
        ("cost_nanousd", True, ValueError),
        ("cost_nanousd", 1.5, ValueError),
        ("http_status", 1 << 31, ValueError),  # int
        ("decision", "maybe", ValueError),  # enum
        ("stream", 1, TypeError),  # boolean
        ("latency_ms", "1.0", TypeError),  # double
        ("user_id", 5, TypeError),  # ["null", "string"]
        ("policies_applied", "one", TypeError),  # array
    ],
)
def test_a_value_the_schema_does_not_hold_is_refused(field: str, value: Any, error: type) -> None:
    record = replaced(builders.call(), **{field: value})
    with pytest.raises(error):
        codec.encode_body(record)
    with pytest.raises(error):
        HashChain("gateway-eu1-0a1b2c").seal_encoded(record)


def test_a_schema_it_does_not_compile_is_left_to_fastavro() -> None:
    def record(field_type: Any, occurred_at: Any = "long") -> Mapping[str, Any]:
        types = {"occurred_at": occurred_at, "seq": "long"}
        fields = [{"name": n, "type": types.get(n, "string")} for n in ENVELOPE_ORDER]
        fields.append({"name": "f", "type": field_type})
        return {"type": "record", "name": "R", "fields": fields}

    assert avro_writer.compile_writer(record("string")) is not None
    assert avro_writer.compile_writer(record(["string", "long"])) is None  # two-type union
    assert avro_writer.compile_writer(record({"type": "fixed", "name": "F", "size": 4})) is None
    assert avro_writer.compile_writer(record("R")) is None  # recursive
    assert avro_writer.compile_writer(record("string", occurred_at="string")) is None
    assert avro_writer.compile_writer({"type": "enum", "name": "E", "symbols": []}) is None


def test_a_chain_sealed_by_fastavro_is_the_same_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled, by_fastavro = HashChain("gateway-eu1-0a1b2c"), HashChain("gateway-eu1-0a1b2c")
    written = [compiled.seal_encoded(record)[1] for record in RECORDS]
    for record_type, entry in list(codec._BY_TYPE.items()):
        monkeypatch.setitem(codec._BY_TYPE, record_type, dataclasses.replace(entry, writer=None))
    assert [by_fastavro.seal_encoded(record)[1] for record in RECORDS] == written
    assert by_fastavro.head == compiled.head
