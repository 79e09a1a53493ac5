"""Every token priced at its own rate: recorded provider replies (in the shapes of the
providers' published API references) priced to the nano-dollar, and prices by date."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from gateway.call_record import CallRecord
from gateway.catalogue import build_catalogue
from schemas.pricing import (
    LIST_PRICES,
    Price,
    PriceBook,
    Usage,
    anthropic_usage,
    cost_nanousd,
    openai_usage,
)
from schemas.settings import GatewaySettings

LISTED = {(p.provider, p.model): p for p in LIST_PRICES}
AUDIO = Price(
    "openai",
    "gpt-4o-audio-preview",
    0,
    input_nanousd_per_mtok=2_500_000_000,
    output_nanousd_per_mtok=10_000_000_000,
    audio_input_nanousd_per_mtok=40_000_000_000,
    audio_output_nanousd_per_mtok=80_000_000_000,
)

# A chat.completion with a prompt-cache hit (OpenAI's reference shape).
CHAT_CACHED = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
}
# A reasoning model's reply: reasoning tokens are part of completion_tokens.
CHAT_REASONING = {
    "object": "chat.completion",
    "model": "o4-mini-2025-04-16",
    "usage": {
        "prompt_tokens": 1234,
        "completion_tokens": 1500,
        "total_tokens": 2734,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 1216},
    },
}
CHAT_AUDIO = {
    "object": "chat.completion",
    "model": "gpt-4o-audio-preview",
    "usage": {
        "prompt_tokens": 120,
        "completion_tokens": 50,
        "total_tokens": 170,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 40},
    },
}
# The Responses API names its counts input/output.
RESPONSE_CACHED = {
    "object": "response",
    "model": "gpt-4.1",
    "usage": {
        "input_tokens": 5000,
        "input_tokens_details": {"cached_tokens": 4096},
        "output_tokens": 100,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 5100,
    },
}
# Anthropic counts cache writes and reads apart from input_tokens.
MESSAGE_CACHE_WRITE = {
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-0",
    "content": [{"type": "text", "text": "..."}],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 21,
        "cache_creation_input_tokens": 188086,
        "cache_read_input_tokens": 0,
        "output_tokens": 393,
    },
}
MESSAGE_CACHE_READ = {
    "type": "message",
    "model": "claude-3-5-haiku-latest",
    "usage": {
        "input_tokens": 50,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 100000,
        "output_tokens": 200,
    },
}

Parse = Callable[[Any], Usage | None]
CASES: list[tuple[str, dict[str, Any], Parse, Price, int]] = [
    # 86 plain x $0.15/M + 1920 cached x $0.075/M + 300 out x $0.60/M
    ("chat cache hit", CHAT_CACHED, openai_usage, LISTED["openai", "gpt-4o-mini"], 336_900),
    # 210 x $1.10 + 1024 cached x $0.275 + 1500 out (1216 reasoning) x $4.40, per M
    ("reasoning", CHAT_REASONING, openai_usage, LISTED["openai", "o4-mini"], 7_112_600),
    # 20 x $2.50 + 100 audio x $40 + 10 x $10 + 40 audio out x $80, per M
    ("audio", CHAT_AUDIO, openai_usage, AUDIO, 7_350_000),
    # 904 x $2 + 4096 cached x $0.50 + 100 x $8, per M
    ("responses", RESPONSE_CACHED, openai_usage, LISTED["openai", "gpt-4.1"], 4_656_000),
    # 21 x $3 + 188086 written x $3.75 + 393 x $15, per M = $0.7112805
    (
        "cache write",
        MESSAGE_CACHE_WRITE,
        anthropic_usage,
        LISTED["anthropic", "claude-sonnet-4-0"],
        711_280_500,
    ),
    # 50 x $0.80 + 100000 read x $0.08 + 200 x $4, per M
    (
        "cache read",
        MESSAGE_CACHE_READ,
        anthropic_usage,
        LISTED["anthropic", "claude-3-5-haiku-latest"],
        8_840_000,
    ),
]


@pytest.mark.parametrize(
    ("reply", "parse", "price", "expected_nanousd"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_recorded_reply_is_priced_to_the_nano_dollar(
    reply: dict[str, Any], parse: Parse, price: Price, expected_nanousd: int
) -> None:
    usage = parse(reply["usage"])
    assert usage is not None
    assert cost_nanousd(price, usage) == expected_nanousd


def test_anthropic_counts_read_in_openai_convention() -> None:
    assert anthropic_usage(MESSAGE_CACHE_WRITE["usage"]) == Usage(
        188107, 393, cache_write_tokens=188086
    )
    assert openai_usage(CHAT_REASONING["usage"]) == Usage(
        1234, 1500, cached_prompt_tokens=1024, reasoning_tokens=1216
    )


def test_rounding_is_up_to_a_whole_nano_dollar_once_per_call() -> None:
    half = Price("p", "m", 0, input_nanousd_per_mtok=500_000, output_nanousd_per_mtok=500_000)
    # Half a nano-dollar a token: two tokens are exactly 1, not 1 + 1 rounded apiece.
    assert cost_nanousd(half, Usage(1, 1)) == 1
    assert cost_nanousd(half, Usage(1, 0)) == 1  # 0.5 rounds up
    assert cost_nanousd(half, Usage(3, 0)) == 2  # 1.5 rounds up
    assert cost_nanousd(half, Usage(0, 0)) == 0


def test_parts_larger_than_their_total_are_priced_by_the_parts() -> None:
    price = LISTED["openai", "gpt-4o-mini"]
    # A hostile report: 50 cached of 10 prompt tokens. Never priced under what it reports.
    assert cost_nanousd(price, Usage(10, 0, cached_prompt_tokens=50)) == 50 * 75


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 1, "completion_tokens": -1},
        {"prompt_tokens": "5", "completion_tokens": 1},
        {"prompt_tokens": 1, "completion_tokens": 1, "prompt_tokens_details": []},
        {
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": True},
        },
    ],
)
def test_a_malformed_usage_is_a_bad_response(usage: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        openai_usage(usage)


def test_the_price_in_force_is_the_latest_effective_on_or_before_the_call() -> None:
    old = Price("openai", "gpt-4o", 1_000, 2_500_000_000, 10_000_000_000)
    new = dataclasses.replace(old, effective_from_ms=2_000, input_nanousd_per_mtok=2_000_000_000)
    book = PriceBook([new, old])
    assert book.price_at("openai", "gpt-4o", 999) is None
    assert book.price_at("openai", "gpt-4o", 1_000) == old
    assert book.price_at("openai", "gpt-4o", 1_999) == old
    assert book.price_at("openai", "gpt-4o", 2_000) == new
    assert book.price_at("openai", "gpt-4o", 10**12) == new
    assert book.price_at("anthropic", "gpt-4o", 2_000) is None
    corrected = dataclasses.replace(new, output_nanousd_per_mtok=9_000_000_000)
    book.add(corrected)
    assert book.prices() == [old, corrected]


def test_a_price_refuses_negative_or_fractional_rates() -> None:
    with pytest.raises(ValueError, match="input_nanousd_per_mtok"):
        Price("p", "m", 0, -1, 0)
    with pytest.raises(ValueError, match="cached_input_nanousd_per_mtok"):
        Price("p", "m", 0, 1, 1, cached_input_nanousd_per_mtok=1.5)  # type: ignore[arg-type]


def test_the_lineage_record_carries_each_count_and_the_cost_of_each_kind() -> None:
    target = build_catalogue(
        GatewaySettings(upstream_base_url="http://127.0.0.1:9", upstream_models="o4-mini")
    )["o4-mini"]
    usage = openai_usage(CHAT_REASONING["usage"])
    assert usage is not None
    call = CallRecord(started=0.0, request_sha256="", trace_id="t", parent_span_id=None)
    call.target, call.usage, call.usage_source = target, usage, "reported"
    call.prompt_tokens, call.completion_tokens = usage.prompt_tokens, usage.completion_tokens
    record = call.lineage(
        region="eu", latency_ms=1.0, http_status=200, error_code=None, decision="allowed"
    )
    assert (record.cached_prompt_tokens, record.reasoning_tokens) == (1024, 1216)
    assert record.cost_nanousd == 7_112_600


def test_replay_reprices_each_call_at_the_price_in_force_at_its_time() -> None:
    from replay.prices import RepriceReport, price_book, reprice_calls
    from tests.unit import builders

    published = builders.price_published()  # gpt-4o: $2 in, $10 out, $1 cached from T0
    old = builders.call(  # before T0: the list price, $2.50 in, $1.25 cached
        model_selected="gpt-4o",
        occurred_at=builders.T0 - 1,
        prompt_tokens=1_000,
        completion_tokens=10,
        cached_prompt_tokens=800,
        cost_nanousd=200 * 2_500 + 800 * 1_250 + 10 * 10_000,
    )
    new = builders.call(
        model_selected="gpt-4o",
        occurred_at=builders.T0,
        prompt_tokens=1_000,
        completion_tokens=10,
        cached_prompt_tokens=800,
        cost_nanousd=200 * 2_000 + 800 * 1_000 + 10 * 10_000,
    )
    overcharged = builders.call(model_selected="gpt-4o", occurred_at=builders.T0 + 1)
    plain_v2 = builders.call()  # gpt-4o-mini at its list price, every token plain
    sim = builders.call(provider="sim", model_selected="sim-small")
    nothing = builders.call(usage_source="none", cost_nanousd=0)
    report = RepriceReport()
    book = price_book([published, builders.price_published(tenant_id="acme", seq=6)])
    reprice_calls([old, new, overcharged, plain_v2, sim, nothing], book, report)
    assert (report.checked, report.unpriced, report.mismatched) == (4, 1, 1)
    (mismatch,) = report.mismatches
    assert mismatch.event_id == overcharged.event_id
    assert mismatch.repriced_nanousd == 1_200 * 2_000 + 350 * 10_000


def test_a_gateway_applies_org_wide_published_prices_only() -> None:
    from gateway.views import LocalViews
    from schemas.topics import CONTROL
    from tests.unit import builders

    views = LocalViews()
    listed = views.prices.price_at("openai", "gpt-4o", builders.T0)
    views.apply(builders.signed_message(CONTROL.name, builders.price_published(tenant_id="acme")))
    assert views.prices.price_at("openai", "gpt-4o", builders.T0) == listed
    views.apply(builders.signed_message(CONTROL.name, builders.price_published(seq=6)))
    now = views.prices.price_at("openai", "gpt-4o", builders.T0)
    assert now is not None and now.input_nanousd_per_mtok == 2_000_000_000
    assert views.prices.price_at("openai", "gpt-4o", builders.T0 - 1) == listed
