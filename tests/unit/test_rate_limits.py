"""Requests and tokens per minute per key, with the clock passed in."""

from __future__ import annotations

import pytest

from gateway.ratelimit import RateLimiter
from schemas.durations import parse_duration_ms


def admit(
    limiter: RateLimiter, now_s: float, *, rpm: int = 0, tpm: int = 0, tokens: int = 1
) -> int:
    return limiter.admit(
        "key_1", requests_per_minute=rpm, tokens_per_minute=tpm, tokens=tokens, now_s=now_s
    )


def test_without_limits_every_call_is_admitted() -> None:
    limiter = RateLimiter()
    assert all(admit(limiter, 0.0, tokens=10**9) == 0 for _ in range(1_000))


def test_requests_per_minute_refuse_the_call_over_the_limit_with_a_retry_after() -> None:
    limiter = RateLimiter()
    assert [admit(limiter, 0.0, rpm=2) for _ in range(3)] == [0, 0, 30]
    assert admit(limiter, 29.0, rpm=2) == 1  # one request accrues every 30 s
    assert admit(limiter, 30.0, rpm=2) == 0
    assert admit(limiter, 30.0, rpm=2) == 30


def test_tokens_per_minute_count_the_tokens_a_call_may_use() -> None:
    limiter = RateLimiter()
    assert admit(limiter, 0.0, tpm=600, tokens=500) == 0
    assert admit(limiter, 0.0, tpm=600, tokens=200) == 10  # 100 missing, 10 tokens a second
    assert admit(limiter, 10.0, tpm=600, tokens=200) == 0


def test_a_refused_call_takes_nothing_from_either_bucket() -> None:
    limiter = RateLimiter()
    assert admit(limiter, 0.0, rpm=10, tpm=100, tokens=100) == 0
    assert admit(limiter, 0.0, rpm=10, tpm=100, tokens=50) > 0
    # The request bucket still holds 9: small calls pass once tokens accrue.
    assert admit(limiter, 30.0, rpm=10, tpm=100, tokens=50) == 0


def test_a_call_larger_than_the_whole_minute_waits_for_a_full_bucket_not_forever() -> None:
    limiter = RateLimiter()
    assert admit(limiter, 0.0, tpm=100, tokens=1_000) == 0
    assert admit(limiter, 30.0, tpm=100, tokens=1_000) == 30


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [("45s", 45_000), ("30m", 1_800_000), ("12h", 43_200_000), ("90d", 7_776_000_000)],
)
def test_durations(text: str, expected_ms: int) -> None:
    assert parse_duration_ms(text) == expected_ms


@pytest.mark.parametrize("text", ["", "d", "0d", "-1d", "1w", "1.5h", "h1"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms(text)


def test_team_limits_parse_and_reject_malformed_entries() -> None:
    from gateway.ratelimit import Limits, parse_team_limits
    from schemas.settings import SettingsError

    assert parse_team_limits("acme/search=600:100000; acme/ops=0:5000") == {
        ("acme", "search"): Limits(600, 100_000),
        ("acme", "ops"): Limits(0, 5_000),
    }
    assert parse_team_limits("") == {}
    for bad in ("acme=1:2", "acme/search=1", "acme/search=x:2", "/s=1:2", "a/b=1:2;a/b=3:4"):
        with pytest.raises(SettingsError):
            parse_team_limits(bad)
