"""Thin adapter: the intake's batches in, one balance per changed wallet out.

The wallets live in this process's memory, reloaded from the wallet-state topic whenever
partitions are assigned: every balance there is a whole projection with its watermarks,
so the topic is the changelog, and a worker that takes partitions over from another (or
from itself, killed) starts from what was published before those records were committed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from schemas.authn import SignedChain
from schemas.ids import now_ms, uuid7
from schemas.topics import WALLET_STATE
from streams.intake import RAW, Decoded, Domain
from streams.seeds import load_wallet_seeds
from streams.wallets import logic


@dataclasses.dataclass(slots=True)
class _Book:
    """The one mutable thing: every wallet this worker knows, replaced by each batch."""

    wallets: dict[str, logic.Wallet] = dataclasses.field(default_factory=dict)


def register(app: Any, bootstrap: str, chain: SignedChain) -> Domain:
    """The wallets' fold for the intake, and their reload on assignment."""
    balances = app.topic(WALLET_STATE.name, **RAW)
    book = _Book()

    async def reload_wallets(_lineage: frozenset[int]) -> None:
        # Nothing is folded until this returns; the newer of each wallet wins.
        book.wallets = await load_wallet_seeds(bootstrap, book.wallets)

    async def fold_wallets(batch: Sequence[Decoded]) -> None:
        # Step by step in place, keeping what changed: a copy of every wallet and a scan
        # of them all per batch cost time in proportion to the wallets, not the batch
        # (bench/growth_worker.py: 40 ms a batch of 100 at 100,000 wallets). A fold that
        # raises stops the intake, and the wallets are reloaded from wallet-state.
        changed = logic.fold_in_place((decoded.record for decoded in batch), book.wallets)
        for wallet_id, wallet in changed.items():
            balance = logic.to_balance(wallet, event_id=uuid7(), occurred_at=now_ms())
            _, value = chain.seal_encoded(balance)
            await balances.send(key=wallet_id.encode(), value=value, headers=chain.headers(value))

    return Domain(fold_wallets, on_assigned=reload_wallets)
