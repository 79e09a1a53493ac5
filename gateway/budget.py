"""Budget at the door: a call is admitted only if the wallet can cover its reservation
after everything this gateway has committed and the published balance does not show."""

from __future__ import annotations

from gateway import errors
from gateway.errors import GatewayError
from gateway.views import LocalViews
from streams.wallets import logic


class Budget:
    """This gateway's reservations and its settlements not yet in the published balance."""

    def __init__(self, views: LocalViews, producer_id: str) -> None:
        self.views = views
        self.producer_id = producer_id
        self.reserved_nanousd: dict[str, int] = {}
        self.unsettled_nanousd: dict[str, dict[int, int]] = {}

    def _unsettled(self, wallet_id: str) -> dict[int, int]:
        wallet = self.views.wallets.get(wallet_id)
        unsettled = self.unsettled_nanousd.get(wallet_id, {})
        if unsettled and wallet is not None:
            seen = wallet.applied_seqs.get(self.producer_id, 0)
            for seq in [s for s in unsettled if s <= seen]:
                del unsettled[seq]  # the published balance includes it now
        return unsettled

    def available_nanousd(self, wallet_id: str) -> int:
        """What calls through this gateway may still commit from the wallet."""
        return logic.available_nanousd(
            self.views.wallets.get(wallet_id),
            self.producer_id,
            self._unsettled(wallet_id),
            self.reserved_nanousd.get(wallet_id, 0),
        )

    def committed_nanousd(self, wallet_id: str) -> int:
        """What this gateway has committed from the wallet that the published balance does
        not show yet: its settlements in flight and its reservations."""
        return sum(self._unsettled(wallet_id).values()) + self.reserved_nanousd.get(wallet_id, 0)

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
            self.unsettled_nanousd.setdefault(wallet_id, {})[seq] = cost_nanousd
