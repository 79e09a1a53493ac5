"""`govledger demo` against the real stack, as a newcomer runs it after `make up`: it exits
0, prints its report, and the store holds what the report claims. The stack keeps its
default settings but a short breaker reset timeout, so the demo's recovery wait is short."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.stack import RunningStack, stack_environ

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(shared_stack: RunningStack) -> RunningStack:
    # The shared stack (tests/conftest.py): each demo run makes a tenant of its own, and
    # sim-flaky's breaker (reset after 2 s there) is this module's alone.
    return shared_stack


def demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "govledger", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def tenant_of(stdout: str) -> str:
    found = re.search(r"^demo\s+tenant (demo-[0-9a-f]+) ", stdout, re.MULTILINE)
    assert found, stdout
    return found.group(1)


def test_the_demo_runs_reports_and_leaves_its_effects_in_the_store(stack: RunningStack) -> None:
    done = demo(stack.env, "--calls", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    tenant = tenant_of(out)
    for step in ("setup", "outage", "traffic", "pii", "review", "budget", "recover", "store"):
        assert re.search(rf"^{step}\s+\S", out, re.MULTILINE), f"no {step} line in\n{out}"
    assert f"report: tenant {tenant}, from ClickHouse" in out
    assert re.search(r"circuit\.opened\s+closed -> open", out)
    assert re.search(r"circuit\.closed\s+half_open -> closed", out)
    assert re.search(r"support\s+pii-detector\s+redact\s+1", out)
    assert re.search(r"^\s+80 %\s+1 alert", out, re.MULTILINE)
    assert re.search(r"^\s+100 %\s+1 alert", out, re.MULTILINE)
    assert re.search(r"esc_[0-9a-f]+\s+team support .* status open", out)
    assert out.count("reconciled") == 3
    assert out.rstrip().endswith("every expected effect is in the audit store")

    # What a user would check in ClickHouse afterwards.
    where = f"tenant_id = '{tenant}'"
    teams = stack.sql(f"SELECT DISTINCT team_id FROM lineage WHERE {where} ORDER BY team_id")
    assert teams == [["research"], ["search"], ["support"]]
    redacted = stack.sql(
        f"SELECT count() FROM lineage WHERE {where} AND team_id = 'support' "
        "AND has(guardrails_triggered, ('pii-detector', 'redact'))"
    )
    assert redacted == [["1"]]
    failovers = stack.sql(
        "SELECT selection_reason, model_selected, "
        "arrayExists(a -> a.model = 'sim-flaky' AND a.status = 503, attempts) "
        f"FROM lineage WHERE {where} AND model_requested = 'sim-flaky' "
        "AND selection_reason = 'fallback' LIMIT 1"
    )
    assert failovers == [["fallback", "sim-small", "1"]]
    circuit = stack.sql(
        "SELECT event_type, count() FROM alerts WHERE provider = 'sim' "
        "AND model = 'sim-flaky' GROUP BY event_type ORDER BY event_type"
    )
    assert circuit == [["circuit.closed", "1"], ["circuit.opened", "1"]]
    quota = stack.sql(
        "SELECT threshold_percent, count() FROM alerts WHERE event_type = 'quota.threshold' "
        f"AND {where} AND wallet_id = '{tenant}/research' "
        "GROUP BY threshold_percent ORDER BY threshold_percent"
    )
    assert quota == [["50", "1"], ["80", "1"], ["100", "1"]]
    escalations = stack.sql(
        f"SELECT escalation_id, team_id, mode FROM escalation_events WHERE {where}"
    )
    assert len(escalations) == 1 and escalations[0][1:] == ["support", "refuse"]
    resolved = stack.sql(
        "SELECT count() FROM control_events WHERE event_type = 'escalation.resolved' "
        f"AND escalation_id = '{escalations[0][0]}'"
    )
    assert resolved == [["0"]]  # still open: a human has not looked at it

    # A second run on the same stack gets its own tenant and shows everything again,
    # the breaker opening and closing included.
    again = demo(stack.env, "--calls", "1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert tenant_of(again.stdout) != tenant
    assert stack.sql(
        "SELECT count() FROM alerts WHERE event_type = 'circuit.opened' AND model = 'sim-flaky'"
    ) == [["2"]]


def test_the_demo_says_when_the_stack_is_not_running(tmp_path: Path) -> None:
    # Free ports with nothing listening, as when `make up` was never run.
    env = stack_environ(tmp_path, GOVLEDGER_ADMIN_TOKEN="adm_nobody-home")
    done = demo(env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot reach the stack" in done.stderr
    assert "make up" in done.stderr
