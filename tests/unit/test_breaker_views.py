"""How a gateway's views fold the breaker-state topic: the newest published state wins.

Moved from tests/integration/test_breakers_fleet.py (it needed no stack)."""

from __future__ import annotations

from gateway.views import LocalViews
from schemas.records import BreakerState
from schemas.topics import BREAKER_STATE
from tests.unit import builders

OUTAGE_MODEL = "outage-primary"


def test_a_gateway_keeps_the_newest_published_fleet_state() -> None:
    """No stack needed: how a gateway's views fold the breaker-state topic."""
    views = LocalViews()

    def published(state: str, occurred_at: int, open_until: int | None = None) -> None:
        record = BreakerState(
            event_id="0190b6a8-0000-7000-8000-000000000000",
            event_type=BreakerState.event_type_name,
            occurred_at=occurred_at,
            tenant_id="",
            producer_id="streams-breakers-1",
            seq=occurred_at,
            provider="openai",
            model=OUTAGE_MODEL,
            state=state,
            opened_at=None if open_until is None else open_until - 1_000,
            open_until=open_until,
            failures_in_window=0,
            applied_seqs={},
        )
        views.apply(builders.signed_message(BREAKER_STATE.name, record))

    target = ("openai", OUTAGE_MODEL)
    published("open", 2_000, open_until=3_000)
    assert views.fleet_breakers[target] == ("open", 3_000)
    published("closed", 1_000)  # older: a replay or a rebalance's overlap
    assert views.fleet_breakers[target] == ("open", 3_000)
    published("closed", 4_000)
    assert views.fleet_breakers[target] == ("closed", None)
    published("ajar", 5_000)  # not a state: skipped
    assert views.fleet_breakers[target] == ("closed", None)
