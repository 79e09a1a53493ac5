"""Thin Faust adapter: wallet projections and budget settings in, quota alerts out.

Budgets (`wallet.budget_set`) travel on the control topic keyed by tenant; projections
(`wallet.balance`) on the wallet-state topic keyed by wallet. Faust gives one worker the
same partition numbers of every topic, so a wallet's budget and its projections would
in general meet on different workers. One agent therefore forwards each budget, as it
is, to an internal topic keyed by wallet_id; the quotas agent reads that topic and
wallet-state, so every record of one wallet reaches one worker and one table entry. A
key wallet's projection also counts towards its team's quota: the quotas agent forwards
it, as it is, to the same internal topic keyed by the team's wallet id.
"""

from __future__ import annotations

import asyncio
from typing import Any

from schemas import authn, codec
from schemas.authn import SignedChain
from schemas.ids import now_ms
from schemas.records import WalletBalance, WalletBudgetSet
from schemas.topics import ALERTS, CONTROL, DLQ, WALLET_STATE
from streams import metrics as stream_metrics
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


# --- the adapter --------------------------------------------------------------------------


def register(app: Any, chain: SignedChain) -> Any:
    """Register the budget forwarder and the two quota agents on the app."""
    control = app.topic(CONTROL.name, **RAW)
    # Internal (declared by Faust with the app's partition count, like wallet-state) and
    # read by its own agent: Faust declares only the internal topics agents read.
    budgets = app.topic(f"{app.conf.id}-{BUDGETS_SUFFIX}", internal=True, **RAW)
    balances = app.topic(WALLET_STATE.name, **RAW)
    alerts = app.topic(ALERTS.name, **RAW)
    metrics = stream_metrics.of(app)
    dead_letters = app.topic(DLQ.name, **RAW)
    table = app.Table("quotas", key_type=bytes, value_type=bytes)
    # Two agents change the table and a fold awaits its alerts: one fold at a time, so
    # neither reads a quota the other is about to replace.
    folding = asyncio.Lock()

    reject = rejecter(dead_letters, chain, CONSUMER)

    async def fold(event: Any, *, forwarded: bool) -> None:
        """Fold a record into the quotas it counts towards on this worker: a budget, a
        wallet's own spend, or (forwarded) a key wallet's spend towards its team."""
        observed: logic.QuotaEvent | None = None
        message = event.message
        try:
            # Forwarded records keep their producer's header and are checked again, by
            # record type (the internal topic is not in the topic allow-list).
            topic = None if forwarded else message.topic
            record = authn.verifier().decode(topic, event.value, message.headers)
            if isinstance(record, WalletBalance):
                wallet = from_balance(record)
                up = logic.rolled_up(wallet)
                if not forwarded and up is not None:
                    # The team's quota lives where the team wallet's key lands.
                    await budgets.send(
                        key=up.wallet_id.encode(), value=event.value, headers=message.headers
                    )
                observed = up if forwarded else logic.spend_observed(wallet)
            elif isinstance(record, WalletBudgetSet):
                observed = logic.budget_of(record)
            metrics.folded("quotas", record.occurred_at)
        except (codec.DecodeError, ValueError) as exc:
            await reject(event, str(exc))
            return
        if observed is None:
            return
        key = observed.wallet_id.encode()
        async with folding:
            stored = table.get(key)
            quota = logic.decode_quota(stored) if stored else None
            after, crossed = logic.evolve(quota, observed)
            # Each alert is acknowledged before the table changes: a crash in between
            # makes the redelivered record cross the same threshold again, and its alert
            # carries the same derived event id, so the sink keeps one row.
            for alert in crossed:
                _, data = chain.seal_encoded(logic.to_alert(alert, occurred_at=now_ms()))
                headers = chain.headers(data)
                await (await alerts.send(key=alert.tenant_id.encode(), value=data, headers=headers))
                metrics.quota_alert(alert.threshold_percent)
            if after != quota:
                table[key] = logic.encode_quota(after)

    @app.agent(control)  # type: ignore[untyped-decorator]
    async def quota_budgets(stream: Any) -> None:
        async for event in stream.events():
            try:
                record = authn.decode_message(event.message)
            except codec.DecodeError as exc:
                await reject(event, str(exc))
                continue
            if isinstance(record, WalletBudgetSet):
                headers = event.message.headers
                await budgets.send(
                    key=record.wallet_id.encode(), value=event.value, headers=headers
                )

    @app.agent(budgets)  # type: ignore[untyped-decorator]
    async def quota_budgets_by_wallet(stream: Any) -> None:
        async for event in stream.events():
            await fold(event, forwarded=True)

    @app.agent(balances)  # type: ignore[untyped-decorator]
    async def quotas(stream: Any) -> None:
        async for event in stream.events():
            await fold(event, forwarded=False)

    return quotas
