"""Restore an empty broker from the store (the system of record).

Tansu's memory storage is gone when it stops. Before the processors and gateways start,
this re-publishes the admin log (so gateways know every key), the escalations opened and
the escalation breaches paged (so the escalations processor rebuilds its queues and pages
no breach twice), and the wallet balances folded from history with
`streams.wallets.logic` (so processors and gateways resume from exact balances).
Re-published records carry the restored header: the sink skips them, the folds are
idempotent, so nothing is counted twice.

The admin log and the escalation records go back byte for byte with the `govledger-auth`
header the sink stored with each record, checked again first: a stored record whose
authentication does not verify (a row written into the store by hand) is not restored.
The balances are new records, signed by the restoring producer as a processor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from replay.history import merged_by_producer, read_events
from schemas import authn, codec
from schemas.authn import SignedChain
from schemas.ids import now_ms, uuid7
from schemas.kafka import make_producer
from schemas.kafka_security import client_options
from schemas.records import (
    EscalationSlaBreached,
    Event,
    WalletAllocated,
    WalletCorrected,
    WalletFunded,
    WalletLimitSet,
    WalletRefunded,
)
from schemas.topics import ALERTS, CONTROL, ESCALATIONS, RESTORED_HEADER, WALLET_STATE
from sinks.store import Store
from streams.wallets import logic as wallets

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What a restore re-published."""

    control_events: int
    wallets: int
    escalation_records: int = 0


ESCALATION_BREACHED = EscalationSlaBreached.event_type_name

WALLET_CONTROL_TYPES = (
    WalletFunded.event_type_name,
    WalletAllocated.event_type_name,
    WalletRefunded.event_type_name,
    WalletCorrected.event_type_name,
    WalletLimitSet.event_type_name,
)


def fold_wallets(store: Store) -> dict[str, wallets.Wallet]:
    """Every wallet as its recorded journal makes it: the admin log's wallet events
    (fundings, allocations, refunds, corrections, limits) in partition order, which
    decides transfers as live processing did, then the settlements (never decided, so
    their place relative to the admin log changes no balance)."""
    types = ", ".join(f"'{t}'" for t in WALLET_CONTROL_TYPES)
    control = read_events(store, "control_events", f"event_type IN ({types})")
    settled = read_events(store, "lineage", "cost_nanousd > 0 AND wallet_id != ''")
    return wallets.fold(settled, wallets.fold(merged_by_producer(control)))


async def broker_is_empty(bootstrap: str) -> bool:
    """Whether the control topic has never held a record (a fresh broker)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **client_options()
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(CONTROL.name) or set()
        tps = [TopicPartition(CONTROL.name, p) for p in partitions]
        ends = await consumer.end_offsets(tps) if tps else {}
        return all(offset == 0 for offset in ends.values())
    finally:
        await consumer.stop()


def authenticated_control(store: Store) -> list[tuple[Event, bytes, bytes]]:
    """The admin log in time order, as (record, wire bytes, auth header), leaving out
    (and logging) each record whose stored authentication does not verify."""
    return authenticated_rows(store, "control_events", CONTROL.name)


def authenticated_rows(
    store: Store, table: str, topic: str, where: str = ""
) -> list[tuple[Event, bytes, bytes]]:
    """A table's records (those `where` keeps) in time order, each producer's in seq
    order, as (record, wire bytes, auth header), checked again as records of `topic`;
    one whose stored authentication does not verify is left out and logged."""
    rows = store.query_rows(
        f"SELECT hex(raw), hex(auth) FROM {table} {where} "  # noqa: S608 - names from this module
        "ORDER BY occurred_at, producer_id, seq"
    )
    verifier = authn.verifier()
    kept = []
    for raw_hex, auth_hex in rows:
        raw, auth = bytes.fromhex(raw_hex), bytes.fromhex(auth_hex)
        try:
            verifier.check(topic, raw, auth)
            kept.append((codec.decode(raw), raw, auth))
        except codec.DecodeError as exc:
            log.error("stored record not restored", table=table, reason=str(exc))  # noqa: TRY400 - the reason is the message
    return kept


def escalation_history(store: Store) -> list[tuple[str, Event, bytes, bytes]]:
    """What the escalation queues are rebuilt from besides the admin log, as (topic,
    record, wire bytes, auth header): every escalation opened (`govledger.escalations`)
    and every escalation breach paged (`govledger.alerts`). Without them a broker that
    came back empty leaves the escalations processor (and the gateways' views) with no
    open escalation, and a breach already paged would page again."""
    opened = authenticated_rows(store, "escalation_events", ESCALATIONS.name)
    paged = authenticated_rows(
        store, "alerts", ALERTS.name, f"WHERE event_type = '{ESCALATION_BREACHED}'"
    )
    return [(ESCALATIONS.name, *row) for row in opened] + [(ALERTS.name, *row) for row in paged]


async def restore(store: Store, bootstrap: str, producer_id: str) -> RestoreReport:
    """Re-publish control events and folded balances into an empty broker."""
    control = await store.run(authenticated_control, store)
    escalations = await store.run(escalation_history, store)
    folded: dict[str, wallets.Wallet] = await store.run(fold_wallets, store)
    producer: Any = make_producer(bootstrap, client_id=producer_id)
    restored = (RESTORED_HEADER, b"1")
    await producer.start()
    try:
        for event, raw, auth in control:
            await producer.send(
                CONTROL.name,
                raw,
                key=event.tenant_id.encode(),
                headers=[restored, (authn.HEADER, auth)],
            )
        for topic, event, raw, auth in escalations:
            await producer.send(
                topic, raw, key=event.tenant_id.encode(), headers=[restored, (authn.HEADER, auth)]
            )
        chain = SignedChain(producer_id, "processor")
        for wallet in folded.values():
            _, value = chain.seal_encoded(
                wallets.to_balance(wallet, event_id=uuid7(), occurred_at=now_ms())
            )
            await producer.send(
                WALLET_STATE.name,
                value,
                key=wallet.wallet_id.encode(),
                headers=[restored, *chain.headers(value)],
            )
        await producer.flush()
    finally:
        await producer.stop()
    report = RestoreReport(len(control), len(folded), len(escalations))
    log.info(
        "broker restored from store",
        control_events=report.control_events,
        wallets=report.wallets,
        escalation_records=report.escalation_records,
    )
    return report
