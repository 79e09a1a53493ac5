"""Avro single-object encoding: marker C3 01, 8-byte CRC-64-AVRO fingerprint (little endian)
of the schema's Parsing Canonical Form, then the Avro binary body. No registry is needed:
the fingerprint names the schema among the `.avsc` files.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, TypeVar

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.records import GENESIS_HASH, RECORD_TYPES, Event

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
    types = {t.schema_name.rsplit(".", 1)[1]: t for t in RECORD_TYPES}
    for source in load_schema_sources().values():
        name = f"{source['namespace']}.{source['name']}"
        pcf = to_parsing_canonical_form(source)
        fp = bytes.fromhex(fingerprint(pcf, "CRC-64-AVRO"))
        parsed = fastavro.parse_schema(_strip_logical_types(copy.deepcopy(source)))
        entry = SchemaEntry(name, fp, parsed, types[source["name"]], source)
        assert fp not in by_fingerprint, f"fingerprint clash: {name}"
        by_fingerprint[fp] = entry
        if name == entry.record_type.schema_name:
            by_type[entry.record_type] = entry
    assert set(by_type) == set(RECORD_TYPES), "every record type needs its writer schema"
    return by_fingerprint, by_type


_BY_FINGERPRINT, _BY_TYPE = _build_registry()


def schema_for(record_type: type[Event]) -> SchemaEntry:
    """The schema entry of a record type."""
    return _BY_TYPE[record_type]


def encode_body(record: Event) -> bytes:
    """The Avro binary body of a record, without the single-object header."""
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


def decode(data: bytes) -> Event:
    """Decode single-object bytes into the typed record; DecodeError if not ours."""
    entry = schema_of(data)
    try:
        raw = fastavro.schemaless_reader(io.BytesIO(data[HEADER_BYTES:]), entry.parsed, None)
        assert isinstance(raw, dict), "a record schema reads as a dict"
        return entry.record_type.from_avro(raw)
    except (EOFError, ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError) as exc:
        raise DecodeError(f"{entry.name}: body does not decode: {exc}") from exc


def decode_as(data: bytes, record_type: type[E]) -> E:
    """Decode and check the record is of the expected type."""
    record = decode(data)
    if not isinstance(record, record_type):
        raise DecodeError(f"expected {record_type.schema_name}, got {type(record).schema_name}")
    return record


def compute_record_hash(record: Event) -> str:
    """sha256(prev_hash bytes ‖ Avro body with record_hash empty), as hex."""
    body = encode_body(replace(record, record_hash=""))
    return hashlib.sha256(bytes.fromhex(record.prev_hash) + body).hexdigest()


def _varint_bytes(value: int) -> int:
    """Bytes of Avro's zig-zag varint encoding of a long."""
    zigzag = (value << 1) ^ (value >> 63)
    return max(1, (zigzag.bit_length() + 6) // 7)


def _string_bytes(text: str) -> bytes:
    data = text.encode()
    return _varint(len(data)) + data


def _varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def _record_hash_offset(record: Event) -> int:
    """Where `record_hash` starts in the body: after the seven envelope fields before it
    (every record schema starts with the envelope, in this order)."""
    strings = (record.event_id, record.event_type, record.tenant_id, record.producer_id)
    size = sum(len(_string_bytes(text)) for text in strings)
    size += _varint_bytes(record.occurred_at) + _varint_bytes(record.seq)
    return size + len(_string_bytes(record.prev_hash))


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
        linked = replace(
            record,
            producer_id=self.producer_id,
            seq=self.seq + 1,
            prev_hash=self.head,
            record_hash="",
        )
        sealed = replace(linked, record_hash=compute_record_hash(linked))
        self.seq += 1
        self.head = sealed.record_hash
        return sealed

    def seal_encoded(self, record: E) -> tuple[E, bytes]:
        """`seal`, and the sealed record's single-object encoding, encoding the body once:
        the hash covers the body with record_hash empty, which is one byte to replace."""
        linked = replace(
            record,
            producer_id=self.producer_id,
            seq=self.seq + 1,
            prev_hash=self.head,
            record_hash="",
        )
        body = encode_body(linked)
        record_hash = hashlib.sha256(bytes.fromhex(linked.prev_hash) + body).hexdigest()
        offset = _record_hash_offset(linked)
        assert body[offset] == 0, "an empty record_hash is the one byte 0"
        sealed_body = body[:offset] + _string_bytes(record_hash) + body[offset + 1 :]
        self.seq += 1
        self.head = record_hash
        entry = _BY_TYPE[type(record)]
        return replace(linked, record_hash=record_hash), MAGIC + entry.fingerprint + sealed_body
