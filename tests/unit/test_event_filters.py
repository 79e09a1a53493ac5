"""The filters of `GET /v1/events/list` and `govledger events tail`: what each accepts,
refuses and matches (the store's side runs in tests/integration/test_query_api.py)."""

from __future__ import annotations

import pytest

from schemas import event_filters
from schemas.event_filters import EventFilters, FilterError, parse_filters
from schemas.records import Guardrail
from tests.unit.builders import call, rejected_call


def test_no_filter_matches_every_call() -> None:
    assert EventFilters().matches(call())
    assert EventFilters().matches(rejected_call())


def test_each_filter_narrows_to_its_field() -> None:
    record = call(
        team_id="alpha",
        key_id="key_1",
        provider="sim",
        model_requested="gpt-x",
        model_selected="sim-small",
        http_status=200,
        guardrails_triggered=(Guardrail(name="pii", action="redact"),),
    )
    for name, hit, miss in [
        ("team", "alpha", "beta"),
        ("key", "key_1", "key_2"),
        ("provider", "sim", "openai"),
        ("model", "sim-small", "gpt-x"),  # the model that served, not the one asked for
        ("status", "ok", "error"),
        ("guardrail", "pii", "toxicity"),
    ]:
        assert parse_filters({name: hit}).matches(record), name
        assert not parse_filters({name: miss}).matches(record), name


def test_status_is_a_class_or_one_http_status() -> None:
    refused = rejected_call(http_status=429)
    assert parse_filters({"status": "error"}).matches(refused)
    assert parse_filters({"status": "429"}).matches(refused)
    assert not parse_filters({"status": "402"}).matches(refused)
    assert not parse_filters({"status": "ok"}).matches(refused)
    assert parse_filters({"status": "429"}).sql_parameters()["http_status"] == 429
    assert parse_filters({"status": "ok"}).sql_parameters()["status_class"] == "ok"


@pytest.mark.parametrize(
    "values",
    [
        {"status": "fine"},
        {"status": "42"},
        {"status": "600"},
        {"team": "x" * (event_filters.MAX_FILTER_CHARS + 1)},
        {"model": "sim\nsmall"},
    ],
)
def test_bad_filters_are_refused_naming_the_filter(values: dict[str, str]) -> None:
    with pytest.raises(FilterError, match=next(iter(values))):
        parse_filters(values)


def test_limits_are_bounded() -> None:
    assert event_filters.parse_limit(None) == event_filters.DEFAULT_LISTED
    assert event_filters.parse_limit(str(event_filters.MAX_LISTED)) == event_filters.MAX_LISTED
    for bad in ("0", "-1", "ten", str(event_filters.MAX_LISTED + 1)):
        with pytest.raises(FilterError, match="limit"):
            event_filters.parse_limit(bad)


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    event_id = "0190f1e2-3a4b-7c5d-8e6f-0123456789ab"
    cursor = event_filters.encode_cursor(1_765_000_000_000, event_id)
    assert event_filters.parse_cursor(cursor) == (1_765_000_000_000, event_id)
    assert event_filters.parse_cursor(None) is None
    for bad in ("1:2", f"x:{event_id}", f"1:{event_id}' OR 1=1", f"{event_id}"):
        with pytest.raises(FilterError, match="cursor"):
            event_filters.parse_cursor(bad)
