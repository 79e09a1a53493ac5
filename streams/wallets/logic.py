"""Wallets as projections of a journal. Pure: no I/O, no clock, no ids.

A journal entry comes from an event: a funding credits, a call's settlement debits.
`evolve` applies an entry once: each wallet keeps, per producer, the highest `seq` it
has applied, and an entry at or below that watermark changes nothing. Kafka keeps one
producer's records for one tenant in order (same topic, same partition, one in-flight
request), so the watermark is exact under redelivery and restarts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal

from schemas.records import Event, LineageRecord, WalletBalance, WalletFunded

EntryKind = Literal["fund", "settle"]


def team_wallet_id(tenant_id: str, team_id: str) -> str:
    """Wallet of a team: one path segment per level of the org → team → key tree."""
    assert tenant_id and team_id, "a team wallet needs a tenant and a team"
    assert "/" not in tenant_id and "/" not in team_id, "ids may not contain '/'"
    return f"{tenant_id}/{team_id}"


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One journal entry: signed amount (credit > 0, debit < 0) and its origin."""

    wallet_id: str
    tenant_id: str
    team_id: str
    kind: EntryKind
    amount_nanousd: int
    event_id: str
    producer_id: str
    seq: int
    occurred_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class Wallet:
    """A wallet's projection. `applied_seqs` is the idempotence watermark per producer."""

    wallet_id: str
    tenant_id: str
    team_id: str
    balance_nanousd: int = 0
    funded_nanousd: int = 0
    spent_nanousd: int = 0
    entry_count: int = 0
    last_event_id: str = ""
    last_occurred_at: int = 0
    applied_seqs: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    period_start_at: int = 0
    period_spent_nanousd: int = 0


def month_start_ms(at_ms: int) -> int:
    """Start of the UTC calendar month holding a moment: the spend period."""
    moment = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    return int(moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()) * 1000


def period_spend(wallet: Wallet, debit_nanousd: int, occurred_at: int) -> tuple[int, int]:
    """(period_start_at, period_spent_nanousd) after a debit: a debit of a later month opens
    a new period; one of an earlier month (a late record) counts only toward all-time spend."""
    period = month_start_ms(occurred_at)
    if period > wallet.period_start_at:
        return period, debit_nanousd
    if period == wallet.period_start_at:
        return period, wallet.period_spent_nanousd + debit_nanousd
    return wallet.period_start_at, wallet.period_spent_nanousd


def spent_in_month_nanousd(wallet: Wallet, at_ms: int) -> int:
    """What the wallet spent in the UTC month holding `at_ms` (0 if its period is older)."""
    return wallet.period_spent_nanousd if wallet.period_start_at == month_start_ms(at_ms) else 0


def entry_of(event: Event) -> Entry | None:
    """The journal entry an event makes, if any."""
    if isinstance(event, WalletFunded):
        assert event.amount_nanousd > 0, "funding amounts are validated at the admin API"
        return Entry(
            event.wallet_id,
            event.tenant_id,
            event.team_id,
            "fund",
            event.amount_nanousd,
            event.event_id,
            event.producer_id,
            event.seq,
            event.occurred_at,
        )
    if isinstance(event, LineageRecord) and event.wallet_id and event.cost_nanousd > 0:
        return Entry(
            event.wallet_id,
            event.tenant_id,
            event.team_id,
            "settle",
            -event.cost_nanousd,
            event.event_id,
            event.producer_id,
            event.seq,
            event.occurred_at,
        )
    return None


def is_applied(wallet: Wallet | None, entry: Entry) -> bool:
    """Whether the wallet has already applied this entry (or a later one of its producer)."""
    return wallet is not None and wallet.applied_seqs.get(entry.producer_id, 0) >= entry.seq


def evolve(wallet: Wallet | None, entry: Entry) -> Wallet:
    """The wallet after the entry; the same wallet if the entry was applied before."""
    if wallet is None:
        wallet = Wallet(entry.wallet_id, entry.tenant_id, entry.team_id)
    assert wallet.wallet_id == entry.wallet_id, "entry applied to another wallet"
    if is_applied(wallet, entry):
        return wallet
    credit = max(entry.amount_nanousd, 0)
    debit = max(-entry.amount_nanousd, 0)
    period_start_at, period_spent_nanousd = wallet.period_start_at, wallet.period_spent_nanousd
    if debit:
        period_start_at, period_spent_nanousd = period_spend(wallet, debit, entry.occurred_at)
    return dataclasses.replace(
        wallet,
        balance_nanousd=wallet.balance_nanousd + entry.amount_nanousd,
        funded_nanousd=wallet.funded_nanousd + credit,
        spent_nanousd=wallet.spent_nanousd + debit,
        entry_count=wallet.entry_count + 1,
        last_event_id=entry.event_id,
        last_occurred_at=max(wallet.last_occurred_at, entry.occurred_at),
        applied_seqs=MappingProxyType({**wallet.applied_seqs, entry.producer_id: entry.seq}),
        period_start_at=period_start_at,
        period_spent_nanousd=period_spent_nanousd,
    )


def fold(events: Iterable[Event], wallets: Mapping[str, Wallet] | None = None) -> dict[str, Wallet]:
    """Apply events in order to a set of wallets: what the processor and replay both do."""
    result = dict(wallets or {})
    for event in events:
        entry = entry_of(event)
        if entry is not None:
            result[entry.wallet_id] = evolve(result.get(entry.wallet_id), entry)
    return result


def from_balance(record: WalletBalance) -> Wallet:
    """The wallet a published balance record describes."""
    return Wallet(
        wallet_id=record.wallet_id,
        tenant_id=record.tenant_id,
        team_id=record.team_id,
        balance_nanousd=record.balance_nanousd,
        funded_nanousd=record.funded_nanousd,
        spent_nanousd=record.spent_nanousd,
        entry_count=record.entry_count,
        last_event_id=record.last_event_id,
        last_occurred_at=record.last_occurred_at,
        applied_seqs=MappingProxyType(dict(record.applied_seqs)),
        period_start_at=record.period_start_at,
        period_spent_nanousd=record.period_spent_nanousd,
    )


def latest(known: Wallet | None, published: WalletBalance) -> Wallet:
    """The newer of a known wallet and a published balance: a balance published earlier
    (fewer entries) never replaces a later one, whatever order they are read in."""
    if known is not None and known.entry_count > published.entry_count:
        return known
    return from_balance(published)


def to_balance(
    wallet: Wallet, *, event_id: str, occurred_at: int, producer_id: str, seq: int
) -> WalletBalance:
    """The balance record to publish for a wallet; the envelope comes from the adapter."""
    return WalletBalance(
        event_id=event_id,
        event_type=WalletBalance.event_type_name,
        occurred_at=occurred_at,
        tenant_id=wallet.tenant_id,
        producer_id=producer_id,
        seq=seq,
        wallet_id=wallet.wallet_id,
        team_id=wallet.team_id,
        balance_nanousd=wallet.balance_nanousd,
        funded_nanousd=wallet.funded_nanousd,
        spent_nanousd=wallet.spent_nanousd,
        entry_count=wallet.entry_count,
        last_event_id=wallet.last_event_id,
        last_occurred_at=wallet.last_occurred_at,
        applied_seqs=dict(wallet.applied_seqs),
        period_start_at=wallet.period_start_at,
        period_spent_nanousd=wallet.period_spent_nanousd,
    )


def available_nanousd(
    wallet: Wallet | None,
    producer_id: str,
    unsettled_nanousd: Mapping[int, int],
    reserved_nanousd: int,
) -> int:
    """What one gateway may still commit from a wallet: the published balance, minus
    this gateway's own settlements the balance does not include yet (their seq is above
    the wallet's watermark for this producer), minus its in-flight reservations."""
    balance = wallet.balance_nanousd if wallet is not None else 0
    seen = wallet.applied_seqs.get(producer_id, 0) if wallet is not None else 0
    pending = sum(cost for seq, cost in unsettled_nanousd.items() if seq > seen)
    return balance - pending - reserved_nanousd
