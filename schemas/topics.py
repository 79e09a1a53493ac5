"""The topic catalogue: names, keys, and which topics are compacted state."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic of the catalogue."""

    name: str
    key: str
    compacted: bool
    doc: str


LINEAGE = Topic("govledger.lineage", "tenant_id", False, "One LineageRecord per gateway call.")
CONTROL = Topic(
    "govledger.control", "tenant_id", False, "Admin log: keys issued/revoked, wallets funded."
)
WALLET_STATE = Topic(
    "govledger.wallet-state", "wallet_id", True, "Latest WalletBalance per wallet."
)
BREAKER_STATE = Topic(
    "govledger.breaker-state", "provider/model", True, "Circuit-breaker state per target."
)
ALERTS = Topic("govledger.alerts", "tenant_id", False, "Quota, circuit and SLA alerts.")
ESCALATIONS = Topic("govledger.escalations", "tenant_id", False, "Escalation queue events.")
SLA = Topic("govledger.sla", "provider/model", False, "One-minute SLA windows.")
CHECKPOINTS = Topic(
    "govledger.checkpoints", "producer_id", False, "Producers' chain heads (ChainCheckpoint)."
)
DLQ = Topic("govledger.dlq", "origin topic", False, "Records that failed to decode or validate.")
STORED = Topic(
    "govledger.stored", "sink producer_id", False, "Seq ranges each sink batch stored (outboxes)."
)
NOTIFICATIONS = Topic(
    "govledger.notifications", "tenant_id", False, "Every webhook delivery attempt (notifier)."
)

CATALOGUE: tuple[Topic, ...] = (
    LINEAGE,
    CONTROL,
    WALLET_STATE,
    BREAKER_STATE,
    ALERTS,
    ESCALATIONS,
    SLA,
    CHECKPOINTS,
    DLQ,
    STORED,
    NOTIFICATIONS,
)

RESTORED_HEADER = "govledger-restored"
"""Header on records the runtime re-publishes from the store into an empty broker."""

RESENT_HEADER = "govledger-resent"
"""Header on records an outbox sends again: the sink looks each one up in the store."""
