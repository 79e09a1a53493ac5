"""State as it stood at a moment, folded from history with `streams/*/logic` and nothing else.

Time semantics: the state "at T" is the fold of every record whose `occurred_at` (the
time the gateway or the admin API stamped it) is at or before T. That is what the ledger
*says* about T. A processor running at wall-clock T may have lagged behind it (records in
flight, a batch not yet folded, a worker restarting), so its published state at T can be
older; replay answers with the history as it happened, not with the lag.

Orders (each the one the live processors or `replay/restore.py` use):
- wallets: the admin log's wallet events in partition order (each producer's records in
  `seq` order, merged by `occurred_at`), which decides transfers as live processing did;
  then the settlements, never decided, each wallet's in (producer_id, seq) order. A
  settlement moves one wallet only, so grouping them by wallet changes no balance.
- quotas: every budget setting in time order, then the period spend of every wallet as
  rebuilt (`SpendObserved`). Live, a budget is judged against the spend seen when it is
  folded; replay judges all budgets before the final spend (see Known gaps in
  docs/audit-and-replay.md).
- breakers: every lineage record's attempts, each producer's in `seq` order, merged by
  `occurred_at`, folded per target at the record's time with a watermark per (producer,
  lineage partition), the partition computed like Kafka's default partitioner.
- escalations: `streams.escalations.logic.rebuild` of the opens, reviewer actions and
  breach alerts, one log per tenant in time order.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import repeat
from typing import NamedTuple

from aiokafka.partitioner import murmur2

from replay.sources import SettlementPage
from schemas.records import (
    Attempt,
    EscalationChanged,
    EscalationOpened,
    EscalationResolved,
    EscalationSlaBreached,
    Event,
    LineageRecord,
    WalletAllocated,
    WalletBudgetSet,
    WalletCorrected,
    WalletFunded,
    WalletLimitSet,
    WalletRefunded,
)
from streams.breakers import logic as breaker_rules
from streams.escalations import logic as escalation_rules
from streams.quotas import logic as quota_rules
from streams.wallets import logic as wallet_rules

WALLET_CONTROL = (WalletFunded, WalletAllocated, WalletRefunded, WalletCorrected, WalletLimitSet)
ESCALATION_CONTROL = (EscalationChanged, EscalationResolved)

Progress = Callable[[int], None]


def _no_progress(done: int) -> None:
    return None


@dataclasses.dataclass
class Rebuilt:
    """Everything replay rebuilt at `at_ms` (for one tenant, or all when `tenant_id` is
    None), and how many records were folded."""

    at_ms: int
    tenant_id: str | None
    wallets: dict[str, wallet_rules.Wallet] = dataclasses.field(default_factory=dict)
    quotas: dict[str, quota_rules.Quota] = dataclasses.field(default_factory=dict)
    quota_alerts: list[quota_rules.ThresholdCrossed] = dataclasses.field(default_factory=list)
    breakers: dict[tuple[str, str], breaker_rules.FleetBreaker] = dataclasses.field(
        default_factory=dict
    )
    escalations: escalation_rules.Queues = dataclasses.field(
        default_factory=escalation_rules.Queues
    )
    events: int = 0


# --- the order of history ---------------------------------------------------------------


def up_to(events: Iterable[Event], at_ms: int, tenant_id: str | None = None) -> Iterator[Event]:
    """The records at or before `at_ms` (of one tenant, if given)."""
    for event in events:
        if event.occurred_at <= at_ms and (tenant_id is None or event.tenant_id == tenant_id):
            yield event


def by_producer_merged(events: Iterable[Event]) -> list[Event]:
    """Each producer's records in `seq` order, producers merged by `occurred_at`."""
    ordered = sorted(events, key=lambda e: (e.producer_id, e.seq))
    streams = [list(g) for _, g in itertools.groupby(ordered, key=lambda e: e.producer_id)]
    return list(heapq.merge(*streams, key=lambda e: e.occurred_at))


def lineage_partition(tenant_id: str, partitions: int) -> int:
    """The lineage partition Kafka's default partitioner gives a tenant's records."""
    return int(murmur2(tenant_id.encode()) & 0x7FFFFFFF) % partitions


# --- wallets ----------------------------------------------------------------------------


def fold_wallet_control(control: Iterable[Event]) -> dict[str, wallet_rules.Wallet]:
    """The admin log's wallet events folded in partition order (transfers are decided)."""
    return wallet_rules.fold(
        by_producer_merged(e for e in control if isinstance(e, WALLET_CONTROL))
    )


def apply_settlement_page(state: dict[str, wallet_rules.Wallet], page: SettlementPage) -> None:
    """Fold a page of settlements read as columns, sorted by wallet, into `state`: each
    wallet's run goes through `wallet_rules.apply_entries`, the rule of `evolve`."""
    start = 0
    for wallet_id, end in zip(page.wallet_ids, page.run_ends, strict=True):
        wallet = state.get(wallet_id)
        if wallet is None:
            wallet = wallet_rules.new_wallet(wallet_id)
        state[wallet_id] = wallet_rules.apply_entries(
            wallet,
            zip(
                repeat("settle"),
                page.amounts[start:end],
                page.event_ids[start:end],
                page.producer_ids[start:end],
                page.seqs[start:end],
                page.occurred_at[start:end],
            ),
        )
        start = end


def fold_settlements(
    state: dict[str, wallet_rules.Wallet], lineage: Iterable[LineageRecord]
) -> dict[str, wallet_rules.Wallet]:
    """Settlements of decoded lineage records (read order kept within each wallet)."""
    runs: dict[str, list[wallet_rules.EntryRow]] = {}
    teams: dict[str, str] = {}
    for record in lineage:
        entry = wallet_rules.entry_of(record)
        if entry is None:
            continue
        teams.setdefault(entry.wallet_id, entry.team_id)
        runs.setdefault(entry.wallet_id, []).append(
            ("settle", entry.amount_nanousd, entry.event_id, entry.producer_id, entry.seq,
             entry.occurred_at)
        )  # fmt: skip
    for wallet_id, rows in runs.items():
        wallet = state.get(wallet_id) or wallet_rules.new_wallet(wallet_id, teams[wallet_id])
        state[wallet_id] = wallet_rules.apply_entries(wallet, rows)
    return state


# --- quotas -----------------------------------------------------------------------------


def fold_quotas(
    budgets: Iterable[WalletBudgetSet], rebuilt: Mapping[str, wallet_rules.Wallet]
) -> tuple[dict[str, quota_rules.Quota], list[quota_rules.ThresholdCrossed]]:
    """Budgets in time order, then each wallet's period spend as rebuilt (a key wallet's
    towards its team's quota too)."""
    inputs: list[quota_rules.QuotaEvent] = []
    for record in sorted(budgets, key=lambda r: (r.occurred_at, r.producer_id, r.seq)):
        try:
            inputs.append(quota_rules.budget_of(record))
        except ValueError:
            continue  # dead-lettered live; never folded
    inputs.extend(
        observed
        for w in rebuilt.values()
        if w.period_spent_nanousd > 0
        for observed in quota_rules.observations_of(w)
    )
    return quota_rules.fold(inputs)


# --- breakers ---------------------------------------------------------------------------


class Call(NamedTuple):
    """What the breakers need of one lineage record."""

    producer_id: str
    seq: int
    occurred_at: int
    tenant_id: str
    attempts: tuple[Attempt, ...]


def fold_breakers(
    calls: Iterable[Call], config: breaker_rules.BreakerConfig, partitions: int
) -> dict[tuple[str, str], breaker_rules.FleetBreaker]:
    """Every call's attempts, each producer's in seq order merged by time, per target."""
    ordered = sorted(calls, key=lambda c: (c.producer_id, c.seq))
    streams = [list(g) for _, g in itertools.groupby(ordered, key=lambda c: c.producer_id)]
    fleet: dict[tuple[str, str], breaker_rules.FleetBreaker] = {}
    partition_of: dict[str, int] = {}
    for call in heapq.merge(*streams, key=lambda c: c.occurred_at):
        partition = partition_of.get(call.tenant_id)
        if partition is None:
            partition = partition_of[call.tenant_id] = lineage_partition(call.tenant_id, partitions)
        watermark = breaker_rules.watermark_key(call.producer_id, partition)
        for target in breaker_rules.targets_of(call.attempts):
            fleet[target], _ = breaker_rules.fold(
                fleet.get(target) or breaker_rules.FleetBreaker(),
                target,
                call.attempts,
                watermark=watermark,
                seq=call.seq,
                now_ms=call.occurred_at,
                config=config,
            )
    return fleet


def call_of(record: LineageRecord) -> Call:
    """The breakers' view of a decoded lineage record."""
    return Call(record.producer_id, record.seq, record.occurred_at, record.tenant_id,
                tuple(record.attempts))  # fmt: skip


# --- escalations ------------------------------------------------------------------------


def fold_escalations(
    records: Iterable[Event], config: escalation_rules.EscalationConfig
) -> escalation_rules.Queues:
    """The review queues from opens, reviewer actions and breach alerts, one log per
    tenant in time order (what a processor owning every partition rebuilds)."""
    logs: dict[str, list[Event]] = {}
    kinds = (EscalationOpened, EscalationSlaBreached, *ESCALATION_CONTROL)
    for record in records:
        if isinstance(record, kinds):
            logs.setdefault(record.tenant_id, []).append(record)
    for log in logs.values():
        log.sort(key=lambda e: (e.occurred_at, 0 if isinstance(e, EscalationOpened) else 1))
    queues, _ = escalation_rules.rebuild(logs.values(), config)
    return queues


# --- the whole state from decoded events (Kafka source, tests) -------------------------


def rebuild_from_events(
    events: Iterable[Event],
    at_ms: int,
    *,
    tenant_id: str | None = None,
    breaker_config: breaker_rules.BreakerConfig | None = None,
    escalation_config: escalation_rules.EscalationConfig | None = None,
    partitions: int = 1,
    progress: Progress = _no_progress,
) -> Rebuilt:
    """Wallets, quotas, breakers and escalations as they stood at `at_ms`, from decoded
    records of any topics (records after `at_ms` are left out)."""
    control: list[Event] = []
    lineage: list[LineageRecord] = []
    escalation_records: list[Event] = []
    budgets: list[WalletBudgetSet] = []
    count = 0
    for event in up_to(events, at_ms, tenant_id):
        count += 1
        if count % 10_000 == 0:
            progress(count)
        if isinstance(event, LineageRecord):
            lineage.append(event)
        elif isinstance(event, WALLET_CONTROL):
            control.append(event)
        elif isinstance(event, WalletBudgetSet):
            budgets.append(event)
        elif isinstance(event, (EscalationOpened, EscalationSlaBreached, *ESCALATION_CONTROL)):
            escalation_records.append(event)
    progress(count)
    rebuilt = Rebuilt(at_ms, tenant_id, events=count)
    rebuilt.wallets = fold_settlements(fold_wallet_control(control), lineage)
    rebuilt.quotas, rebuilt.quota_alerts = fold_quotas(budgets, rebuilt.wallets)
    rebuilt.breakers = fold_breakers(
        map(call_of, lineage), breaker_config or breaker_rules.BreakerConfig(), partitions
    )
    rebuilt.escalations = fold_escalations(
        escalation_records, escalation_config or escalation_rules.EscalationConfig()
    )
    return rebuilt
