"""Rate limits divided over the gateway processes on one port (gateway/ratelimit.py):
whatever calls reach whichever process when, the processes together admit no more than
the limit per minute beyond the stated burst, N x max(limit / N, 1 call)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ratelimit import RateLimiter

# (seconds since the previous call, the process it reaches, its tokens)
CALLS = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=20.0),
        st.integers(min_value=0, max_value=7),
        st.integers(min_value=1, max_value=5_000),
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(
    processes=st.integers(min_value=1, max_value=8),
    rpm=st.integers(min_value=0, max_value=300),
    tpm=st.integers(min_value=0, max_value=20_000),
    calls=CALLS,
)
def test_processes_together_stay_within_the_limit_and_the_burst(
    processes: int, rpm: int, tpm: int, calls: list[tuple[float, int, int]]
) -> None:
    limiters = [RateLimiter(processes=processes) for _ in range(processes)]
    now_s = 0.0
    admitted_calls = 0
    admitted_tokens = 0.0
    for gap_s, process, tokens in calls:
        now_s += gap_s
        limiter = limiters[process % processes]
        wait_s = limiter.admit(
            "key", requests_per_minute=rpm, tokens_per_minute=tpm, tokens=tokens, now_s=now_s
        )
        if wait_s == 0:
            admitted_calls += 1
            # What the token bucket takes: the call's tokens, at most one process's share.
            admitted_tokens += min(tokens, max(tpm / processes, 1.0))
        else:
            assert wait_s >= 1  # a refusal always says when to come back
    minutes = now_s / 60
    if rpm:
        assert admitted_calls <= rpm * minutes + processes * max(rpm / processes, 1.0) + 1e-6
    if tpm:
        assert admitted_tokens <= tpm * minutes + processes * max(tpm / processes, 1.0) + 1e-6
