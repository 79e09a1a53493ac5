"""How each record type becomes a row of its audit table."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from schemas.records import (
    DeadLetter,
    Event,
    KeyIssued,
    KeyRevoked,
    LineageRecord,
    WalletBalance,
    WalletFunded,
)

ENVELOPE = (
    "event_id",
    "occurred_at",
    "tenant_id",
    "producer_id",
    "seq",
    "prev_hash",
    "record_hash",
)


@dataclasses.dataclass(frozen=True, slots=True)
class TableMapping:
    """A table, its columns, and how to make a row of it."""

    table: str
    columns: tuple[str, ...]
    row: Callable[[Any, bytes], tuple[Any, ...]]


def _envelope(record: Event) -> tuple[Any, ...]:
    return (
        record.event_id,
        record.occurred_at,
        record.tenant_id,
        record.producer_id,
        record.seq,
        record.prev_hash,
        record.record_hash,
    )


LINEAGE_FIELDS = tuple(
    f.name for f in dataclasses.fields(LineageRecord) if f.name not in (*ENVELOPE, "event_type")
)


def _lineage_row(record: LineageRecord, raw: bytes) -> tuple[Any, ...]:
    values = []
    for name in LINEAGE_FIELDS:
        value = getattr(record, name)
        if name in ("attempts", "guardrails_triggered"):
            value = [dataclasses.astuple(item) for item in value]
        elif name == "policies_applied":
            value = list(value)
        values.append(value)
    return (*_envelope(record), record.event_type, *values, raw)


def _control_row(record: Event, raw: bytes) -> tuple[Any, ...]:
    detail = {
        f.name: getattr(record, f.name)
        for f in dataclasses.fields(record)
        if f.name not in ENVELOPE and f.name != "key_sha256"
    }
    return (
        *_envelope(record),
        record.event_type,
        getattr(record, "team_id", ""),
        getattr(record, "key_id", ""),
        getattr(record, "wallet_id", ""),
        getattr(record, "amount_nanousd", 0),
        orjson.dumps(detail).decode(),
        raw,
    )


def _wallet_row(record: WalletBalance, raw: bytes) -> tuple[Any, ...]:
    return (
        *_envelope(record),
        record.wallet_id,
        record.team_id,
        record.balance_nanousd,
        record.funded_nanousd,
        record.spent_nanousd,
        record.entry_count,
        record.last_event_id,
        record.last_occurred_at,
        dict(record.applied_seqs),
        raw,
    )


def _dead_letter_row(record: DeadLetter, raw: bytes) -> tuple[Any, ...]:
    return (
        *_envelope(record),
        record.origin_topic,
        record.origin_partition,
        record.origin_offset,
        record.consumer,
        record.error,
        record.payload,
        raw,
    )


LINEAGE = TableMapping("lineage", (*ENVELOPE, "event_type", *LINEAGE_FIELDS, "raw"), _lineage_row)
CONTROL = TableMapping(
    "control_events",
    (*ENVELOPE, "event_type", "team_id", "key_id", "wallet_id", "amount_nanousd", "detail", "raw"),
    _control_row,
)
WALLET_STATE = TableMapping(
    "wallet_state",
    (
        *ENVELOPE,
        "wallet_id",
        "team_id",
        "balance_nanousd",
        "funded_nanousd",
        "spent_nanousd",
        "entry_count",
        "last_event_id",
        "last_occurred_at",
        "applied_seqs",
        "raw",
    ),
    _wallet_row,
)
DEAD_LETTERS = TableMapping(
    "dead_letters",
    (
        *ENVELOPE,
        "origin_topic",
        "origin_partition",
        "origin_offset",
        "consumer",
        "error",
        "payload",
        "raw",
    ),
    _dead_letter_row,
)

BY_RECORD_TYPE: dict[type[Event], TableMapping] = {
    LineageRecord: LINEAGE,
    KeyIssued: CONTROL,
    KeyRevoked: CONTROL,
    WalletFunded: CONTROL,
    WalletBalance: WALLET_STATE,
    DeadLetter: DEAD_LETTERS,
}
ALL_TABLES: Sequence[TableMapping] = (LINEAGE, CONTROL, WALLET_STATE, DEAD_LETTERS)
