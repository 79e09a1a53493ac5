"""One gateway per core (gateway/processes.py): how many processes, what each is told,
the rate limits they divide between them, and the parent that restarts them."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.processes import (
    auto_processes,
    child_env,
    metrics_port,
    part_index,
    part_name,
    resolve_processes,
    serving_processes,
    shares_port,
)
from gateway.ratelimit import RateLimiter, process_share
from govledger.gateway_parent import GatewayProcesses
from govledger.runtime import Stack
from govledger.supervision import RestartPolicy
from schemas.settings import GatewaySettings, RuntimeSettings, SettingsError, load


@pytest.mark.parametrize(
    ("cores", "processes"), [(1, 1), (2, 1), (3, 2), (4, 3), (8, 6), (16, 13), (64, 55)]
)
def test_by_cores_leaves_the_other_parts_a_core_and_their_share(cores: int, processes: int) -> None:
    assert auto_processes(cores) == processes
    assert resolve_processes(0, cores) == processes
    # The worker and sink need ~0.15 of a gateway's CPU per call: what is left suffices.
    assert cores == 1 or processes * 1.15 <= cores


def test_a_configured_count_is_taken_as_is() -> None:
    assert resolve_processes(3, 2) == 3


def test_part_names_keep_gateway_for_the_first_and_number_the_others() -> None:
    names = [part_name(i) for i in range(1, 4)]
    assert names == ["gateway", "gateway-2", "gateway-3"]
    assert [part_index(n) for n in names] == [1, 2, 3]
    assert [part_index(n) for n in ("sink", "gateway-1", "gateway-x", "worker-2")] == [0] * 4


def test_each_child_is_told_the_count_and_its_index() -> None:
    env = child_env({"GOVLEDGER_GATEWAY_PORT": "9000"}, 4, 3)
    settings = load(GatewaySettings, env)
    assert (settings.gateway_processes, settings.gateway_process_index) == (4, 3)
    assert serving_processes(settings) and shares_port(settings)
    assert serving_processes(settings) == 4
    lone = load(GatewaySettings, {"GOVLEDGER_GATEWAY_PROCESSES": "4"})  # a parent
    assert serving_processes(lone) == 1 and not shares_port(lone)


def test_each_process_serves_its_own_metrics_on_a_port_of_its_own() -> None:
    base = {"GOVLEDGER_GATEWAY_METRICS_PORT": "9180"}
    ports = [metrics_port(load(GatewaySettings, child_env(base, 3, i))) for i in (1, 2, 3)]
    assert ports == [9180, 9181, 9182]
    assert metrics_port(load(GatewaySettings, child_env({}, 3, 2))) == 0  # not asked for
    assert metrics_port(load(GatewaySettings, base)) == 0  # a lone gateway: the shared port


@pytest.mark.parametrize(
    "environ",
    [
        {"GOVLEDGER_GATEWAY_PROCESSES": "-1"},
        {"GOVLEDGER_GATEWAY_PROCESS_INDEX": "-1"},
        {"GOVLEDGER_GATEWAY_METRICS_PORT": "70000"},
    ],
)
def test_settings_out_of_range_are_refused(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        load(GatewaySettings, environ)


def test_up_runs_one_part_per_gateway_process(tmp_path: Path) -> None:
    env = {"GOVLEDGER_DATA_DIR": str(tmp_path), "GOVLEDGER_GATEWAY_PROCESSES": "3"}
    stack = Stack(load(RuntimeSettings, env), env)
    assert stack.client_parts == ("sink", "worker", "gateway", "gateway-2", "gateway-3")
    one = Stack(load(RuntimeSettings, {}), {})
    assert one.client_parts == ("sink", "worker", "gateway")


# --- rate limits across processes ------------------------------------------------------


def test_a_share_is_the_limit_over_the_processes_never_below_one_call() -> None:
    assert process_share(60, 1) == (60.0, 60.0)
    assert process_share(60, 4) == (15.0, 15.0)
    assert process_share(2, 4) == (1.0, 0.5)  # holds one call; refills one in 2 minutes


@pytest.mark.parametrize(("rpm", "processes"), [(60, 4), (7, 3), (2, 4), (1, 2), (100, 1)])
def test_processes_together_admit_no_more_than_the_limit_beyond_one_burst(
    rpm: int, processes: int
) -> None:
    """Every process offered three calls a second for ten minutes (more than any limit
    here): together they admit at most limit x minutes plus the stated burst, and at least
    the limit's sustained rate."""
    limiters = [RateLimiter(processes=processes) for _ in range(processes)]
    minutes = 10
    admitted = 0
    for tick in range(minutes * 60 * 3):
        second = tick / 3
        for limiter in limiters:
            ok = limiter.admit(
                "key_1", requests_per_minute=rpm, tokens_per_minute=0, tokens=1, now_s=second
            )
            admitted += ok == 0
    burst = processes * max(rpm / processes, 1.0)
    assert admitted <= rpm * minutes + burst
    assert admitted >= rpm * (minutes - 1)


def test_one_process_gives_a_client_that_reaches_only_it_its_share() -> None:
    limiter = RateLimiter(processes=4)
    calls = [
        limiter.admit("key_1", requests_per_minute=60, tokens_per_minute=0, tokens=1, now_s=0.0)
        for _ in range(16)
    ]
    assert calls.count(0) == 15 and calls[-1] == 4  # 15 a minute: one every 4 s


def test_tokens_are_shared_too_and_a_large_call_waits_for_a_full_share() -> None:
    limiter = RateLimiter(processes=2)
    assert limiter.admit("k", requests_per_minute=0, tokens_per_minute=100, tokens=80, now_s=0) == 0
    assert limiter.admit("k", requests_per_minute=0, tokens_per_minute=100, tokens=80, now_s=0) > 0
    assert (
        limiter.admit("k", requests_per_minute=0, tokens_per_minute=100, tokens=80, now_s=60) == 0
    )


# --- the parent of `govledger gateway` -------------------------------------------------


class ExitedChild:
    returncode = 3

    def poll(self) -> int:
        return 3

    def wait(self, timeout: float | None = None) -> int:
        return 3


def parent(limit: int, monkeypatch: pytest.MonkeyPatch) -> tuple[GatewayProcesses, list[int]]:
    group = GatewayProcesses(2, RestartPolicy(limit, 60.0, 0.0, 0.0), {})
    spawned: list[int] = []
    monkeypatch.setattr(group, "spawn", spawned.append)
    exited: Any = ExitedChild()
    running: Any = subprocess.Popen(["sleep", "30"])
    group.children = {1: running, 2: exited}
    return group, spawned


def test_the_parent_restarts_the_process_that_exited_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    group, spawned = parent(5, monkeypatch)
    try:
        assert group.supervise_once() is None
        assert spawned == [2]
    finally:
        group.stop()


def test_the_parent_gives_up_on_a_crash_loop_and_says_which_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    group, spawned = parent(0, monkeypatch)
    try:
        reason = group.supervise_once()
        assert reason is not None and "gateway-2 crash loop" in reason and "exit code 3" in reason
        assert spawned == []
    finally:
        group.stop()


# --- outboxes in the folder the processes share ------------------------------------------


async def test_a_starting_process_adopts_no_live_sibling_outbox_nor_one_just_made(
    tmp_path: Path,
) -> None:
    from schemas.outbox import Outbox
    from schemas.outbox_publisher import OutboxPublisher
    from tests.unit import builders

    live = Outbox(tmp_path, "gateway-sibling1", 1 << 20)  # a running sibling holds its lock
    (tmp_path / "gateway-sibling2.outbox").touch()  # made, its lock not taken yet
    publisher = OutboxPublisher(
        "127.0.0.1:1", "gateway-me", tmp_path, max_bytes=1 << 20, keyring=builders.TEST_KEYRING
    )
    assert publisher.adopted == {}
    sibling = Outbox(tmp_path, "gateway-sibling2", 1 << 20)  # its own file is still its to lock
    for outbox in (live, sibling, publisher.outbox):
        outbox.close()


@pytest.mark.parametrize(("processes", "told"), [("2", ("2", "2")), ("1", ("1", None))])
def test_up_starts_each_gateway_part_as_a_gateway_told_its_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: str, told: tuple[str, str | None]
) -> None:
    started: list[tuple[list[str], dict[str, str]]] = []

    def popen(argv: list[str], *, env: dict[str, str], **kwargs: Any) -> Any:
        started.append((argv, env))
        return ExitedChild()

    monkeypatch.setattr("govledger.runtime.subprocess.Popen", popen)
    env = {"GOVLEDGER_DATA_DIR": str(tmp_path), "GOVLEDGER_GATEWAY_PROCESSES": processes}
    stack = Stack(load(RuntimeSettings, env), env)
    stack._spawn(stack.client_parts[-1])
    ((argv, child),) = started
    assert argv[-3:] == ["-m", "govledger", "gateway"]
    named = (child["GOVLEDGER_GATEWAY_PROCESSES"], child.get("GOVLEDGER_GATEWAY_PROCESS_INDEX"))
    assert named == told
    stack.children[0].log.close()


async def test_an_empty_outbox_a_dead_process_left_is_adopted_and_so_cleared(
    tmp_path: Path,
) -> None:
    from schemas.outbox_publisher import NEW_OUTBOX_GRACE_S, OutboxPublisher
    from tests.unit import builders

    left = tmp_path / "gateway-dead.outbox"
    left.touch()
    old_s = time.time() - NEW_OUTBOX_GRACE_S - 1
    os.utime(left, (old_s, old_s))
    publisher = OutboxPublisher(
        "127.0.0.1:1", "gateway-me", tmp_path, max_bytes=1 << 20, keyring=builders.TEST_KEYRING
    )
    assert list(publisher.adopted) == ["gateway-dead"]
    assert not publisher.adopted["gateway-dead"].unconfirmed  # removed by the maintainer
    for outbox in (publisher.outbox, *publisher.adopted.values()):
        outbox.close()
