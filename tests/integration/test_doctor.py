"""`govledger doctor` against a real embedded stack (issue 15's Done-when): it passes on
a healthy stack, then names the failing check, with its hint, as the worker, the sink and
the broker are stopped in turn (one stack, never restarted: `supervise=False`; the tests
run in order, each part stays down). What each check decides is proven cheaper in
tests/unit/test_doctor_checks.py and tests/component/test_doctor.py."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import pytest

from govledger.doctor.checks import GroupView
from govledger.doctor.probes import LiveProbes, wall_ms
from govledger.doctor.run import INTAKE_TOPICS, bootstrap_of
from schemas.kafka_security import KafkaSecurity
from tests.integration.stack import RunningStack, govledger, running_stack, stack_environ

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = stack_environ(tmp_path_factory.mktemp("doctor"))
    with running_stack(env, supervise=False) as running:
        yield running


def doctor_lines(stack: RunningStack) -> tuple[int, dict[str, str]]:
    """Exit code and each check's line, by check name, as a user reads them."""
    result = govledger(stack.env, "doctor")
    lines = result.stdout.splitlines()
    assert lines, result.stderr
    return result.returncode, {line.split()[1]: line for line in lines}


def stop(stack: RunningStack, part: str) -> None:
    stack.stack.kill(part)
    stack.stack.child(part).process.wait(timeout=10)


def test_doctor_passes_on_a_healthy_stack(stack: RunningStack) -> None:
    stack.create_key("doctor")  # a control record for the groups' positions to cover
    code, lines = doctor_lines(stack)
    assert [line for line in lines.values() if not line.startswith("ok ")] == []
    assert code == 0
    assert set(lines) >= {"broker", "topics", "store", "worker", "gateway", "clock", "schemas"}


def test_a_stopped_worker_fails_the_worker_check_with_its_hint(stack: RunningStack) -> None:
    stop(stack, "worker")
    written_ms = wall_ms()
    stack.create_key("doctor-late")  # a record the stopped worker's group is behind on
    code, lines = doctor_lines(stack)
    assert code == 1
    assert re.search(r"group govledger-streams-intake: \d member\(s\), lag [1-9]", lines["worker"])
    assert lines["worker"].startswith("fail  worker")
    assert lines["worker"].endswith(
        "fix: start the worker (`govledger worker`); a stall clears with a worker restart"
    )
    assert lines["store"].startswith("ok ")
    # The age of the oldest record the group is behind on (what a stall is judged by).
    view = asyncio.run(intake_positions(stack))
    behind = [p for p in view.partitions.values() if p.lag > 0]
    assert behind
    oldest = min(p.oldest_uncommitted_ms or 0 for p in behind)
    assert written_ms - 60_000 < oldest <= wall_ms()


async def intake_positions(stack: RunningStack) -> GroupView:
    probes = LiveProbes(
        bootstrap_of(stack.settings), KafkaSecurity.of(stack.settings), "", None, 5.0
    )
    try:
        return await probes.group("govledger-streams-intake", INTAKE_TOPICS)
    finally:
        await probes.close()


def test_a_stopped_sink_fails_the_store_check_with_its_hint(stack: RunningStack) -> None:
    stop(stack, "sink")
    code, lines = doctor_lines(stack)
    assert code == 1
    assert lines["store"].startswith("fail  store       cannot reach the query API")
    assert lines["store"].endswith(
        "fix: start the sink (`govledger sink`; it applies migrations at start)"
    )
    assert lines["broker"].startswith("ok ")


def test_a_stopped_broker_fails_the_broker_check_with_its_hint(stack: RunningStack) -> None:
    stop(stack, "broker")
    result = govledger(stack.env, "doctor", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert report["ok"] is False
    assert checks["broker"]["status"] == "fail"
    assert checks["broker"]["detail"].startswith("cannot reach the broker at 127.0.0.1:")
    assert checks["broker"]["hint"] == "start the stack (`govledger up`)"
    assert checks["gateway"]["status"] == "ok"  # still serving from its local views
