"""Thin Faust adapter: wallet projections and budget settings in, quota alerts out.

Budgets (`wallet.budget_set`) travel on the control topic keyed by tenant; projections
(`wallet.balance`) on the wallet-state topic keyed by wallet. Faust gives one worker the
same partition numbers of every topic, so a wallet's budget and its projections would
in general meet on different workers. One agent therefore forwards each budget, as it
is, to an internal topic keyed by wallet_id; the quotas agent reads that topic and
wallet-state, so every record of one wallet reaches one worker and one table entry.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson

from schemas import codec
from schemas.ids import now_ms, uuid7
from schemas.records import QuotaThresholdCrossed, WalletBalance, WalletBudgetSet
from schemas.topics import ALERTS, CONTROL, DLQ, WALLET_STATE
from streams.dead_letters import rejecter
from streams.quotas import logic
from streams.wallets.logic import from_balance

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
CONSUMER = "streams.quotas"
BUDGETS_SUFFIX = "quota-budgets"
"""The internal topic of budgets keyed by wallet: `<worker_app_id>-quota-budgets`."""


# --- pure helpers ------------------------------------------------------------------------


def encode_quota(quota: logic.Quota) -> bytes:
    """A quota as the table keeps it: JSON of its fields, sets and tuples as lists."""
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(quota):
        value = getattr(quota, field.name)
        fields[field.name] = sorted(value) if isinstance(value, frozenset) else value
    return orjson.dumps(fields)


def decode_quota(data: bytes) -> logic.Quota:
    """The quota `encode_quota` wrote."""
    fields = orjson.loads(data)
    fields["thresholds_percent"] = tuple(fields["thresholds_percent"])
    fields["crossed_percent"] = frozenset(fields["crossed_percent"])
    return logic.Quota(**fields)


def budget_of(record: WalletBudgetSet) -> logic.BudgetSet:
    """The budget a control record sets; ValueError when the record breaks the rules the
    admin API checks (a record written some other way)."""
    return logic.budget_set(
        wallet_id=record.wallet_id,
        tenant_id=record.tenant_id,
        team_id=record.team_id,
        budget_nanousd=record.budget_nanousd,
        occurred_at=record.occurred_at,
        thresholds_percent=record.thresholds_percent,
    )


def to_alert(
    crossed: logic.ThresholdCrossed, *, event_id: str, occurred_at: int
) -> QuotaThresholdCrossed:
    """The `quota.threshold` record of a crossing; the chain seals it."""
    return QuotaThresholdCrossed(
        event_id=event_id,
        event_type=QuotaThresholdCrossed.event_type_name,
        occurred_at=occurred_at,
        tenant_id=crossed.tenant_id,
        producer_id="",
        seq=0,
        wallet_id=crossed.wallet_id,
        team_id=crossed.team_id,
        period_start_at=crossed.period_start_at,
        threshold_percent=crossed.threshold_percent,
        spent_nanousd=crossed.spent_nanousd,
        budget_nanousd=crossed.budget_nanousd,
    )


# --- the adapter --------------------------------------------------------------------------


def register(app: Any, producer_id: str) -> Any:
    """Register the budget forwarder and the two quota agents on the app."""
    control = app.topic(CONTROL.name, **RAW)
    # Internal (declared by Faust with the app's partition count, like wallet-state) and
    # read by its own agent: Faust declares only the internal topics agents read.
    budgets = app.topic(f"{app.conf.id}-{BUDGETS_SUFFIX}", internal=True, **RAW)
    balances = app.topic(WALLET_STATE.name, **RAW)
    alerts = app.topic(ALERTS.name, **RAW)
    dead_letters = app.topic(DLQ.name, **RAW)
    table = app.Table("quotas", key_type=bytes, value_type=bytes)
    chain = codec.HashChain(producer_id)
    # Two agents change the table and a fold awaits its alerts: one fold at a time, so
    # neither reads a quota the other is about to replace.
    folding = asyncio.Lock()

    reject = rejecter(dead_letters, chain, CONSUMER)

    async def fold(event: Any) -> None:
        try:
            record = codec.decode(event.value)
            if isinstance(record, WalletBalance):
                observed: logic.QuotaEvent = logic.spend_observed(from_balance(record))
            elif isinstance(record, WalletBudgetSet):
                observed = budget_of(record)
            else:
                return
        except (codec.DecodeError, ValueError) as exc:
            await reject(event, str(exc))
            return
        key = observed.wallet_id.encode()
        async with folding:
            stored = table.get(key)
            quota = decode_quota(stored) if stored else None
            after, crossed = logic.evolve(quota, observed)
            # Each alert is acknowledged before the table changes: a crash in between
            # makes the redelivered record cross the same threshold again (a repeated
            # alert), never a lost one.
            for alert in crossed:
                at = now_ms()
                alert_record = to_alert(alert, event_id=uuid7(at), occurred_at=at)
                _, data = chain.seal_encoded(alert_record)
                await (await alerts.send(key=alert.tenant_id.encode(), value=data))
            if after != quota:
                table[key] = encode_quota(after)

    @app.agent(control)  # type: ignore[untyped-decorator]
    async def quota_budgets(stream: Any) -> None:
        async for event in stream.events():
            try:
                record = codec.decode(event.value)
            except codec.DecodeError as exc:
                await reject(event, str(exc))
                continue
            if isinstance(record, WalletBudgetSet):
                await budgets.send(key=record.wallet_id.encode(), value=event.value)

    @app.agent(budgets)  # type: ignore[untyped-decorator]
    async def quota_budgets_by_wallet(stream: Any) -> None:
        async for event in stream.events():
            await fold(event)

    @app.agent(balances)  # type: ignore[untyped-decorator]
    async def quotas(stream: Any) -> None:
        async for event in stream.events():
            await fold(event)

    return quotas
