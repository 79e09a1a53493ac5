"""Batches of records as Avro object container files, for ClickHouse to decode.

A record on the wire is a 10-byte header and the Avro body. Appending a `raw: bytes`
field to the schema appends `zigzag(len) ‖ bytes` to each body (and a trailing `auth`
string, the record's authentication header, the same), so a batch of
records-with-raw is built by concatenation alone: the sink never decodes a field in
Python, ClickHouse does (FORMAT Avro), and each row keeps its exact wire bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache

from schemas import codec
from schemas.codec import HEADER_BYTES, SchemaEntry

SYNC_MARKER = b"govledger-sync16"
assert len(SYNC_MARKER) == 16


@lru_cache(maxsize=65_536)
def zigzag_varint(value: int) -> bytes:
    """Avro's encoding of a long (cached: record lengths repeat)."""
    encoded = (value << 1) ^ (value >> 63)
    out = bytearray()
    while encoded & ~0x7F:
        out.append((encoded & 0x7F) | 0x80)
        encoded >>= 7
    out.append(encoded)
    return bytes(out)


def read_string(buffer: bytes, position: int) -> tuple[str, int]:
    """An Avro string at position, and the position after it."""
    length = 0
    shift = 0
    while True:
        if position >= len(buffer) or shift > 63:
            raise codec.DecodeError("truncated Avro string")
        byte = buffer[position]
        position += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    length = (length >> 1) ^ -(length & 1)
    end = position + length
    if length < 0 or end > len(buffer):
        raise codec.DecodeError("truncated Avro string")
    return buffer[position:end].decode(), end


UUID_CHARS = 36
UUID_LENGTH_BYTE = UUID_CHARS * 2  # zigzag varint of 36 fits one byte


def event_id_of(value: bytes) -> str:
    """The event_id of a single-object encoded record: the body's first field."""
    if len(value) > HEADER_BYTES + UUID_CHARS and value[HEADER_BYTES] == UUID_LENGTH_BYTE:
        return value[HEADER_BYTES + 1 : HEADER_BYTES + 1 + UUID_CHARS].decode()
    return read_string(value, HEADER_BYTES)[0]


def insert_columns(entry: SchemaEntry, present: Iterable[str]) -> list[str]:
    """The columns the sink names when it inserts records of `entry` into a table with the
    `present` columns: every field of the record that the table has, then `raw`. ClickHouse
    fills each from the Avro field of that name; the table's other columns take their
    defaults. The one statement of that mapping (the writer and `replay.columns` use it)."""
    has = set(present)
    return [f["name"] for f in entry.source["fields"] if f["name"] in has] + ["raw"]


_HEADERS: dict[tuple[bytes, bool], bytes] = {}


def container_header(entry: SchemaEntry, *, with_auth: bool = False) -> bytes:
    """The container-file header for a schema extended with a trailing `raw` field (and
    `auth` after it)."""
    known = _HEADERS.get((entry.fingerprint, with_auth))
    if known is not None:
        return known
    added = [_RAW_FIELD, _AUTH_FIELD] if with_auth else [_RAW_FIELD]
    extended = {**entry.source, "fields": [*entry.source["fields"], *added]}
    meta = {b"avro.schema": json.dumps(extended).encode(), b"avro.codec": b"null"}
    header = bytearray(b"Obj\x01")
    header += zigzag_varint(len(meta))
    for key, value in meta.items():
        header += zigzag_varint(len(key)) + key + zigzag_varint(len(value)) + value
    header += zigzag_varint(0) + SYNC_MARKER
    _HEADERS[(entry.fingerprint, with_auth)] = bytes(header)
    return _HEADERS[(entry.fingerprint, with_auth)]


_RAW_FIELD = {"name": "raw", "type": "bytes", "doc": "The record's wire bytes."}
_AUTH_FIELD = {"name": "auth", "type": "bytes", "doc": "The record's govledger-auth header."}


def container_file(
    entry: SchemaEntry, values: Sequence[bytes], auths: Sequence[bytes] | None = None
) -> bytes:
    """One container file holding every value (wire bytes of `entry`'s schema) with raw,
    and with each value's auth header when `auths` is given."""
    assert values, "a container file needs at least one record"
    if auths is None:
        data = b"".join([v[HEADER_BYTES:] + zigzag_varint(len(v)) + v for v in values])
    else:
        assert len(auths) == len(values), "one auth per value"
        data = b"".join(
            [
                v[HEADER_BYTES:] + zigzag_varint(len(v)) + v + zigzag_varint(len(a)) + a
                for v, a in zip(values, auths, strict=True)
            ]
        )
    return b"".join(
        (
            container_header(entry, with_auth=auths is not None),
            zigzag_varint(len(values)),
            zigzag_varint(len(data)),
            data,
            SYNC_MARKER,
        )
    )
