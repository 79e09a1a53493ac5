"""Which audit table holds which record type."""

from __future__ import annotations

from schemas.notify_records import NotificationAttempted, NotifyRouteAdded, NotifyRouteRemoved
from schemas.records import (
    BreakerState,
    ChainCheckpoint,
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
    OrgBaselinePublished,
    PolicyPackPublished,
    PricePublished,
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
    ChainCheckpoint: "chain_checkpoints",
    OrgBaselinePublished: "control_events",
    PricePublished: "control_events",
    NotifyRouteAdded: "control_events",
    NotifyRouteRemoved: "control_events",
    NotificationAttempted: "notifications",
}
ALL_TABLES: tuple[str, ...] = tuple(dict.fromkeys(TABLE_FOR.values()))

# Each table's sort key, as its migration declares it: `audit verify` pages through a table
# in this order (a range read of the primary index). The SQL endpoint does not show
# `system.tables` (it holds file paths), so the key is declared here and
# tests/integration/test_audit_columns.py checks it against the engine.
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "lineage": ("tenant_id", "occurred_at", "event_id"),
    "control_events": ("tenant_id", "occurred_at", "event_id"),
    "wallet_state": ("tenant_id", "wallet_id", "entry_count", "event_id"),
    "dead_letters": ("occurred_at", "event_id"),
    "escalation_events": ("tenant_id", "occurred_at", "event_id"),
    "alerts": ("tenant_id", "occurred_at", "event_id"),
    "breaker_state": ("provider", "model", "occurred_at", "event_id"),
    "sla_windows": ("tenant_id", "provider", "model", "window_start", "revision", "event_id"),
    "chain_checkpoints": ("producer_id", "seq", "event_id"),
    "notifications": ("tenant_id", "occurred_at", "event_id"),
}

# Records the sink dropped as duplicates by event_id but that sit at another place in a
# chain (another producer or seq) than the stored copy: kept as chain evidence, not data
# (migration 010). `audit verify` walks them with CHAINED_TABLES; reports, exports and the
# column check read ALL_TABLES only.
LINKS_TABLE = "chain_links"
CHAINED_TABLES: tuple[str, ...] = (*ALL_TABLES, LINKS_TABLE)
