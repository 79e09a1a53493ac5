"""Thin Faust adapter: lineage and control records in, wallet balances out.

Events are taken in batches: each wallet a batch touches is folded once and published
once, so a busy wallet costs one balance record and one table write per batch, not per
call. A batch waits at most BATCH_WITHIN_S, which bounds what it adds to the time from
settlement to visible balance.
"""

from __future__ import annotations

from typing import Any

from schemas import codec
from schemas.dead_letter import dead_letter
from schemas.ids import now_ms, uuid7
from schemas.records import WalletBalance
from schemas.topics import CONTROL, DLQ, LINEAGE, WALLET_STATE
from streams.wallets import logic

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
BATCH_EVENTS = 2_000
BATCH_WITHIN_S = 0.05


def register(app: Any, seeds: dict[str, logic.Wallet], producer_id: str) -> Any:
    """Register the wallets agent; `seeds` are balances restored from the store."""
    source = app.topic(LINEAGE.name, CONTROL.name, **RAW)
    balances = app.topic(WALLET_STATE.name, **RAW)
    dead_letters = app.topic(DLQ.name, **RAW)
    table = app.Table("wallets", key_type=bytes, value_type=bytes)
    chain = codec.HashChain(producer_id)

    def stored(wallet_id: str) -> logic.Wallet | None:
        value = table.get(wallet_id.encode())
        return logic.from_balance(codec.decode_as(value, WalletBalance)) if value else None

    async def reject(event: Any, error: str) -> None:
        message = event.message
        rejected = dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            consumer="streams.wallets",
            error=error,
            payload=event.value,
        )
        await dead_letters.send(
            key=message.topic.encode(), value=codec.encode(chain.seal(rejected))
        )

    @app.agent(source)  # type: ignore[untyped-decorator]
    async def wallets(stream: Any) -> None:
        async for events in stream.take_events(BATCH_EVENTS, within=BATCH_WITHIN_S):
            touched: dict[str, logic.Wallet] = {}
            last_event: dict[str, Any] = {}
            for event in events:
                try:
                    entry = logic.entry_of(codec.decode(event.value))
                except codec.DecodeError as exc:
                    await reject(event, str(exc))
                    continue
                if entry is None:
                    continue
                wallet = touched.get(entry.wallet_id)
                if wallet is None:
                    wallet = stored(entry.wallet_id) or seeds.get(entry.wallet_id)
                if not logic.is_applied(wallet, entry):
                    touched[entry.wallet_id] = logic.evolve(wallet, entry)
                    last_event[entry.wallet_id] = event
            for wallet_id, wallet in touched.items():
                # The table's changelog partition follows the current event's partition;
                # a batch has no single current event, so name the wallet's own.
                stream._set_current_event(last_event[wallet_id])
                balance = logic.to_balance(
                    wallet, event_id=uuid7(), occurred_at=now_ms(), producer_id="", seq=0
                )
                value = chain.seal_encoded(balance)[1]
                table[wallet_id.encode()] = value
                await balances.send(key=wallet_id.encode(), value=value)

    return wallets
