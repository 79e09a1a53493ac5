"""Budgets that page once per threshold, and review queues with SLAs, on the running stack:
FinOps sets a budget and a team spends through it with the `openai` SDK; reviewers list,
claim, reassign and resolve escalations through the admin API and the command line, and
an escalation nobody decides in time pages once."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import openai
import pytest

from tests.component.support import review_pack
from tests.integration.stack import (
    ESCALATION_P1_SLA_S,
    ESCALATION_TICK_S,
    RunningStack,
    wait_for,
)

pytestmark = pytest.mark.integration

# Tenants of this run's own: the stack is shared with other modules (tests/conftest.py),
# whose SHARED_STACK_SETTINGS hold this module's escalation SLAs and central categories.
TENANT = f"acme-{secrets.token_hex(3)}"
OTHER_TENANT = f"globex-{secrets.token_hex(3)}"
P1_SLA_S = ESCALATION_P1_SLA_S
TICK_S = ESCALATION_TICK_S


@pytest.fixture(scope="module")
def stack(shared_stack: RunningStack) -> RunningStack:
    return shared_stack


def govledger(stack: RunningStack, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "govledger", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def month_start_ms() -> int:
    now = datetime.now(tz=UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return int(start.timestamp()) * 1000


# --- quotas -------------------------------------------------------------------------------


def test_each_threshold_alerts_once_per_period_whatever_the_budget_changes(
    stack: RunningStack,
) -> None:
    team, wallet = "finops", f"{TENANT}/finops"
    stack.fund(team, "5", tenant=TENANT)
    sdk = openai.OpenAI(
        base_url=stack.base_url,
        api_key=stack.create_key(team, tenant=TENANT)["key"],
        max_retries=0,
    )

    def set_budget(usd: str) -> None:
        response = stack.admin(
            "POST",
            "/v1/admin/wallets/budget",
            json={"tenant": TENANT, "team": team, "usd": usd, "thresholds": [50, 80, 100]},
        )
        assert response.status_code == 201, response.text
        assert response.json()["thresholds_percent"] == [50, 80, 100]

    def spent() -> int:
        response = stack.admin(
            "GET", "/v1/admin/wallets/balance", params={"tenant": TENANT, "team": team}
        )
        return int(response.json()["spent_nanousd"])

    def spend_until(at_least: int) -> int:
        """Calls (about $0.0000152 each with sim-small) until the wallet has spent this."""
        total = spent()
        while total < at_least:
            sdk.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": "hi"}], max_tokens=24
            )
            total = wait_for(lambda: (s := spent()) > total and s)  # noqa: B023 - wait_for calls it in this iteration
        return total

    def alerts() -> list[list[str]]:
        return stack.sql(
            "SELECT threshold_percent, budget_nanousd, toUnixTimestamp64Milli(period_start_at), "
            "spent_nanousd FROM alerts "
            f"WHERE event_type = 'quota.threshold' AND wallet_id = '{wallet}' "
            "ORDER BY occurred_at, threshold_percent"
        )

    set_budget("0.0002")  # 200,000 nano-USD: alerts at 100k, 160k and 200k
    spend_until(100_000)
    wait_for(lambda: len(alerts()) == 1)
    # Lowering the budget mid-period: 50 % stays alerted; what it puts the spend past
    # (nothing yet at ~106k of 150k, or 80 % if the spend is past 120k) alerts at once.
    govledger(
        stack,
        "wallets",
        "budget",
        "--team",
        team,
        "--tenant",
        TENANT,
        "--usd",
        "0.00015",
        "--thresholds",
        "50,80,100",
    )
    spend_until(150_000)
    wait_for(lambda: len(alerts()) == 3)
    set_budget("0.0002")  # raising it back un-alerts nothing and alerts nothing
    final = spend_until(spent() + 1)
    wait_for(
        lambda: (
            stack.sql(
                f"SELECT count() FROM wallet_state WHERE wallet_id = '{wallet}' "
                f"AND spent_nanousd = {final}"
            )
            != [["0"]]
        )
    )
    time.sleep(2)  # room for a wrong alert to arrive

    rows = alerts()
    period = str(month_start_ms())
    assert [r[:3] for r in rows] == [
        ["50", "200000", period],
        ["80", "150000", period],
        ["100", "150000", period],
    ]
    assert int(rows[0][3]) >= 100_000 and int(rows[2][3]) >= 150_000


# --- escalations --------------------------------------------------------------------------


def escalate(stack: RunningStack, tenant: str, team: str, pack: str) -> str:
    """A call the pack refuses for review; the escalation's reference."""
    stack.fund(team, "1", tenant=tenant)
    secret = stack.create_key(team, tenant=tenant, policy_pack=pack)["key"]
    sdk = openai.OpenAI(base_url=stack.base_url, api_key=secret, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "a diagnosis please"}]
        )
    assert refused.value.code == "review_required"
    return str(refused.value.response.headers["X-Govledger-Escalation"])


def listed(stack: RunningStack, **params: str) -> dict[str, dict[str, Any]]:
    response = stack.admin("GET", "/v1/admin/escalations", params=params)
    assert response.status_code == 200, response.text
    return {row["escalation_id"]: row for row in response.json()["data"]}


def sla_alerts(stack: RunningStack, escalation_id: str) -> list[list[str]]:
    return stack.sql(
        "SELECT priority, queue, toUnixTimestamp64Milli(breached_at) "
        "- toUnixTimestamp64Milli(deadline_at) FROM alerts "
        f"WHERE event_type = 'escalation.sla_breached' AND escalation_id = '{escalation_id}'"
    )


def test_escalations_are_queued_claimed_resolved_and_page_once_when_late(
    stack: RunningStack,
) -> None:
    for tenant in (TENANT, OTHER_TENANT):
        for name, priority, category in (
            ("urgent-review", "P1", "clinical"),
            ("legal-review", "P3", "legal"),
        ):
            pushed = stack.admin(
                "POST",
                "/v1/admin/policies",
                json={"tenant": tenant, "source_yaml": review_pack(name, priority, category)},
            )
            assert pushed.status_code == 201, pushed.text

    late = escalate(stack, TENANT, "ward", "urgent-review")  # nobody decides it in time
    legal = escalate(stack, TENANT, "contracts", "legal-review")
    foreign = escalate(stack, OTHER_TENANT, "ward", "urgent-review")
    in_time = escalate(stack, TENANT, "clinic", "urgent-review")

    # Claimed and decided well within its 6 s SLA.
    wait_for(lambda: in_time in listed(stack))
    claimed = stack.admin("POST", f"/v1/admin/escalations/{in_time}/claim")
    assert claimed.status_code == 200, claimed.text
    assert claimed.json() == {
        "escalation_id": in_time,
        "status": "claimed",
        "claimed_by": "admin",
        "queue": "team:clinic",
    }
    decided = stack.admin(
        "POST", f"/v1/admin/escalations/{in_time}/resolve", json={"decision": "approve"}
    )
    assert decided.status_code == 200, decided.text

    rows = wait_for(lambda: (r := listed(stack, tenant=TENANT)) and {late, legal} <= r.keys() and r)
    assert list(rows) == [late, legal]  # most urgent first; the decided one is gone
    assert rows[late]["priority"] == "P1" and rows[late]["queue"] == "team:ward"
    assert rows[late]["status"] == "open" and rows[late]["claimed_by"] is None
    assert rows[legal]["priority"] == "P3" and rows[legal]["queue"] == "central"
    for row in rows.values():
        assert 0 <= row["age_ms"] < 60_000
        assert row["deadline_at_ms"] > row["opened_at_ms"]
    assert rows[late]["deadline_at_ms"] - rows[late]["opened_at_ms"] == P1_SLA_S * 1000
    resolved = listed(stack, status="resolved")
    assert resolved[in_time]["status"] == "resolved"
    assert resolved[in_time]["decision"] == "approve"
    assert set(listed(stack, queue="central", tenant=TENANT)) == {legal}

    # The command line: claim, reassign, list.
    assert "claimed by admin" in govledger(stack, "escalations", "claim", late)
    out = govledger(
        stack, "escalations", "reassign", late, "--queue", "central", "--reviewer", "lee"
    )
    assert f"{late}: reassigned to central, claimed by lee" in out
    listing = govledger(stack, "escalations", "list", "--queue", "central")
    line = next(line for line in listing.splitlines() if line.startswith(late))
    assert line.split("\t")[3:7] == ["central", "P1", "claimed", "lee"]
    assert stack.admin("POST", f"/v1/admin/escalations/{late}/claim").status_code == 409

    # The late one pages once; the one decided in time never does.
    breach = wait_for(lambda: sla_alerts(stack, late), timeout_s=30)
    assert breach[0][:2] == ["P1", "central"]
    assert 0 < int(breach[0][2]) <= 5_000
    wait_for(lambda: sla_alerts(stack, foreign), timeout_s=30)
    time.sleep(6 * TICK_S)  # several more ticks
    assert len(sla_alerts(stack, late)) == 1
    assert sla_alerts(stack, in_time) == []
    assert listed(stack, tenant=TENANT)[late]["overdue"] is True

    # Decided late: it leaves the open list and pages no more.
    assert "approve" in govledger(
        stack, "escalations", "resolve", late, "--decision", "approve", "--note", "late"
    )
    assert late not in listed(stack)
    time.sleep(4 * TICK_S)
    assert len(sla_alerts(stack, late)) == 1

    claims = wait_for(
        lambda: (
            stack.sql(
                "SELECT event_type, actor, queue, reviewer FROM control_events "
                f"WHERE escalation_id = '{late}' AND event_type LIKE 'escalation.%' "
                "ORDER BY occurred_at"
            )
            if len(stack.sql(f"SELECT 1 FROM control_events WHERE escalation_id = '{late}'")) == 3
            else None
        )
    )
    assert claims == [
        ["escalation.claimed", "admin", "", ""],
        ["escalation.reassigned", "admin", "central", "lee"],
        ["escalation.resolved", "", "", ""],
    ]
