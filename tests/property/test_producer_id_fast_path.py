"""The sink reads each record's producer_id (and its event_id and seq) from its envelope on
a fast path for the usual record (codec.producer_id_of, codec.envelope_ids_of); whatever
the bytes, it must say what the checked varint-by-varint reading says, value or refusal."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.codec import DecodeError
from tests.unit import builders


def reading(read: object, value: bytes) -> str:
    try:
        return str(read(value))  # type: ignore[operator]
    except DecodeError:
        return "refused"


SEALED = [codec.encode(codec.HashChain("gateway-p").seal(r)) for r in builders.one_of_each()]


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A sealed record with up to four bytes of its body changed, cut anywhere."""
    changed = bytearray(draw(st.sampled_from(SEALED)))
    changes = st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=4)
    for at, byte in draw(changes):
        if codec.HEADER_BYTES + at < len(changed):
            changed[codec.HEADER_BYTES + at] = byte
    return bytes(changed[: codec.HEADER_BYTES + draw(st.integers(0, 400))])


@settings(max_examples=200, deadline=None)
@given(damaged())
def test_the_fast_path_reads_any_bytes_as_the_checked_path_does(data: bytes) -> None:
    assert reading(codec.producer_id_of, data) == reading(codec._producer_id_checked, data)


def envelope_checked(value: bytes) -> tuple[str, str, int]:
    return (codec.read_string(value, codec.HEADER_BYTES)[0], *codec.producer_seq_of(value))


@settings(max_examples=300, deadline=None)
@given(damaged())
def test_the_envelope_ids_fast_path_reads_any_bytes_as_the_checked_path_does(data: bytes) -> None:
    assert reading(codec.envelope_ids_of, data) == reading(envelope_checked, data)


def test_every_record_type_names_its_sealing_producer() -> None:
    assert {codec.producer_id_of(value) for value in SEALED} == {"gateway-p"}
    assert {codec.envelope_ids_of(value)[1:] for value in SEALED} == {("gateway-p", 1)}


def test_a_seq_of_many_bytes_is_read_whole() -> None:
    chain = codec.HashChain("gateway-p")
    chain.seq = 70_000  # the next seal takes 70_001: three varint bytes
    value = codec.encode(chain.seal(builders.one_of_each()[0]))
    event_id, producer_id, seq = codec.envelope_ids_of(value)
    assert (event_id, producer_id, seq) == (codec.event_id_of(value), "gateway-p", 70_001)
