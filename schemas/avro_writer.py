"""Avro binary writers compiled from our record schemas, reading the record dataclasses'
attributes directly: the bytes fastavro writes for `record.to_avro()`, without building
that dict first. Sealing a lineage record spent 60-75 µs in the two (about 25 µs building
the dict, the rest in fastavro's per-field dispatch); every call the gateway answers seals
one.

Built from the parsed schema at start, one closure per field. What it does not know (a
union other than null and one type, a fixed, a recursive type) makes `compile_writer`
answer None, and codec keeps fastavro for that type. fastavro stays the reference:
tests/property/test_avro_writer.py checks every record type, varied, byte for byte.

Stricter than fastavro where the data is wrong (a type or range the schema does not
hold), which would be our bug: TypeError or ValueError, never bytes a reader would
misread.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

Out = list[bytes]
Write = Callable[[Out, Any], None]
"""Appends the encoding of one value to the output."""

LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1
INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1
ENVELOPE_FIELDS = (
    "event_id",
    "event_type",
    "occurred_at",
    "tenant_id",
    "producer_id",
    "seq",
    "prev_hash",
    "record_hash",
)
"""Every record schema starts with these, in this order (schemas/avro/*.avsc)."""
ENVELOPE_TYPES = {
    name: "long" if name in ("occurred_at", "seq") else "string" for name in ENVELOPE_FIELDS
}

_DOUBLE = struct.Struct("<d").pack
_FLOAT = struct.Struct("<f").pack
_TRUE, _FALSE, _EMPTY = b"\x01", b"\x00", b"\x00"


class UnsupportedSchemaError(Exception):
    """A schema this module does not compile (codec keeps fastavro for it)."""


@lru_cache(maxsize=65_536)
def encode_long(value: int) -> bytes:
    """Avro's zig-zag varint encoding of a long (cached: lengths and indexes repeat)."""
    assert LONG_MIN <= value <= LONG_MAX, f"{value} is not an Avro long"
    return varint(value)


def varint(value: int) -> bytes:
    """A zig-zag varint, uncached: timestamps and amounts rarely repeat."""
    zigzag = (value << 1) ^ (value >> 63)
    if zigzag < 0x80:
        return bytes((zigzag,))
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def _string(out: Out, value: Any) -> None:
    if type(value) is not str:
        raise TypeError(f"expected a string, got {type(value).__name__}")
    data = value.encode()
    out.append(encode_long(len(data)))
    out.append(data)


def _bytes(out: Out, value: Any) -> None:
    if type(value) is not bytes:
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    out.append(encode_long(len(value)))
    out.append(value)


def _long(out: Out, value: Any) -> None:
    if type(value) is not int or not LONG_MIN <= value <= LONG_MAX:
        raise ValueError(f"{value!r} is not an Avro long")
    out.append(varint(value))


def _int(out: Out, value: Any) -> None:
    if type(value) is not int or not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"{value!r} is not an Avro int")
    out.append(varint(value))


def _double(out: Out, value: Any) -> None:
    if type(value) not in (float, int):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    out.append(_DOUBLE(value))


def _float(out: Out, value: Any) -> None:
    if type(value) not in (float, int):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    out.append(_FLOAT(value))


def _boolean(out: Out, value: Any) -> None:
    if type(value) is not bool:
        raise TypeError(f"expected a boolean, got {type(value).__name__}")
    out.append(_TRUE if value else _FALSE)


def _null(out: Out, value: Any) -> None:
    if value is not None:
        raise TypeError(f"expected null, got {type(value).__name__}")


PRIMITIVES: dict[str, Write] = {
    "string": _string,
    "bytes": _bytes,
    "long": _long,
    "int": _int,
    "double": _double,
    "float": _float,
    "boolean": _boolean,
    "null": _null,
}


def _optional(branches: list[Any], names: dict[str, Any]) -> Write:
    if len(branches) != 2 or "null" not in branches:
        raise UnsupportedSchemaError(f"union {branches!r}")
    null_at = encode_long(branches.index("null"))
    other_at = encode_long(1 - branches.index("null"))
    write = _compile(branches[1 - branches.index("null")], names)

    def optional(out: Out, value: Any) -> None:
        if value is None:
            out.append(null_at)
        else:
            out.append(other_at)
            write(out, value)

    return optional


def _enum(symbols: list[str]) -> Write:
    indexes = {symbol: encode_long(n) for n, symbol in enumerate(symbols)}

    def enum(out: Out, value: Any) -> None:
        index = indexes.get(value) if type(value) is str else None
        if index is None:
            raise ValueError(f"{value!r} is not one of {symbols}")
        out.append(index)

    return enum


def _array(items: Write) -> Write:
    def array(out: Out, value: Any) -> None:
        if type(value) not in (tuple, list):
            raise TypeError(f"expected a sequence, got {type(value).__name__}")
        if value:
            out.append(encode_long(len(value)))
            for item in value:
                items(out, item)
        out.append(_EMPTY)

    return array


def _map(values: Write) -> Write:
    def mapping(out: Out, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a mapping, got {type(value).__name__}")
        if value:
            out.append(encode_long(len(value)))
            for key, item in value.items():
                _string(out, key)
                values(out, item)
        out.append(_EMPTY)

    return mapping


def record_fields(schema: Mapping[str, Any], names: dict[str, Any]) -> list[tuple[str, Write]]:
    """Each field's name and writer, in the schema's order."""
    return [(field["name"], _compile(field["type"], names)) for field in schema["fields"]]


def _record(schema: Mapping[str, Any], names: dict[str, Any]) -> Write:
    fields = record_fields(schema, names)

    def record(out: Out, value: Any) -> None:
        if isinstance(value, Mapping):
            for name, write in fields:
                write(out, value[name])
        else:  # a nested record dataclass (Attempt, GuardrailTrigger, ...)
            for name, write in fields:
                write(out, getattr(value, name))

    return record


def _compile(schema: Any, names: dict[str, Any]) -> Write:
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return PRIMITIVES[schema]
        if schema in names:
            if names[schema] is None:
                raise UnsupportedSchemaError(f"recursive type {schema}")
            return names[schema]  # type: ignore[no-any-return]
        raise UnsupportedSchemaError(f"unknown type {schema}")
    if isinstance(schema, list):
        return _optional(schema, names)
    kind = schema.get("type")
    if isinstance(kind, str) and kind in PRIMITIVES:
        return PRIMITIVES[kind]
    if kind == "enum":
        write = _enum(list(schema["symbols"]))
    elif kind == "array":
        return _array(_compile(schema["items"], names))
    elif kind == "map":
        return _map(_compile(schema["values"], names))
    elif kind == "record":
        names[schema["name"]] = None  # known, not yet built: a reference now is recursion
        write = _record(schema, names)
    else:
        raise UnsupportedSchemaError(f"type {kind!r}")
    names[schema["name"]] = write
    return write


def compile_writer(parsed: Any) -> list[tuple[str, Write]] | None:
    """The top-level record's fields after the envelope, with their writers; None when the
    schema holds something this module does not write (fastavro writes that type)."""
    if not isinstance(parsed, Mapping) or parsed.get("type") != "record":
        return None
    try:
        fields = record_fields(parsed, {parsed["name"]: None})
    except UnsupportedSchemaError:
        return None
    envelope = [
        (field["name"], kind if isinstance(kind := field["type"], str) else kind.get("type"))
        for field in parsed["fields"][: len(ENVELOPE_FIELDS)]
    ]
    if envelope != list(ENVELOPE_TYPES.items()):
        return None  # write_body writes the envelope as these
    return fields[len(ENVELOPE_FIELDS) :]


RECORD_HASH_PART = 12
"""Where `write_parts` puts record_hash: its length at this index, its bytes at the next."""


def write_parts(
    record: Any,
    rest: list[tuple[str, Write]],
    *,
    producer_id: str,
    seq: int,
    prev_hash: str,
    record_hash: str = "",
) -> list[bytes]:
    """The record's Avro body, in parts, with the given envelope (the chain's fields) and
    its own attributes for the rest: joined, they are the body."""
    out: Out = []
    _string(out, record.event_id)
    _string(out, record.event_type)
    _long(out, record.occurred_at)
    _string(out, record.tenant_id)
    _string(out, producer_id)
    _long(out, seq)
    _string(out, prev_hash)
    assert len(out) == RECORD_HASH_PART, out
    _string(out, record_hash)
    for name, write in rest:
        write(out, getattr(record, name))
    return out
