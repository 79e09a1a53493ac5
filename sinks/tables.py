"""Which audit table holds which record type."""

from __future__ import annotations

from schemas.records import (
    DeadLetter,
    EscalationOpened,
    EscalationResolved,
    Event,
    KeyIssued,
    KeyRevoked,
    LineageRecord,
    PolicyPackPublished,
    WalletBalance,
    WalletFunded,
)

TABLE_FOR: dict[type[Event], str] = {
    LineageRecord: "lineage",
    KeyIssued: "control_events",
    KeyRevoked: "control_events",
    WalletFunded: "control_events",
    PolicyPackPublished: "control_events",
    EscalationResolved: "control_events",
    EscalationOpened: "escalation_events",
    WalletBalance: "wallet_state",
    DeadLetter: "dead_letters",
}
ALL_TABLES: tuple[str, ...] = tuple(dict.fromkeys(TABLE_FOR.values()))
