"""The console's pure parts: sessions (expiry, the bound, fresh ids), money and time as
shown, the SVG charts (escaped, no style attribute), and the Overview's buckets."""

from __future__ import annotations

import pytest

from console import charts, formats
from console.pack_targeting import TargetingError, current_targeting, target_names, with_targeting
from console.pages.overview import buckets
from console.sessions import MAX_THROTTLED_ADDRESSES, LoginThrottle, SessionStore
from console.worker_health import parse_worker_metrics


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


def test_sessions_expire_and_the_store_keeps_at_most_its_bound() -> None:
    clock = Clock()
    store = SessionStore(ttl_s=60, max_sessions=2, clock=clock)
    first = store.create("k1", "key:1", "acme")
    second = store.create("k2", "key:2", None)
    assert store.get(first.session_id) == first and second.org_level and not first.org_level
    third = store.create("k3", "key:3", "acme")  # past the bound: the oldest is logged out
    assert store.get(first.session_id) is None and len(store) == 2
    clock.now_s += 61
    assert store.get(second.session_id) is None and store.get(third.session_id) is None
    assert len(store) == 0


def test_every_session_has_its_own_unguessable_id_and_csrf_token() -> None:
    store = SessionStore(ttl_s=60, max_sessions=100)
    made = [store.create("k", "key:1", "acme") for _ in range(50)]
    tokens = {s.session_id for s in made} | {s.csrf for s in made}
    assert len(tokens) == 100 and all(len(t) >= 43 for t in tokens)
    store.drop(made[0].session_id)
    assert store.get(made[0].session_id) is None
    assert made[1].sees("acme") and not made[1].sees("globex")


def test_money_is_shown_from_integer_nanousd_without_float_drift() -> None:
    assert formats.usd(1_234_567_890_123) == "$1,234.5679"
    assert formats.usd(-50_000, places=6) == "-$0.000050"
    assert formats.usd_exact(100_000_000_000_000_001) == "$100,000,000.000000001"
    assert formats.usd(None) == "$0.0000"
    assert formats.when(0) == "" and formats.when(86_400_000) == "1970-01-02 00:00:00 UTC"
    assert formats.percent(1, 3) == "33.3%" and formats.percent(1, 0) == "-"


def test_charts_escape_their_text_and_carry_no_style_attribute() -> None:
    hostile = '<script>alert("x")</script>'
    series = str(charts.series_chart(hostile, ["a", "b"], [1, 3]))
    pairs = str(charts.paired_bars("t", [(hostile, 2, 0.5), ("b", 0, 0)]))
    for svg in (series, pairs):
        assert "<script>" not in svg and "&lt;script&gt;" in svg
        assert "style=" not in svg and 'role="img"' in svg
    assert "total 4, peak 3" in series
    # An empty window draws an axis and no bar.
    assert "<rect" not in str(charts.series_chart("empty", [], []))


def test_the_overview_fills_empty_buckets_and_drops_rows_outside_the_window() -> None:
    row = {"calls": 2, "cost": 5, "errors": 0, "users": 1, "triggered": 0}
    filled = buckets(
        [{"bucket": 10, **row}, {"bucket": 12, **row}, {"bucket": 99, **row}],
        since_ms=10_000,
        bucket_ms=1_000,
        count=3,
    )
    assert filled["calls"] == [2, 0, 2] and filled["cost"] == [5, 0, 5]


def test_failed_logins_are_throttled_per_address_for_a_minute() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=3, clock=clock)
    for _ in range(3):
        assert throttle.allowed("10.0.0.1")
        throttle.failed("10.0.0.1")
    assert not throttle.allowed("10.0.0.1") and throttle.allowed("10.0.0.2")
    clock.now_s += 61
    assert throttle.allowed("10.0.0.1")
    for i in range(MAX_THROTTLED_ADDRESSES + 5):  # bounded: the oldest are forgotten
        throttle.failed(f"a{i}")
    assert len(throttle._failures) == MAX_THROTTLED_ADDRESSES


def test_worker_metrics_are_read_by_name_and_anything_else_is_refused() -> None:
    text = (
        "# TYPE govledger_commit_stalls_total counter\n"
        'govledger_commit_stalls_total{service="streams"} 3.0\n'
        "# TYPE govledger_consumer_lag gauge\n"
        'govledger_consumer_lag{service="streams",topic="lineage",partition="0"} 4.0\n'
        'govledger_consumer_lag{service="streams",topic="lineage",partition="1"} 1.0\n'
        "# TYPE govledger_escalations_open gauge\n"
        'govledger_escalations_open{priority="P1"} 9.0\n'
    )
    health = parse_worker_metrics("http://w", text)
    assert (health.known, health.commit_stalls, health.dead_letters) == (True, 3, 0)
    assert health.consumer_lag == {("streams", "lineage"): 5} and health.fold_lag_s == {}
    for garbage in ("<html>not metrics</html>", 'govledger_commit_stalls_total{service="x 1'):
        with pytest.raises(ValueError, match=r"invalid metric name|could not convert"):
            parse_worker_metrics("http://w", garbage)


PACK = "name: p\n# why\npolicies:\n  chain:\n    - name: audit-logger\n      policy: {}\n"


def test_a_packs_top_level_targeting_is_replaced_and_nothing_else_changes() -> None:
    assigned = with_targeting(PACK, ["alpha"], [])
    assert assigned == PACK + 'targeting:\n  teams: ["alpha"]\n'
    assert current_targeting(assigned) == (["alpha"], [])
    # An existing block (flow or block style, wherever it is) is replaced, not repeated.
    flow = "targeting: {teams: [x], gateways: [g]}\n" + PACK
    block = PACK.replace("policies:", "targeting:\n  teams:\n    - x\n\npolicies:")
    for source in (flow, block):
        again = with_targeting(source, ["beta"], ["eu-1"])
        assert again.count("targeting:") == 1 and "x" not in again.split("targeting:")[1]
        assert current_targeting(again) == (["beta"], ["eu-1"])
        assert with_targeting(source, [], []) == PACK
    # A layout the line rewrite would change the meaning of is refused, never sent.
    odd = "targeting:\n# teams below\n  teams: [x]\n" + PACK
    with pytest.raises(TargetingError, match="cannot rewrite"):
        with_targeting(odd, ["beta"], [])
    assert current_targeting("- not: a mapping") == ([], [])


def test_team_and_gateway_names_are_checked() -> None:
    assert target_names(" alpha, beta\nalpha ", "teams") == ["alpha", "beta"]
    for bad in ('a"]\nx: [', "a;b", "x" * 65, ",".join(f"t{i}" for i in range(257))):
        with pytest.raises(TargetingError):
            target_names(bad, "teams")
