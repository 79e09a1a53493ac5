"""Rebuilding every domain's state at a moment, from ClickHouse or from Kafka."""

from __future__ import annotations

from collections.abc import Callable

from replay.progress import Bar
from replay.sources import (
    ArrowReader,
    calls,
    count_settlements,
    decoded,
    read_kafka,
    settlement_pages,
    types_in,
    until,
)
from replay.state import (
    Call,
    Rebuilt,
    apply_settlement_page,
    fold_breakers,
    fold_escalations,
    fold_quotas,
    fold_wallet_control,
    rebuild_from_events,
)
from schemas.records import (
    EscalationResolved,
    EscalationSlaBreached,
    WalletAllocated,
    WalletBudgetSet,
    WalletCorrected,
    WalletFunded,
    WalletLimitSet,
    WalletRefunded,
)
from schemas.topics import ALERTS, CONTROL, ESCALATIONS, LINEAGE
from streams.breakers import logic as breaker_rules
from streams.escalations import logic as escalation_rules
from streams.wallets import logic as wallet_rules

WALLET_TYPES = tuple(
    t.event_type_name
    for t in (WalletFunded, WalletAllocated, WalletRefunded, WalletCorrected, WalletLimitSet)
)
ESCALATION_CONTROL_TYPES = (
    escalation_rules.CLAIMED,
    escalation_rules.REASSIGNED,
    EscalationResolved.event_type_name,
)
BarFactory = Callable[[str, int | None], Bar]


def terminal_bar(label: str, total: int | None) -> Bar:
    return Bar(label, total)


def wallets_at(
    read: ArrowReader,
    at_ms: int,
    tenant_id: str | None = None,
    *,
    page_rows: int = 500_000,
    bar: BarFactory = terminal_bar,
) -> tuple[dict[str, wallet_rules.Wallet], int]:
    """Every wallet (of one tenant, if given) as it stood at `at_ms`, and the records
    folded: the admin log's wallet events decoded and folded in partition order, then the
    settlements, folded from columns a page at a time."""
    where = f"{types_in(WALLET_TYPES)} AND {until(at_ms, tenant_id)}"
    control = decoded(read, "control_events", where, page_rows)
    state = fold_wallet_control(control)
    progress = bar("wallets", count_settlements(read, at_ms, tenant_id))
    done = 0
    for page in settlement_pages(read, at_ms, tenant_id, page_rows):
        apply_settlement_page(state, page)
        done += page.rows
        progress.update(done)
    progress.close()
    return state, len(control) + done


def rebuild_from_store(
    read: ArrowReader,
    at_ms: int,
    tenant_id: str | None = None,
    *,
    breaker_config: breaker_rules.BreakerConfig | None = None,
    escalation_config: escalation_rules.EscalationConfig | None = None,
    partitions: int = 1,
    page_rows: int = 500_000,
    bar: BarFactory = terminal_bar,
) -> Rebuilt:
    """Wallets, quotas, breakers and escalations at `at_ms`, from the store."""
    rebuilt = Rebuilt(at_ms, tenant_id)
    rebuilt.wallets, rebuilt.events = wallets_at(
        read, at_ms, tenant_id, page_rows=page_rows, bar=bar
    )
    window = until(at_ms, tenant_id)
    budgets = [
        e
        for e in decoded(
            read,
            "control_events",
            f"event_type = '{WalletBudgetSet.event_type_name}' AND {window}",
            page_rows,
        )
        if isinstance(e, WalletBudgetSet)
    ]
    rebuilt.quotas, rebuilt.quota_alerts = fold_quotas(budgets, rebuilt.wallets)
    progress = bar("breakers", None)
    found: list[Call] = []
    for producer, seq, at, tenant, attempts in calls(read, at_ms, tenant_id, page_rows):
        found.append(Call(producer, seq, at, tenant, attempts))
        if len(found) % 10_000 == 0:
            progress.update(len(found))
    progress.update(len(found))
    progress.close()
    rebuilt.breakers = fold_breakers(
        found, breaker_config or breaker_rules.BreakerConfig(), partitions
    )
    records = [
        *decoded(read, "escalation_events", window, page_rows),
        *decoded(
            read,
            "control_events",
            f"{types_in(ESCALATION_CONTROL_TYPES)} AND {window}",
            page_rows,
        ),
        *decoded(
            read,
            "alerts",
            f"event_type = '{EscalationSlaBreached.event_type_name}' AND {window}",
            page_rows,
        ),
    ]
    rebuilt.escalations = fold_escalations(
        records, escalation_config or escalation_rules.EscalationConfig()
    )
    rebuilt.events += len(budgets) + len(found) + len(records)
    return rebuilt


def rebuild_from_kafka(
    bootstrap: str,
    at_ms: int,
    tenant_id: str | None = None,
    *,
    breaker_config: breaker_rules.BreakerConfig | None = None,
    escalation_config: escalation_rules.EscalationConfig | None = None,
    partitions: int = 1,
    bar: BarFactory = terminal_bar,
) -> Rebuilt:
    """The same state from the topics (what they still retain), decoded record by record."""
    topics = [CONTROL.name, LINEAGE.name, ESCALATIONS.name, ALERTS.name]
    events = read_kafka(bootstrap, topics, at_ms)
    progress = bar("records", len(events))
    rebuilt = rebuild_from_events(
        events,
        at_ms,
        tenant_id=tenant_id,
        breaker_config=breaker_config,
        escalation_config=escalation_config,
        partitions=partitions,
        progress=progress.update,
    )
    progress.close()
    return rebuilt
