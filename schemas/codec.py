"""Avro single-object encoding: marker C3 01, 8-byte CRC-64-AVRO fingerprint (little endian)
of the schema's Parsing Canonical Form, then the Avro binary body. No registry is needed:
the fingerprint names the schema among the `.avsc` files.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple, TypeVar

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas import avro_writer
from schemas.avro_writer import Write
from schemas.notify_records import NOTIFY_RECORD_TYPES
from schemas.records import GENESIS_HASH, RECORD_TYPES, Event, replaced

ALL_RECORD_TYPES: tuple[type[Event], ...] = (*RECORD_TYPES, *NOTIFY_RECORD_TYPES)
"""Every record type the codec knows: schemas.records' and the notification records."""

MAGIC = b"\xc3\x01"
HEADER_BYTES = 10

E = TypeVar("E", bound=Event)


class DecodeError(ValueError):
    """Bytes that are not a govledger record of a known schema."""


@dataclass(frozen=True, slots=True)
class SchemaEntry:
    """One known schema: its name, fingerprint, parsed form and Python record type."""

    name: str
    fingerprint: bytes
    parsed: Any
    record_type: type[Event]
    source: dict[str, Any]
    # The fields after the envelope with their compiled writers (schemas.avro_writer);
    # None: fastavro writes this type.
    writer: list[tuple[str, Write]] | None = None


def _strip_logical_types(node: Any) -> Any:
    # Timestamps stay plain epoch-millisecond ints in Python; the wire bytes and the
    # canonical form (which drops logicalType) are unchanged by this.
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


def load_schema_sources() -> dict[str, dict[str, Any]]:
    """Every `.avsc` shipped in schemas/avro, by file name."""
    folder = resources.files("schemas") / "avro"
    return {
        entry.name: json.loads(entry.read_text())
        for entry in folder.iterdir()
        if entry.name.endswith(".avsc")
    }


def _build_registry() -> tuple[dict[bytes, SchemaEntry], dict[type[Event], SchemaEntry]]:
    by_fingerprint: dict[bytes, SchemaEntry] = {}
    by_type: dict[type[Event], SchemaEntry] = {}
    # Every version of a record decodes into one Python type (fields added later carry
    # defaults); the type writes with its newest schema, named by `schema_name`.
    types = {t.schema_name.rsplit(".", 1)[1]: t for t in ALL_RECORD_TYPES}
    for source in load_schema_sources().values():
        name = f"{source['namespace']}.{source['name']}"
        pcf = to_parsing_canonical_form(source)
        fp = bytes.fromhex(fingerprint(pcf, "CRC-64-AVRO"))
        parsed = fastavro.parse_schema(_strip_logical_types(copy.deepcopy(source)))
        entry = SchemaEntry(
            name,
            fp,
            parsed,
            types[source["name"]],
            source,
            avro_writer.compile_writer(parsed),
        )
        assert fp not in by_fingerprint, f"fingerprint clash: {name}"
        by_fingerprint[fp] = entry
        if name == entry.record_type.schema_name:
            by_type[entry.record_type] = entry
    assert set(by_type) == set(ALL_RECORD_TYPES), "every record type needs its writer schema"
    return by_fingerprint, by_type


_BY_FINGERPRINT, _BY_TYPE = _build_registry()


def schema_for(record_type: type[Event]) -> SchemaEntry:
    """The schema entry of a record type."""
    return _BY_TYPE[record_type]


def encode_body(record: Event) -> bytes:
    """The Avro binary body of a record, without the single-object header."""
    entry = _BY_TYPE[type(record)]
    if entry.writer is not None:
        r = record
        parts = avro_writer.write_parts(
            r,
            entry.writer,
            producer_id=r.producer_id,
            seq=r.seq,
            prev_hash=r.prev_hash,
            record_hash=r.record_hash,
        )
        return b"".join(parts)
    return fastavro_body(record)


def fastavro_body(record: Event) -> bytes:
    """`encode_body` as fastavro writes it: the reference the compiled writers match."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, _BY_TYPE[type(record)].parsed, record.to_avro())
    return buffer.getvalue()


def encode(record: Event) -> bytes:
    """Single-object encoding of a record."""
    return MAGIC + _BY_TYPE[type(record)].fingerprint + encode_body(record)


def schema_of(data: bytes) -> SchemaEntry:
    """The schema named by a record's header; DecodeError if the header is not ours."""
    if data[:2] != MAGIC:
        raise DecodeError("not Avro single-object encoding (missing C3 01 marker)")
    if len(data) < HEADER_BYTES:
        raise DecodeError(f"record of {len(data)} bytes is shorter than the 10-byte header")
    entry = _BY_FINGERPRINT.get(data[2:HEADER_BYTES])
    if entry is None:
        raise DecodeError(f"unknown schema fingerprint {data[2:HEADER_BYTES].hex()}")
    return entry


_BODY_ERRORS = (EOFError, ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError)


def decode_fields(data: bytes) -> tuple[SchemaEntry, dict[str, Any]]:
    """The schema of single-object bytes and their fields as fastavro reads them (plain
    dicts, before the typed record: what audits compare stored columns with); DecodeError
    if not ours."""
    entry = schema_of(data)
    try:
        raw = fastavro.schemaless_reader(io.BytesIO(data[HEADER_BYTES:]), entry.parsed, None)
    except _BODY_ERRORS as exc:
        raise DecodeError(f"{entry.name}: body does not decode: {exc}") from exc
    assert isinstance(raw, dict), "a record schema reads as a dict"
    return entry, raw


def decode(data: bytes) -> Event:
    """Decode single-object bytes into the typed record; DecodeError if not ours."""
    entry, raw = decode_fields(data)
    try:
        return entry.record_type.from_avro(raw)
    except _BODY_ERRORS as exc:
        raise DecodeError(f"{entry.name}: body does not decode: {exc}") from exc


def decode_as(data: bytes, record_type: type[E]) -> E:
    """Decode and check the record is of the expected type."""
    record = decode(data)
    if not isinstance(record, record_type):
        raise DecodeError(f"expected {record_type.schema_name}, got {type(record).schema_name}")
    return record


def compute_record_hash(record: Event) -> str:
    """sha256(prev_hash bytes ‖ Avro body with record_hash empty), as hex."""
    body = encode_body(replaced(record, record_hash=""))
    return hashlib.sha256(bytes.fromhex(record.prev_hash) + body).hexdigest()


# --- Avro's binary primitives and the envelope: the one implementation -------------------
# The sink's container files (sinks.avro_batch), verify (replay.verify), record
# authentication (schemas.authn) and the sealing below read and write the wire with these.

encode_long = avro_writer.encode_long  # the varint's owner is schemas.avro_writer
MAX_LONG_BYTES = 10
"""A zig-zag varint of a 64-bit long is at most ten bytes; more is not Avro."""


def long_size(value: int) -> int:
    """Bytes of `encode_long(value)`, without encoding it."""
    zigzag = (value << 1) ^ (value >> 63)
    return max(1, (zigzag.bit_length() + 6) // 7)


def encode_string(text: str) -> bytes:
    """Avro's encoding of a string: its UTF-8 length as a long, then the bytes."""
    data = text.encode()
    return encode_long(len(data)) + data


def read_long(data: bytes, position: int) -> tuple[int, int]:
    """The long at `position` and the position after it; DecodeError when the varint is
    cut short or longer than a 64-bit long's ten bytes."""
    value = shift = 0
    end = position + MAX_LONG_BYTES
    try:
        while position < end:
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return (value >> 1) ^ -(value & 1), position
            shift += 7
    except IndexError:
        pass
    raise DecodeError("truncated or overlong Avro long")


def string_span(data: bytes, position: int) -> tuple[int, int]:
    """Where the bytes of the string at `position` start and end; DecodeError when its
    length is negative or runs past the data."""
    if position < len(data) and data[position] < 0x80:  # a one-byte length: most strings
        zigzag, start = data[position], position + 1
        length = (zigzag >> 1) ^ -(zigzag & 1)
    else:
        length, start = read_long(data, position)
    end = start + length
    if length < 0 or end > len(data):
        raise DecodeError("truncated Avro string")
    return start, end


def read_string(data: bytes, position: int) -> tuple[str, int]:
    """The string at `position` and the position after it; DecodeError when it is cut
    short or not UTF-8."""
    start, end = string_span(data, position)
    try:
        return data[start:end].decode(), end
    except UnicodeDecodeError as exc:
        raise DecodeError(f"Avro string is not UTF-8: {exc}") from exc


class Envelope(NamedTuple):
    """The envelope fields every record's body starts with, read from single-object bytes
    without decoding the rest; `hash_start`/`hash_end` are where `record_hash` (its length
    and text) lies in those bytes, `schema` the schema the header names. (A tuple: verify
    reads one per stored row, and a frozen dataclass costs twice as much to build.)"""

    event_id: str
    event_type: str
    occurred_at: int
    tenant_id: str
    producer_id: str
    seq: int
    prev_hash: str
    record_hash: str
    hash_start: int
    hash_end: int
    schema: SchemaEntry

    def computed_hash(self, data: bytes) -> str:
        """The record_hash its producer would have sealed `data` with: sha256 of prev_hash
        bytes and the body with record_hash cut to the empty string (whatever schema
        version wrote it). ValueError when prev_hash is not hex."""
        hashed = data[HEADER_BYTES : self.hash_start] + b"\x00" + data[self.hash_end :]
        return hashlib.sha256(bytes.fromhex(self.prev_hash) + hashed).hexdigest()


def read_envelope(data: bytes) -> Envelope:
    """The envelope of single-object bytes (of a schema of ours, checked);
    DecodeError when they are not."""
    schema = schema_of(data)
    event_id, at = read_string(data, HEADER_BYTES)
    event_type, at = read_string(data, at)
    occurred_at, at = read_long(data, at)
    tenant_id, at = read_string(data, at)
    producer_id, at = read_string(data, at)
    seq, at = read_long(data, at)
    prev_hash, hash_start = read_string(data, at)
    record_hash, hash_end = read_string(data, hash_start)
    return Envelope(
        event_id,
        event_type,
        occurred_at,
        tenant_id,
        producer_id,
        seq,
        prev_hash,
        record_hash,
        hash_start,
        hash_end,
        schema,
    )


UUID_CHARS = 36
UUID_LENGTH_BYTE = encode_long(UUID_CHARS)[0]  # the zig-zag varint of 36 fits one byte


def event_id_of(value: bytes) -> str:
    """The event_id of single-object bytes: the body's first field (a UUID's 36 characters
    are cut without a varint loop)."""
    if len(value) > HEADER_BYTES + UUID_CHARS and value[HEADER_BYTES] == UUID_LENGTH_BYTE:
        return value[HEADER_BYTES + 1 : HEADER_BYTES + 1 + UUID_CHARS].decode()
    return read_string(value, HEADER_BYTES)[0]


def producer_id_of(value: bytes) -> str:
    """The producer_id of single-object bytes, read from the envelope (fifth field) alone,
    skipping the fields before it undecoded."""
    spans = _envelope_spans(value)
    if spans is not None:
        try:
            return value[spans[2] : spans[3]].decode()
        except UnicodeDecodeError:
            pass  # the checked path says why
    return _producer_id_checked(value)


def _envelope_spans(value: bytes) -> tuple[int, int, int, int] | None:
    """Where event_id's and producer_id's bytes are (start, end, start, end) in the usual
    record (short strings with one-byte lengths, an occurred_at of up to ten bytes, all in
    bounds); None for anything else, which takes the checked path."""
    at = HEADER_BYTES
    size = len(value)
    if size > at + 60:
        first = value[at]
        if first < 0x80 and not first & 1:  # event_id
            event_end = at + 1 + (first >> 1)
            at = event_end
            second = value[at] if at < size else 0x80
            if second < 0x80 and not second & 1:  # event_type
                at += 1 + (second >> 1)
                end = at + 10
                while at < end and at < size and value[at] & 0x80:  # occurred_at
                    at += 1
                at += 1  # past its last byte (one past the end if it is cut or overlong)
                third = value[at] if at <= end and at < size else 0x80
                if third < 0x80 and not third & 1:  # tenant_id
                    at += 1 + (third >> 1)
                    fourth = value[at] if at < size else 0x80
                    if fourth < 0x80 and not fourth & 1 and at + 1 + (fourth >> 1) <= size:
                        return HEADER_BYTES + 1, event_end, at + 1, at + 1 + (fourth >> 1)
    return None


def _producer_id_checked(value: bytes) -> str:
    position = string_span(value, HEADER_BYTES)[1]  # event_id
    position = string_span(value, position)[1]  # event_type
    position = read_long(value, position)[1]  # occurred_at
    position = string_span(value, position)[1]  # tenant_id
    start, end = string_span(value, position)
    try:
        return value[start:end].decode()
    except UnicodeDecodeError as exc:
        raise DecodeError("producer_id is not UTF-8") from exc


def _envelope_size(record: Event, producer_id: str, seq: int, prev_hash: str) -> int:
    """Where `record_hash` starts in the body of `record` sealed with these: after the
    seven envelope fields before it (every record schema starts with the envelope, in
    this order)."""
    strings = (record.event_id, record.event_type, record.tenant_id, producer_id, prev_hash)
    size = sum(len(encode_string(text)) for text in strings)
    return size + long_size(record.occurred_at) + long_size(seq)


class HashChain:
    """One producer's chain: numbers its records from 1 and links each to the last.

    Not thread-safe: one chain per producer, used from one event loop.
    """

    def __init__(self, producer_id: str) -> None:
        assert producer_id, "a chain needs a producer id"
        self.producer_id = producer_id
        self.seq = 0
        self.head = GENESIS_HASH

    def seal(self, record: E) -> E:
        """The record with this producer's id, the next seq, prev_hash and record_hash."""
        return self.seal_encoded(record)[0]

    def seal_encoded(self, record: E) -> tuple[E, bytes]:
        """`seal`, and the sealed record's single-object encoding, encoding the body once:
        the hash covers the body with record_hash empty, which is one part to replace.
        The body is written from the record's own attributes (schemas.avro_writer: no
        dict built for fastavro), and the sealed record is built once, its slots copied
        (records.replaced): no dataclasses.replace, which cost about 25 µs a lineage
        record."""
        seq, prev_hash = self.seq + 1, self.head
        entry = _BY_TYPE[type(record)]
        if entry.writer is None:
            sealed_body, record_hash = self._sealed_by_fastavro(entry, record, seq, prev_hash)
        else:
            parts = avro_writer.write_parts(
                record, entry.writer, producer_id=self.producer_id, seq=seq, prev_hash=prev_hash
            )
            at = avro_writer.RECORD_HASH_PART
            assert parts[at : at + 2] == [b"\x00", b""], "an empty record_hash is the byte 0"
            record_hash = hashlib.sha256(bytes.fromhex(prev_hash) + b"".join(parts)).hexdigest()
            parts[at : at + 2] = [encode_long(len(record_hash)), record_hash.encode()]
            sealed_body = b"".join(parts)
        self.seq = seq
        self.head = record_hash
        sealed = replaced(
            record,
            producer_id=self.producer_id,
            seq=seq,
            prev_hash=prev_hash,
            record_hash=record_hash,
        )
        return sealed, MAGIC + entry.fingerprint + sealed_body

    def _sealed_by_fastavro(
        self, entry: SchemaEntry, record: Event, seq: int, prev_hash: str
    ) -> tuple[bytes, str]:
        """The sealed body and its hash, written by fastavro (a type with no compiled
        writer): the body encoded once with record_hash empty, then that byte replaced."""
        fields = record.to_avro()
        fields["producer_id"], fields["seq"] = self.producer_id, seq
        fields["prev_hash"], fields["record_hash"] = prev_hash, ""
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, entry.parsed, fields)
        body = buffer.getvalue()
        record_hash = hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()
        offset = _envelope_size(record, self.producer_id, seq, prev_hash)
        assert body[offset] == 0, "an empty record_hash is the one byte 0"
        sealed_body = body[:offset] + encode_string(record_hash) + body[offset + 1 :]
        # What verify reads back (read_envelope) is what was hashed and written.
        assert read_string(sealed_body, offset) == (record_hash, offset + 2 + len(record_hash))
        return sealed_body, record_hash


def envelope_ids_of(value: bytes) -> tuple[str, str, int]:
    """(event_id, producer_id, seq) of single-object bytes in one pass, the envelope's
    other fields skipped undecoded (the sink reads them for every record); DecodeError
    as `event_id_of` and `producer_seq_of` would raise it."""
    spans = _envelope_spans(value)
    if spans is not None and spans[3] < len(value):
        end = spans[3]
        zigzag = value[end]  # seq: one byte below 64
        seq = (zigzag >> 1) ^ -(zigzag & 1) if zigzag < 0x80 else read_long(value, end)[0]
        try:
            return value[spans[0] : spans[1]].decode(), value[spans[2] : end].decode(), seq
        except UnicodeDecodeError:
            pass  # the checked path says why
    event_id = read_string(value, HEADER_BYTES)[0]
    return (event_id, *producer_seq_of(value))


def producer_seq_of(value: bytes) -> tuple[str, int]:
    """(producer_id, seq) of single-object bytes, skipping the envelope's other fields
    undecoded; DecodeError when cut."""
    at = string_span(value, HEADER_BYTES)[1]  # event_id
    at = string_span(value, at)[1]  # event_type
    at = read_long(value, at)[1]  # occurred_at
    at = string_span(value, at)[1]  # tenant_id
    start, end = string_span(value, at)
    try:
        producer_id = value[start:end].decode()
    except UnicodeDecodeError as exc:
        raise DecodeError("producer_id is not UTF-8") from exc
    return producer_id, read_long(value, end)[0]
