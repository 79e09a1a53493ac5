"""The wire's one owner (schemas/codec.py): its varints and strings are Avro's, byte for
byte (fastavro is the reference), and the envelope it reads from sealed bytes is the one
the full decoder reads, with the hash the producer sealed."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import avro_writer, codec
from schemas.codec import HashChain
from tests.unit import builders

LONGS = st.integers(min_value=avro_writer.LONG_MIN, max_value=avro_writer.LONG_MAX)
UNICODE = st.characters(exclude_categories=["Cs"])  # every code point UTF-8 can carry
TEXTS = st.text(alphabet=UNICODE, max_size=300)
IDS = st.text(alphabet=UNICODE, min_size=1, max_size=80)


def _fastavro(schema: str, value: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), value)
    return buffer.getvalue()


@given(LONGS)
def test_a_long_is_encoded_as_avro_encodes_it_and_reads_back(value: int) -> None:
    encoded = codec.encode_long(value)
    assert encoded == _fastavro("long", value)
    assert codec.long_size(value) == len(encoded)
    assert codec.read_long(b"\x01" + encoded + b"tail", 1) == (value, 1 + len(encoded))


@given(TEXTS)
def test_a_string_is_encoded_as_avro_encodes_it_and_reads_back(text: str) -> None:
    encoded = codec.encode_string(text)
    assert encoded == _fastavro("string", text)
    assert codec.read_string(b"\x00" + encoded + b"tail", 1) == (text, 1 + len(encoded))


@given(LONGS, st.integers(min_value=1, max_value=9))
def test_a_long_cut_short_is_refused(value: int, cut: int) -> None:
    encoded = codec.encode_long(value)
    if cut >= len(encoded):
        return
    with pytest.raises(codec.DecodeError):
        codec.read_long(encoded[:cut], 0)


def test_a_varint_longer_than_ten_bytes_is_refused() -> None:
    with pytest.raises(codec.DecodeError, match="overlong"):
        codec.read_long(b"\x80" * 10 + b"\x01", 0)


@pytest.mark.parametrize(
    "data",
    [b"", codec.encode_long(5) + b"abcd", codec.encode_long(-1) + b"abc", b"\x04\xff\xfe"],
)
def test_a_string_running_past_the_data_negative_or_not_utf8_is_refused(data: bytes) -> None:
    with pytest.raises(codec.DecodeError):
        codec.read_string(data, 0)


@settings(max_examples=60)
@given(
    producer=IDS,
    tenant=IDS,
    occurred_at=st.integers(min_value=-(2**62), max_value=2**62),
    records=st.integers(min_value=1, max_value=3),
)
def test_the_envelope_read_from_sealed_bytes_is_the_decoded_one(
    producer: str, tenant: str, occurred_at: int, records: int
) -> None:
    chain = HashChain(producer)
    for _ in range(records):  # later records carry a real prev_hash and larger seqs
        record, value = chain.seal_encoded(
            builders.call(producer_id="", seq=0, tenant_id=tenant, occurred_at=occurred_at)
        )
    assert value == codec.encode(record)
    envelope = codec.read_envelope(value)
    decoded = codec.decode(value)
    assert (
        envelope.event_id,
        envelope.event_type,
        envelope.occurred_at,
        envelope.tenant_id,
        envelope.producer_id,
        envelope.seq,
        envelope.prev_hash,
        envelope.record_hash,
    ) == (
        decoded.event_id,
        decoded.event_type,
        decoded.occurred_at,
        decoded.tenant_id,
        decoded.producer_id,
        decoded.seq,
        decoded.prev_hash,
        decoded.record_hash,
    )
    assert envelope.computed_hash(value) == record.record_hash == codec.compute_record_hash(record)
    assert codec.event_id_of(value) == record.event_id
    assert codec.producer_id_of(value) == producer


def test_a_changed_byte_after_the_envelope_changes_the_computed_hash() -> None:
    value = codec.encode(HashChain("gateway-1").seal(builders.call(producer_id="", seq=0)))
    envelope = codec.read_envelope(value)
    changed = value[:-1] + bytes([value[-1] ^ 1])
    assert envelope.computed_hash(value) == envelope.record_hash
    assert codec.read_envelope(changed).computed_hash(changed) != envelope.record_hash


def test_bytes_of_no_schema_of_ours_have_no_envelope() -> None:
    with pytest.raises(codec.DecodeError):
        codec.read_envelope(b"\xc3\x01" + b"\x00" * 8 + b"\x02a")
