"""What a gateway may still commit: the published balance, minus its own settlements the
balance does not show yet, minus its reservations."""

from __future__ import annotations

from types import MappingProxyType

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.wallets.logic import Wallet, available_nanousd


def wallet(balance: int, seen: dict[str, int]) -> Wallet:
    return Wallet(
        "acme/search",
        "acme",
        "search",
        balance_nanousd=balance,
        applied_seqs=MappingProxyType(seen),
    )


def test_an_unknown_wallet_has_nothing_to_spend() -> None:
    assert available_nanousd(None, "gw-1", {}, 0) == 0
    assert available_nanousd(None, "gw-1", {}, 5) == -5


def test_own_settlements_above_the_watermark_are_not_yet_in_the_balance() -> None:
    published = wallet(1_000, {"gw-1": 7})
    unsettled = {6: 100, 7: 100, 8: 30, 9: 20}  # seq 6 and 7 are already in the balance
    assert available_nanousd(published, "gw-1", unsettled, 0) == 1_000 - 30 - 20


def test_reservations_come_off_too() -> None:
    assert available_nanousd(wallet(1_000, {}), "gw-1", {1: 10}, 250) == 1_000 - 10 - 250


def test_another_gateways_watermark_does_not_count_for_this_one() -> None:
    published = wallet(1_000, {"gw-2": 99})
    assert available_nanousd(published, "gw-1", {5: 40}, 0) == 960


@settings(max_examples=200, deadline=None)
@given(
    costs=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
    watermarks=st.lists(st.integers(min_value=0, max_value=45), min_size=1, max_size=6),
    reserved=st.integers(min_value=0, max_value=1_000),
)
def test_the_gateway_budget_keeps_the_same_rule_incrementally(
    costs: list[int], watermarks: list[int], reserved: int
) -> None:
    """gateway.budget.Budget answers what `available_nanousd` defines, whatever the
    published balance has caught up to, as the watermark moves forward."""
    from gateway.budget import Budget
    from gateway.views import LocalViews

    views = LocalViews()
    budget = Budget(views, "gw-1")
    unsettled: dict[int, int] = {}
    for seq, cost in enumerate(costs, start=1):
        budget.settled("acme/search", seq, cost)
        if cost > 0:
            unsettled[seq] = cost
    budget.reserved_nanousd["acme/search"] = reserved
    for seen in sorted(watermarks):
        views.wallets["acme/search"] = wallet(50_000, {"gw-1": seen})
        expected = available_nanousd(views.wallets["acme/search"], "gw-1", unsettled, reserved)
        assert budget.available_nanousd("acme/search") == expected
