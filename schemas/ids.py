"""Identifiers made at the edges (gateway, admin API), never in pure logic."""

from __future__ import annotations

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
