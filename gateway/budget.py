"""Budget at the door: a call is admitted only if the wallet can cover its reservation
after everything this gateway has committed and the published balance does not show."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from gateway import errors
from gateway.errors import GatewayError
from gateway.views import LocalViews


@dataclass(slots=True)
class Unsettled:
    """This gateway's settlements of one wallet that the published balance may not show
    yet, oldest first (seqs only grow), with their running total."""

    entries: deque[tuple[int, int]] = field(default_factory=deque)
    total_nanousd: int = 0

    def add(self, seq: int, cost_nanousd: int) -> None:
        assert not self.entries or seq > self.entries[-1][0], "one producer's seqs grow"
        self.entries.append((seq, cost_nanousd))
        self.total_nanousd += cost_nanousd

    def drop_through(self, seen_seq: int) -> None:
        """Forget settlements the published balance includes (seq <= its watermark)."""
        while self.entries and self.entries[0][0] <= seen_seq:
            self.total_nanousd -= self.entries.popleft()[1]


class Budget:
    """This gateway's reservations and its settlements not yet in the published balance.

    The same rule as `streams.wallets.logic.available_nanousd`, kept incrementally: a
    call costs O(1) however far the published balance lags, instead of a scan of every
    settlement in flight."""

    def __init__(self, views: LocalViews, producer_id: str) -> None:
        self.views = views
        self.producer_id = producer_id
        self.reserved_nanousd: dict[str, int] = {}
        self.unsettled: dict[str, Unsettled] = {}

    def _pending_nanousd(self, wallet_id: str) -> int:
        unsettled = self.unsettled.get(wallet_id)
        if unsettled is None:
            return 0
        wallet = self.views.wallets.get(wallet_id)
        if wallet is not None:
            unsettled.drop_through(wallet.applied_seqs.get(self.producer_id, 0))
        return unsettled.total_nanousd

    def available_nanousd(self, wallet_id: str) -> int:
        """What calls through this gateway may still commit from the wallet: its balance
        plus its overdraft limit, minus what this gateway committed that it does not show."""
        wallet = self.views.wallets.get(wallet_id)
        balance = (
            wallet.balance_nanousd + wallet.overdraft_limit_nanousd if wallet is not None else 0
        )
        return balance - self._pending_nanousd(wallet_id) - self.reserved_nanousd.get(wallet_id, 0)

    def committed_nanousd(self, wallet_id: str) -> int:
        """What this gateway has committed from the wallet that the published balance does
        not show yet: its settlements in flight and its reservations."""
        return self._pending_nanousd(wallet_id) + self.reserved_nanousd.get(wallet_id, 0)

    def reserve(self, wallet_id: str, amount_nanousd: int) -> None:
        """Hold an amount for a call, or refuse it with budget_exhausted."""
        assert amount_nanousd >= 0, "reservations are non-negative"
        available = self.available_nanousd(wallet_id)
        if available < amount_nanousd:
            raise GatewayError(
                errors.BUDGET_EXHAUSTED,
                f"wallet {wallet_id} cannot cover this call "
                f"(available {available} nano-USD, needs up to {amount_nanousd})",
            )
        self.reserved_nanousd[wallet_id] = self.reserved_nanousd.get(wallet_id, 0) + amount_nanousd

    def release(self, wallet_id: str, amount_nanousd: int) -> None:
        """Give back a reservation when its call has ended (settled or not)."""
        left = self.reserved_nanousd.get(wallet_id, 0) - amount_nanousd
        assert left >= 0, "released more than was reserved"
        self.reserved_nanousd[wallet_id] = left

    def settled(self, wallet_id: str, seq: int, cost_nanousd: int) -> None:
        """A call's settlement was produced as this gateway's record `seq`."""
        if cost_nanousd > 0:
            self.unsettled.setdefault(wallet_id, Unsettled()).add(seq, cost_nanousd)
