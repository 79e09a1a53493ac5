"""Wallets as projections of a journal. Pure: no I/O, no clock, no ids.

Wallets form a tree, one path segment per level: the org wallet `tenant`, team wallets
`tenant/team`, key wallets `tenant/team/key_id`. A journal entry comes from an event:
a funding credits, an allocation moves money from a wallet to one of its children (a
debit and a credit), a call's settlement debits, a refund credits, a correction credits
or debits. An entry is never edited: a mistake is answered with a correction.

Transfers (allocations, debit corrections) are decided: one that would take its source
below minus its overdraft limit is rejected, moves no money and is counted as rejected.
The decision reads the source's *transfer balance*: every entry but settlements. Transfers
and every entry they count come from the control topic, keyed by tenant, so one tenant's
are read in one order live and in replay; settlements come from the lineage topic, in an
order relative to the control topic that no replay reproduces. Settlements are never
rejected: the call happened (the gateway admits calls against balance plus limit).

`evolve` applies an entry once: each wallet keeps, per producer, the highest `seq` it has
applied, and an entry at or below that watermark changes nothing. Kafka keeps one
producer's records for one tenant in order (same topic, same partition, one in-flight
request), so the watermark is exact under redelivery and restarts. A transfer's decision
is kept on its source (`last_decided_event_id`, `last_decision`), so a transfer redelivered
after its source applied it credits the child exactly when it was accepted.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal

from schemas.records import (
    Event,
    LineageRecord,
    WalletAllocated,
    WalletBalance,
    WalletCorrected,
    WalletFunded,
    WalletLimitSet,
    WalletRefunded,
)

EntryKind = Literal["fund", "allocate", "settle", "refund", "correct"]
Decision = Literal["accepted", "rejected"]
ACCEPTED: Decision = "accepted"
REJECTED: Decision = "rejected"


def _check_segment(*segments: str) -> None:
    assert all(segments), "a wallet id needs every level of the tree"
    assert all("/" not in s for s in segments), "ids may not contain '/'"


def org_wallet_id(tenant_id: str) -> str:
    """Wallet of a tenant (the org): the root of its tree."""
    _check_segment(tenant_id)
    return tenant_id


def team_wallet_id(tenant_id: str, team_id: str) -> str:
    """Wallet of a team: one path segment per level of the org → team → key tree."""
    _check_segment(tenant_id, team_id)
    return f"{tenant_id}/{team_id}"


def key_wallet_id(tenant_id: str, team_id: str, key_id: str) -> str:
    """Wallet of one gateway key, under its team's wallet."""
    _check_segment(tenant_id, team_id, key_id)
    return f"{tenant_id}/{team_id}/{key_id}"


MAX_DEPTH = 3


def path_of(wallet_id: str) -> tuple[str, ...]:
    """The levels of a wallet id: (tenant,), (tenant, team) or (tenant, team, key)."""
    return tuple(wallet_id.split("/"))


def is_wallet_id(wallet_id: str) -> bool:
    """Whether the text is a wallet id of the tree (one to three non-empty segments)."""
    path = path_of(wallet_id)
    return 0 < len(path) <= MAX_DEPTH and all(path)


def parent_wallet_id(wallet_id: str) -> str | None:
    """The wallet one level up (team → org, key → team); None for an org wallet."""
    path = path_of(wallet_id)
    return "/".join(path[:-1]) if len(path) > 1 else None


def tenant_of(wallet_id: str) -> str:
    """The tenant a wallet belongs to."""
    return path_of(wallet_id)[0]


def team_of(wallet_id: str) -> str:
    """The team a wallet belongs to; empty for an org wallet."""
    path = path_of(wallet_id)
    return path[1] if len(path) > 1 else ""


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
    """A wallet's projection. `applied_seqs` is the idempotence watermark per producer.

    `balance_nanousd == funded + allocated_in - allocated_out - spent + refunded +
    corrected`, the sum of its entries. `revision` counts every change (entries, rejected
    transfers, limit changes) and orders two projections with equal `entry_count`."""

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
    allocated_in_nanousd: int = 0
    allocated_out_nanousd: int = 0
    refunded_nanousd: int = 0
    corrected_nanousd: int = 0
    overdraft_limit_nanousd: int = 0
    rejected_count: int = 0
    last_decided_event_id: str = ""
    last_decision: str = ""
    revision: int = 0

    @property
    def transfer_balance_nanousd(self) -> int:
        """The balance without settlements: what transfers out are decided against."""
        return self.balance_nanousd + self.spent_nanousd


def new_wallet(wallet_id: str, team_id: str | None = None) -> Wallet:
    """An empty wallet, its tenant and team read from its id."""
    return Wallet(
        wallet_id, tenant_of(wallet_id), team_of(wallet_id) if team_id is None else team_id
    )


DAY_MS = 86_400_000


@functools.lru_cache(maxsize=4_096)
def _month_start_of_day(day: int) -> int:
    moment = datetime.fromtimestamp(day * 86_400, tz=UTC)
    return int(moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()) * 1000


def month_start_ms(at_ms: int) -> int:
    """Start of the UTC calendar month holding a moment: the spend period. (Computed once
    per UTC day and remembered: replay asks it for every settlement.)"""
    return _month_start_of_day(at_ms // DAY_MS)


def _period_after(
    period_start_at: int, period_spent_nanousd: int, debit_nanousd: int, occurred_at: int
) -> tuple[int, int]:
    period = month_start_ms(occurred_at)
    if period > period_start_at:
        return period, debit_nanousd
    if period == period_start_at:
        return period, period_spent_nanousd + debit_nanousd
    return period_start_at, period_spent_nanousd


def period_spend(wallet: Wallet, debit_nanousd: int, occurred_at: int) -> tuple[int, int]:
    """(period_start_at, period_spent_nanousd) after a debit: a debit of a later month opens
    a new period; one of an earlier month (a late record) counts only toward all-time spend."""
    return _period_after(
        wallet.period_start_at, wallet.period_spent_nanousd, debit_nanousd, occurred_at
    )


def spent_in_month_nanousd(wallet: Wallet, at_ms: int) -> int:
    """What the wallet spent in the UTC month holding `at_ms` (0 if its period is older)."""
    return wallet.period_spent_nanousd if wallet.period_start_at == month_start_ms(at_ms) else 0


def _entry(event: Event, wallet_id: str, team_id: str, kind: EntryKind, amount: int) -> Entry:
    return Entry(
        wallet_id,
        event.tenant_id,
        team_id,
        kind,
        amount,
        event.event_id,
        event.producer_id,
        event.seq,
        event.occurred_at,
    )


def _owned(event: Event, *wallet_ids: str) -> bool:
    """Whether every wallet named is a wallet of the tree of the event's tenant (the
    control topic is keyed by tenant: another tenant's wallet is on another partition)."""
    return all(is_wallet_id(w) and tenant_of(w) == event.tenant_id for w in wallet_ids)


def entry_of(event: Event) -> Entry | None:
    """The entry an event makes when it makes one entry whatever the wallets' state:
    a funding, a settlement, a refund or a credit correction. Transfers need the
    wallets: see `entries_of` and `step`."""
    if isinstance(event, WalletFunded) and event.amount_nanousd > 0:
        return _entry(event, event.wallet_id, event.team_id, "fund", event.amount_nanousd)
    if isinstance(event, LineageRecord) and event.wallet_id and event.cost_nanousd > 0:
        return _entry(event, event.wallet_id, event.team_id, "settle", -event.cost_nanousd)
    if (
        isinstance(event, WalletRefunded)
        and event.amount_nanousd > 0
        and _owned(event, event.wallet_id)
    ):
        return _entry(event, event.wallet_id, event.team_id, "refund", event.amount_nanousd)
    if (
        isinstance(event, WalletCorrected)
        and event.amount_nanousd > 0
        and _owned(event, event.wallet_id)
    ):
        return _entry(event, event.wallet_id, event.team_id, "correct", event.amount_nanousd)
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """A transfer refused: it moves no money and is counted on its source."""

    wallet_id: str
    event_id: str
    producer_id: str
    seq: int
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one event does to the wallets: entries to apply, a transfer rejected, or a
    limit to set (each at most once per wallet, by watermark)."""

    entries: tuple[Entry, ...] = ()
    rejection: Rejection | None = None
    decided: str | None = None  # the transfer's source, when a transfer was accepted
    limit: WalletLimitSet | None = None


NOTHING = Outcome()


def is_applied(wallet: Wallet | None, entry: Entry) -> bool:
    """Whether the wallet has already applied this entry (or a later one of its producer)."""
    return _seen(wallet, entry.producer_id, entry.seq)


def _seen(wallet: Wallet | None, producer_id: str, seq: int) -> bool:
    return wallet is not None and wallet.applied_seqs.get(producer_id, 0) >= seq


def transfer_refusal(source: Wallet | None, amount_nanousd: int) -> str | None:
    """Why a transfer of this amount out of the wallet is refused, or None: it may not
    take the wallet's transfer balance below minus its overdraft limit."""
    if amount_nanousd <= 0:
        return "amount must be positive"
    balance = source.transfer_balance_nanousd if source is not None else 0
    limit = source.overdraft_limit_nanousd if source is not None else 0
    if balance - amount_nanousd < -limit:
        return (
            f"transfer of {amount_nanousd} nano-USD would take the wallet to "
            f"{balance - amount_nanousd}, below its overdraft limit of -{limit}"
        )
    return None


def allocation_refusal(from_wallet_id: str, to_wallet_id: str) -> str | None:
    """Why an allocation between these wallets is refused, or None: money moves down the
    tree only, from a wallet to one of its children."""
    if not (is_wallet_id(from_wallet_id) and is_wallet_id(to_wallet_id)):
        return "not wallet ids"
    if parent_wallet_id(to_wallet_id) != from_wallet_id:
        return f"{to_wallet_id} is not a child of {from_wallet_id}"
    return None


def _decided(
    event: Event, source: Wallet | None, entries: tuple[Entry, ...], refusal: str | None
) -> Outcome:
    """The outcome of a transfer out of `source`, decided once: a source that applied the
    event already decided it, and its recorded decision stands."""
    assert entries, "a transfer makes entries"
    source_id = entries[0].wallet_id
    if _seen(source, event.producer_id, event.seq):
        assert source is not None
        if source.last_decided_event_id == event.event_id and source.last_decision == ACCEPTED:
            return Outcome(entries=entries)  # the source has it; the others may not yet
        return NOTHING
    if refusal is not None:
        return Outcome(
            rejection=Rejection(source_id, event.event_id, event.producer_id, event.seq, refusal)
        )
    return Outcome(entries=entries, decided=source_id)


def outcome_of(event: Event, wallets: Mapping[str, Wallet]) -> Outcome:
    """What an event does, given the wallets as they are before it."""
    if isinstance(event, WalletAllocated):
        if not _owned(event, event.from_wallet_id, event.to_wallet_id):
            return NOTHING  # not this tenant's tree: nothing to charge a rejection to
        source = wallets.get(event.from_wallet_id)
        amount = event.amount_nanousd
        entries = (
            _entry(event, event.from_wallet_id, team_of(event.from_wallet_id), "allocate", -amount),
            _entry(event, event.to_wallet_id, event.team_id, "allocate", amount),
        )
        refusal = allocation_refusal(event.from_wallet_id, event.to_wallet_id)
        return _decided(event, source, entries, refusal or transfer_refusal(source, amount))
    if isinstance(event, WalletCorrected) and event.amount_nanousd < 0:
        if not _owned(event, event.wallet_id):
            return NOTHING
        wallet = wallets.get(event.wallet_id)
        entry = _entry(event, event.wallet_id, event.team_id, "correct", event.amount_nanousd)
        return _decided(event, wallet, (entry,), transfer_refusal(wallet, -event.amount_nanousd))
    if isinstance(event, WalletLimitSet):
        if not _owned(event, event.wallet_id) or event.overdraft_limit_nanousd < 0:
            return NOTHING
        return Outcome(limit=event)
    single = entry_of(event)
    return NOTHING if single is None else Outcome(entries=(single,))


def entries_of(event: Event, wallets: Mapping[str, Wallet]) -> tuple[Entry, ...]:
    """The journal entries an event makes given the wallets before it (none if rejected)."""
    return outcome_of(event, wallets).entries


def evolve(wallet: Wallet | None, entry: Entry) -> Wallet:
    """The wallet after the entry; the same wallet if the entry was applied before."""
    if wallet is None:
        wallet = new_wallet(entry.wallet_id, entry.team_id)
    assert wallet.wallet_id == entry.wallet_id, "entry applied to another wallet"
    return apply_entries(
        wallet,
        (
            (
                entry.kind,
                entry.amount_nanousd,
                entry.event_id,
                entry.producer_id,
                entry.seq,
                entry.occurred_at,
            ),
        ),
    )


EntryRow = tuple[EntryKind, int, str, str, int, int]
"""An entry of a known wallet as plain values: (kind, amount_nanousd, event_id,
producer_id, seq, occurred_at), the fields of `Entry` after its wallet, tenant and team."""


def apply_entries(wallet: Wallet, rows: Iterable[EntryRow]) -> Wallet:
    """The wallet after its entries in order, each applied at most once (by watermark):
    the one rule of `evolve`, which is this with one entry. Replay hands a wallet's
    settlements here in bulk, built from store columns, without an `Entry` each. The same
    wallet object when no entry applies."""
    seqs = wallet.applied_seqs
    watermarks: dict[str, int] | None = None
    balance = wallet.balance_nanousd
    funded = wallet.funded_nanousd
    allocated_in = wallet.allocated_in_nanousd
    allocated_out = wallet.allocated_out_nanousd
    spent = wallet.spent_nanousd
    refunded = wallet.refunded_nanousd
    corrected = wallet.corrected_nanousd
    period_start_at = wallet.period_start_at
    period_spent = wallet.period_spent_nanousd
    last_occurred_at = wallet.last_occurred_at
    last_event_id = wallet.last_event_id
    applied = 0
    for kind, amount, event_id, producer_id, seq, occurred_at in rows:
        if (watermarks if watermarks is not None else seqs).get(producer_id, 0) >= seq:
            continue
        if kind == "settle":
            spent -= amount
            period_start_at, period_spent = _period_after(
                period_start_at, period_spent, -amount, occurred_at
            )
        elif kind == "fund":
            funded += amount
        elif kind == "allocate" and amount >= 0:
            allocated_in += amount
        elif kind == "allocate":
            allocated_out -= amount
        elif kind == "refund":
            refunded += amount
        else:
            corrected += amount
        balance += amount
        applied += 1
        last_event_id = event_id
        last_occurred_at = max(last_occurred_at, occurred_at)
        if watermarks is None:
            watermarks = dict(seqs)
        watermarks[producer_id] = seq
    if watermarks is None:
        return wallet
    return dataclasses.replace(
        wallet,
        balance_nanousd=balance,
        funded_nanousd=funded,
        allocated_in_nanousd=allocated_in,
        allocated_out_nanousd=allocated_out,
        spent_nanousd=spent,
        refunded_nanousd=refunded,
        corrected_nanousd=corrected,
        period_start_at=period_start_at,
        period_spent_nanousd=period_spent,
        entry_count=wallet.entry_count + applied,
        last_event_id=last_event_id,
        last_occurred_at=last_occurred_at,
        applied_seqs=MappingProxyType(watermarks),
        revision=wallet.revision + applied,
    )


def _watermark(wallet: Wallet, producer_id: str, seq: int) -> Mapping[str, int]:
    return MappingProxyType({**wallet.applied_seqs, producer_id: seq})


def reject(wallet: Wallet | None, rejection: Rejection) -> Wallet:
    """The source wallet after a transfer was rejected: counted, watermark advanced (so a
    redelivery is not decided again), money unchanged."""
    if wallet is None:
        wallet = new_wallet(rejection.wallet_id)
    if _seen(wallet, rejection.producer_id, rejection.seq):
        return wallet
    return dataclasses.replace(
        wallet,
        applied_seqs=_watermark(wallet, rejection.producer_id, rejection.seq),
        rejected_count=wallet.rejected_count + 1,
        last_decided_event_id=rejection.event_id,
        last_decision=REJECTED,
        revision=wallet.revision + 1,
    )


def set_limit(wallet: Wallet | None, event: WalletLimitSet) -> Wallet:
    """The wallet with a new overdraft limit (once per event, by watermark)."""
    if wallet is None:
        wallet = new_wallet(event.wallet_id, event.team_id)
    if _seen(wallet, event.producer_id, event.seq):
        return wallet
    return dataclasses.replace(
        wallet,
        overdraft_limit_nanousd=event.overdraft_limit_nanousd,
        applied_seqs=_watermark(wallet, event.producer_id, event.seq),
        revision=wallet.revision + 1,
    )


def step(wallets: Mapping[str, Wallet], event: Event) -> dict[str, Wallet]:
    """The wallets one event changes, as they are after it (unchanged ones are absent)."""
    outcome = outcome_of(event, wallets)
    changed: dict[str, Wallet] = {}
    for entry in outcome.entries:
        before = wallets.get(entry.wallet_id)
        after = evolve(before, entry)
        if entry.wallet_id == outcome.decided:
            after = dataclasses.replace(
                after, last_decided_event_id=entry.event_id, last_decision=ACCEPTED
            )
        if after is not before:
            changed[entry.wallet_id] = after
    if outcome.rejection is not None:
        before = wallets.get(outcome.rejection.wallet_id)
        after = reject(before, outcome.rejection)
        if after is not before:
            changed[outcome.rejection.wallet_id] = after
    if outcome.limit is not None:
        before = wallets.get(outcome.limit.wallet_id)
        after = set_limit(before, outcome.limit)
        if after is not before:
            changed[outcome.limit.wallet_id] = after
    return changed


def fold(events: Iterable[Event], wallets: Mapping[str, Wallet] | None = None) -> dict[str, Wallet]:
    """Apply events in order to a set of wallets: what the processor and replay both do.
    Wallets no event changed are the very objects of the input mapping."""
    result = dict(wallets or {})
    fold_in_place(events, result)
    return result


def fold_in_place(events: Iterable[Event], wallets: dict[str, Wallet]) -> dict[str, Wallet]:
    """`fold` into `wallets` itself, returning the wallets the events changed (as they
    are after them): the processor's batch costs its size, not the number of wallets."""
    changed: dict[str, Wallet] = {}
    for event in events:
        stepped = step(wallets, event)
        wallets.update(stepped)
        changed.update(stepped)
    return changed


def from_balance(record: WalletBalance) -> Wallet:
    """The wallet a published balance record describes (a v2 record: no tree entries)."""
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
        allocated_in_nanousd=record.allocated_in_nanousd,
        allocated_out_nanousd=record.allocated_out_nanousd,
        refunded_nanousd=record.refunded_nanousd,
        corrected_nanousd=record.corrected_nanousd,
        overdraft_limit_nanousd=record.overdraft_limit_nanousd,
        rejected_count=record.rejected_count,
        last_decided_event_id=record.last_decided_event_id,
        last_decision=record.last_decision,
        # A v2 record has no revision; every change it counts was an entry.
        revision=max(record.revision, record.entry_count),
    )


def latest(known: Wallet | None, published: WalletBalance) -> Wallet:
    """The newer of a known wallet and a published balance: a balance published earlier
    (fewer entries, or as many and fewer changes) never replaces a later one, whatever
    order they are read in."""
    if known is not None and (known.entry_count, known.revision) > (
        published.entry_count,
        max(published.revision, published.entry_count),
    ):
        return known
    return from_balance(published)


def to_balance(
    wallet: Wallet, *, event_id: str, occurred_at: int, producer_id: str = "", seq: int = 0
) -> WalletBalance:
    """The balance record to publish for a wallet; the envelope comes from the adapter
    (unsealed unless it says otherwise)."""
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
        allocated_in_nanousd=wallet.allocated_in_nanousd,
        allocated_out_nanousd=wallet.allocated_out_nanousd,
        refunded_nanousd=wallet.refunded_nanousd,
        corrected_nanousd=wallet.corrected_nanousd,
        overdraft_limit_nanousd=wallet.overdraft_limit_nanousd,
        rejected_count=wallet.rejected_count,
        last_decided_event_id=wallet.last_decided_event_id,
        last_decision=wallet.last_decision,
        revision=wallet.revision,
    )


def available_nanousd(
    wallet: Wallet | None,
    producer_id: str,
    unsettled_nanousd: Mapping[int, int],
    reserved_nanousd: int,
) -> int:
    """What one gateway may still commit from a wallet: the published balance plus the
    wallet's overdraft limit, minus this gateway's own settlements the balance does not
    include yet (their seq is above the wallet's watermark for this producer), minus its
    in-flight reservations."""
    balance = wallet.balance_nanousd + wallet.overdraft_limit_nanousd if wallet is not None else 0
    seen = wallet.applied_seqs.get(producer_id, 0) if wallet is not None else 0
    pending = sum(cost for seq, cost in unsettled_nanousd.items() if seq > seen)
    return balance - pending - reserved_nanousd
