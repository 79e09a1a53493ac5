"""The restart policy of `govledger up`: backoff that doubles within the crash-loop window
and resets outside it, the restart number, the crash loop, and how an exit reads."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from govledger.runtime import Child, CrashLoopError, Stack
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


# --- the Stack's supervisor, with stand-in parts (sleeping processes) ------------------


class SleepingStack(Stack):
    """A Stack whose parts are `sleep` processes: what the supervisor does, without a
    broker or a store (the real parts: tests/integration/test_kill_any_part.py)."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        environ = {
            "GOVLEDGER_DATA_DIR": str(tmp_path),
            "GOVLEDGER_RESTART_BACKOFF_S": "0",
            "GOVLEDGER_CONSOLE_PORT": "0",
        }
        environ.update(env)
        super().__init__(load(RuntimeSettings, environ), environ)
        self.launched: list[tuple[str, ...]] = []

    def _sleeper(self, name: str) -> None:
        process = subprocess.Popen(["sleep", "60"])
        self._put(Child(name, process, self._open_log(name)))

    def _start_broker(self) -> None:
        self._sleeper("broker")

    def _launch(self, names: tuple[str, ...]) -> None:
        self.launched.append(names)
        for name in names:
            self._sleeper(name)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[SleepingStack]:
    running = SleepingStack(tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def pids(stack: Stack) -> dict[str, int]:
    return {c.name: c.process.pid for c in stack.children}


def test_a_killed_part_alone_is_restarted_and_the_restart_is_logged(
    stack: SleepingStack,
) -> None:
    before = pids(stack)
    stack.kill("worker")
    stack.child("worker").process.wait()
    assert stack.supervise_once() == ["worker"]
    after = pids(stack)
    assert after["worker"] != before["worker"]
    assert {k: v for k, v in after.items() if k != "worker"} == {
        k: v for k, v in before.items() if k != "worker"
    }
    assert [c.name for c in stack.children] == ["broker", "sink", "worker", "gateway", "notifier"]
    assert stack.restarts == {"worker": 1}
    assert stack.restart_log[0].startswith("worker ended with signal SIGKILL; restart 1 in 0 s")
    assert stack.supervise_once() == []  # nothing else exited


def test_a_dead_broker_takes_every_part_down_and_up_again_sink_first(
    stack: SleepingStack,
) -> None:
    before = pids(stack)
    stack.kill("broker", signal.SIGTERM)
    stack.child("broker").process.wait()
    assert stack.supervise_once() == ["broker"]
    after = pids(stack)
    assert all(after[name] != before[name] for name in before)
    assert stack.launched[-2:] == [("sink", "worker", "gateway"), ("notifier",)]
    assert stack.restarts == {"broker": 1}
    assert "broker ended with signal SIGTERM; restart 1" in stack.restart_log[0]


def test_a_part_that_keeps_exiting_stops_supervision_with_the_reason(tmp_path: Path) -> None:
    stack = SleepingStack(tmp_path, GOVLEDGER_RESTART_LIMIT="2")
    stack.start()
    try:
        stack.start_supervising()
        for n in range(1, 4):
            stack.kill("sink")
            if n < 3:
                wait_until(lambda n=n: stack.restarts["sink"] == n)  # type: ignore[misc]
        wait_until(lambda: stack.gave_up is not None)
        assert stack.gave_up is not None
        assert stack.gave_up.startswith("sink crash loop: it exited after 2 restarts")
        assert stack.gave_up.endswith("it last ended with signal SIGKILL")
    finally:
        stack.stop()
    assert stack.children == []


def wait_until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.02)


def test_up_exits_1_with_the_reason_when_supervision_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from govledger import logs, runtime
    from govledger.commands.up import cmd_up

    class GivingUp(SleepingStack):
        def __init__(self, settings: RuntimeSettings) -> None:
            super().__init__(tmp_path, GOVLEDGER_RESTART_LIMIT="0")

    monkeypatch.setattr(runtime, "Stack", GivingUp)
    monkeypatch.setenv("GOVLEDGER_DATA_DIR", str(tmp_path))
    made: list[Stack] = []

    def note(self: Stack) -> None:  # supervision runs where `up` waits, below
        made.append(self)

    monkeypatch.setattr(GivingUp, "start_supervising", note)
    original_sleep = time.sleep

    def kill_then_supervise(seconds: float) -> None:
        # Where `up` waits: the worker dies and the supervisor gives up on it.
        stack = made[0]
        if stack.gave_up is None:
            stack.kill("worker")
            stack.child("worker").process.wait()
            try:
                stack.supervise_once()
            except CrashLoopError as exc:
                stack.gave_up = str(exc)
        original_sleep(0)

    monkeypatch.setattr(time, "sleep", kill_then_supervise)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)  # pytest keeps its own
    # `up` points the process's logs at its stderr, which pytest closes after this test:
    # later tests that log would write to a closed file.
    monkeypatch.setattr(logs, "configure", lambda *args: None)
    assert cmd_up(argparse.Namespace()) == 1
    # The reason is a log line (stderr once `up` configured logs; structlog's default,
    # stdout, with configure stubbed out).
    shown = capsys.readouterr()
    assert "worker crash loop: it exited after 0 restarts" in shown.err + shown.out
    assert made[0].children == []  # stopped
