"""Reading the wallet-state topic to its end: the wallets agent's state whenever it is
assigned partitions (at start, after a kill, on a rebalance), which includes balances the
sink restored from the store into a fresh broker."""

from __future__ import annotations

import asyncio
from typing import Any

from schemas import authn, codec
from schemas.kafka import TopicTailer
from schemas.records import WalletBalance
from schemas.topics import WALLET_STATE
from streams.wallets import logic

SEED_TIMEOUT_S = 60.0


async def load_wallet_seeds(
    bootstrap: str, known: dict[str, logic.Wallet] | None = None
) -> dict[str, logic.Wallet]:
    """The latest published balance of every wallet, or the `known` wallet where that is
    newer (has applied more entries)."""
    seeds: dict[str, logic.Wallet] = dict(known or {})

    def keep(message: Any) -> None:
        try:
            record = authn.decode_message(message)
        except codec.DecodeError:
            return  # forged or broken: the sink dead-letters it; a seed needs good balances
        if not isinstance(record, WalletBalance):
            return
        seeds[record.wallet_id] = logic.latest(seeds.get(record.wallet_id), record)

    tailer = TopicTailer(bootstrap, [WALLET_STATE.name], keep)
    await tailer.start()
    try:
        await asyncio.wait_for(tailer.caught_up.wait(), timeout=SEED_TIMEOUT_S)
    finally:
        await tailer.stop()
    return seeds
