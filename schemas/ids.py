"""Identifiers made at the edges (gateway, admin API), never in pure logic."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import uuid


def uuid7(now_ms: int | None = None) -> str:
    """A UUIDv7 string: 48-bit millisecond timestamp, version 7, random tail (RFC 9562)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def now_ms() -> int:
    """Wall clock, UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000


def new_producer_id(role: str) -> str:
    """A producer id unique to this process start: its chain and seq begin anew."""
    return f"{role}-{secrets.token_hex(6)}"


def new_trace_id() -> str:
    """A W3C trace id."""
    return secrets.token_hex(16)


def new_span_id() -> str:
    """A W3C span id."""
    return secrets.token_hex(8)


def derived_uuid7(at_ms: int, *identity: str | int) -> str:
    """A UUIDv7-shaped id derived, not drawn: the 48-bit timestamp is `at_ms` (the moment
    the output is about, e.g. a window's start) and the other 74 bits come from SHA-256 of
    the natural key `identity`. A processor that derives the same output again (after a
    restart, a redelivery) gives it the same event id, so the sink's event-id dedupe keeps
    one row; ids still sort by time like the gateway's. Pure: same input, same id."""
    assert 0 <= at_ms < 1 << 48, "a UUIDv7 timestamp is 48-bit epoch ms"
    name = "\x1f".join(str(part) for part in identity).encode()
    digest = int.from_bytes(hashlib.sha256(name).digest()[:10], "big")
    value = at_ms << 80
    value |= 0x7 << 76
    value |= ((digest >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= digest & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
