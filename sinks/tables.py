"""Which audit table holds which record type."""

from __future__ import annotations

from schemas.records import (
    BreakerState,
    CircuitChanged,
    DeadLetter,
    EscalationChanged,
    EscalationOpened,
    EscalationResolved,
    EscalationSlaBreached,
    Event,
    KeyIssued,
    KeyRevoked,
    LineageRecord,
    PolicyPackPublished,
    QuotaThresholdCrossed,
    SlaBreached,
    SlaWindow,
    WalletAllocated,
    WalletBalance,
    WalletBudgetSet,
    WalletCorrected,
    WalletFunded,
    WalletLimitSet,
    WalletRefunded,
)

TABLE_FOR: dict[type[Event], str] = {
    LineageRecord: "lineage",
    KeyIssued: "control_events",
    KeyRevoked: "control_events",
    WalletFunded: "control_events",
    PolicyPackPublished: "control_events",
    EscalationResolved: "control_events",
    EscalationOpened: "escalation_events",
    WalletBudgetSet: "control_events",
    EscalationChanged: "control_events",
    WalletAllocated: "control_events",
    WalletRefunded: "control_events",
    WalletCorrected: "control_events",
    WalletLimitSet: "control_events",
    BreakerState: "breaker_state",
    SlaWindow: "sla_windows",
    CircuitChanged: "alerts",
    QuotaThresholdCrossed: "alerts",
    SlaBreached: "alerts",
    EscalationSlaBreached: "alerts",
    WalletBalance: "wallet_state",
    DeadLetter: "dead_letters",
}
ALL_TABLES: tuple[str, ...] = tuple(dict.fromkeys(TABLE_FOR.values()))
