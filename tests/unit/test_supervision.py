"""The restart policy of `govledger up`: backoff that doubles within the crash-loop window
and resets outside it, the restart number, the crash loop, and how an exit reads."""

from __future__ import annotations

import pytest

from govledger.supervision import CrashLoop, Restart, RestartPolicy, decide, how_it_ended
from schemas.settings import RuntimeSettings, SettingsError, load

POLICY = RestartPolicy(limit=3, window_s=60.0, backoff_s=0.5, backoff_max_s=1.5)


def test_a_first_exit_is_restarted_after_the_initial_backoff() -> None:
    assert decide(POLICY, "worker", [], now_s=100.0) == Restart(number=1, delay_s=0.5)


def test_the_backoff_doubles_within_the_window_up_to_its_cap() -> None:
    assert decide(POLICY, "worker", [90.0], now_s=100.0) == Restart(2, 1.0)
    assert decide(POLICY, "worker", [80.0, 90.0], now_s=100.0) == Restart(3, 1.5)  # not 2.0


def test_restarts_older_than_the_window_reset_the_backoff_not_the_count() -> None:
    decision = decide(POLICY, "sink", [0.0, 10.0, 20.0, 30.0], now_s=100.0)
    assert decision == Restart(number=5, delay_s=0.5)


def test_more_than_limit_restarts_in_the_window_is_a_crash_loop_naming_the_part() -> None:
    decision = decide(POLICY, "sink", [45.0, 50.0, 99.0], now_s=100.0)
    assert isinstance(decision, CrashLoop)
    assert decision.reason.startswith("sink crash loop: it exited after 3 restarts within 60 s")
    assert "GOVLEDGER_RESTART_LIMIT=3" in decision.reason
    # The oldest falls out of the window: restarted again.
    assert decide(POLICY, "sink", [40.0, 50.0, 99.0], now_s=100.0) == Restart(4, 1.5)


def test_a_limit_of_zero_never_restarts() -> None:
    never = RestartPolicy(limit=0, window_s=1.0, backoff_s=0.0, backoff_max_s=0.0)
    assert isinstance(decide(never, "gateway", [], now_s=5.0), CrashLoop)


@pytest.mark.parametrize(
    ("returncode", "text"),
    [(0, "exit code 0"), (3, "exit code 3"), (-9, "signal SIGKILL"), (-15, "signal SIGTERM")],
)
def test_how_a_part_ended_reads_as_an_exit_code_or_a_signal_name(
    returncode: int, text: str
) -> None:
    assert how_it_ended(returncode) == text


def test_the_policy_settings_load_and_refuse_nonsense() -> None:
    settings = load(
        RuntimeSettings,
        {"GOVLEDGER_RESTART_LIMIT": "2", "GOVLEDGER_RESTART_WINDOW_S": "30"},
    )
    assert (settings.restart_limit, settings.restart_window_s) == (2, 30.0)
    with pytest.raises(SettingsError, match="GOVLEDGER_RESTART_BACKOFF_S"):
        load(
            RuntimeSettings,
            {"GOVLEDGER_RESTART_BACKOFF_S": "5", "GOVLEDGER_RESTART_BACKOFF_MAX_S": "1"},
        )
    with pytest.raises(SettingsError, match="GOVLEDGER_RESTART_LIMIT"):
        load(RuntimeSettings, {"GOVLEDGER_RESTART_WINDOW_S": "0"})
