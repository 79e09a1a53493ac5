"""Batches of records as Avro object container files, for ClickHouse to decode.

A record on the wire is a 10-byte header and the Avro body. Putting a `fixed(10)` field
first (the header: no column takes it, so ClickHouse skips it) and appending a `raw:
bytes` field to the schema makes each row `wire bytes ‖ zigzag(len) ‖ wire bytes` (and a
trailing `auth` bytes, the record's authentication header, the same way), so a batch of
records-with-raw is built by concatenation alone, without even cutting the header off
(a copy of each record): the sink never decodes a field in Python, ClickHouse does
(FORMAT Avro), and each row keeps its exact wire bytes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

import fastavro

from schemas.codec import HEADER_BYTES, SchemaEntry, encode_long

SYNC_MARKER = b"govledger-sync16"
assert len(SYNC_MARKER) == 16


def insert_columns(entry: SchemaEntry, present: Iterable[str]) -> list[str]:
    """The columns the sink names when it inserts records of `entry` into a table with the
    `present` columns: every field of the record that the table has, then `raw`. ClickHouse
    fills each from the Avro field of that name; the table's other columns take their
    defaults. The one statement of that mapping (the writer and `replay.columns` use it)."""
    has = set(present)
    return [f["name"] for f in entry.source["fields"] if f["name"] in has] + ["raw"]


_HEADERS: dict[tuple[bytes, bool], bytes] = {}


def container_header(entry: SchemaEntry, *, with_auth: bool = False) -> bytes:
    """The container-file header for a schema extended with a leading `wire_header` field
    and a trailing `raw` field (and `auth` after it)."""
    known = _HEADERS.get((entry.fingerprint, with_auth))
    if known is not None:
        return known
    added = [_RAW_FIELD, _AUTH_FIELD] if with_auth else [_RAW_FIELD]
    assert all(f["name"] != _WIRE_HEADER_FIELD["name"] for f in entry.source["fields"])
    extended = {**entry.source, "fields": [_WIRE_HEADER_FIELD, *entry.source["fields"], *added]}
    meta = {b"avro.schema": json.dumps(extended).encode(), b"avro.codec": b"null"}
    header = bytearray(b"Obj\x01")
    header += encode_long(len(meta))
    for key, value in meta.items():
        header += encode_long(len(key)) + key + encode_long(len(value)) + value
    header += encode_long(0) + SYNC_MARKER
    # Once per schema: the header is one fastavro reads back, with the extended schema.
    read_back: Any = fastavro.reader(io.BytesIO(bytes(header))).writer_schema
    assert [f["name"] for f in read_back["fields"]] == [f["name"] for f in extended["fields"]]
    _HEADERS[(entry.fingerprint, with_auth)] = bytes(header)
    return _HEADERS[(entry.fingerprint, with_auth)]


_WIRE_HEADER_FIELD = {
    "name": "wire_header",
    "type": {"type": "fixed", "name": "WireHeader", "size": HEADER_BYTES},
    "doc": "The wire header (magic byte, schema fingerprint); no column takes it.",
}
_RAW_FIELD = {"name": "raw", "type": "bytes", "doc": "The record's wire bytes."}
_AUTH_FIELD = {"name": "auth", "type": "bytes", "doc": "The record's govledger-auth header."}


_SHORT_LONGS = tuple(encode_long(n) for n in range(1 << 14))


class _LongOf:
    """encode_long by index, for lengths past the table."""

    def __getitem__(self, n: int) -> bytes:
        return encode_long(n)


def container_file(
    entry: SchemaEntry, values: Sequence[bytes], auths: Sequence[bytes] | None = None
) -> bytes:
    """One container file holding every value (wire bytes of `entry`'s schema) with raw,
    and with each value's auth header when `auths` is given."""
    header = container_header(entry, with_auth=auths is not None)
    return header + container_block(values, auths)


def container_block(values: Sequence[bytes], auths: Sequence[bytes] | None = None) -> bytes:
    """One data block of a container file (count, size, records, sync marker): a file is
    its header and any number of blocks, so a batch can be encoded as it is polled."""
    assert values, "a container block needs at least one record"
    # Lengths from a table (records and headers are short); any longer takes encode_long.
    short = len(_SHORT_LONGS)
    longs: Any = _SHORT_LONGS
    if max(map(len, values)) >= short or (auths is not None and max(map(len, auths)) >= short):
        longs = _LongOf()
    if auths is None:
        data = b"".join([part for v in values for part in (v, longs[len(v)], v)])
    else:
        assert len(auths) == len(values), "one auth per value"
        # One join of every piece: no per-record concatenation (each copied the record).
        data = b"".join(
            [
                part
                for v, a in zip(values, auths, strict=True)
                for part in (v, longs[len(v)], v, longs[len(a)], a)
            ]
        )
    return b"".join((encode_long(len(values)), encode_long(len(data)), data, SYNC_MARKER))
