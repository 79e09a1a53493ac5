"""`govledger replay` and `govledger audit reconcile | who` on the real stack (broker,
processors, sink, chDB), with the official openai SDK as the client: the wallet replayed
to a moment between two bursts of calls has the balance it had then; the state replayed
at now has no difference with the live state; every wallet reconciles; `who` finds the
key of a call at its time."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest

from schemas.ids import now_ms
from schemas.money import format_usd
from tests.integration.stack import RunningStack, govledger, running_stack, stack_environ, wait_for

pytestmark = pytest.mark.integration

WALLET = "default/search"


def settled(stack: RunningStack, entries: int) -> None:
    """Wait until the store holds the wallet's projection after `entries` entries."""
    wait_for(
        lambda: (
            stack.sql(f"SELECT max(entry_count) FROM wallet_state WHERE wallet_id = '{WALLET}'")[0][
                0
            ]
            == str(entries)
        ),
        timeout_s=60,
    )


def burst(client: openai.OpenAI, calls: int) -> None:
    for n in range(calls):
        client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": f"call {n}"}]
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """One stack for both tests, of this module's own: the first replays, diffs and
    reconciles the whole store, so it runs first, on a store that holds its calls alone."""
    with running_stack(stack_environ(tmp_path_factory.mktemp("govledger-replay"))) as running:
        yield running


def test_replay_diff_reconcile_and_who(stack: RunningStack) -> None:
    env = stack.env
    key = stack.create_key("search")
    stack.fund("search", "5")
    client = openai.OpenAI(base_url=stack.base_url, api_key=key["key"], max_retries=0)
    burst(client, 3)
    settled(stack, 4)
    balance_then = stack.balance_nanousd("search")
    first_call_at = int(
        stack.sql(
            "SELECT toUnixTimestamp64Milli(min(occurred_at)) FROM lineage "
            f"WHERE key_id = '{key['key_id']}'"
        )[0][0]
    )
    time.sleep(0.05)
    between = now_ms()
    time.sleep(0.05)
    stack.fund("search", "2")
    burst(client, 3)
    settled(stack, 8)
    assert stack.balance_nanousd("search") != balance_then

    at = govledger(env, "replay", "--at", str(between), "--tenant", "default")
    assert at.returncode == 0, at.stderr
    row = next(line for line in at.stdout.splitlines() if line.startswith(WALLET + "\t"))
    assert row.split("\t")[1] == format_usd(balance_then), at.stdout
    assert row.split("\t")[4] == "4", at.stdout  # the funding and three calls

    now = govledger(env, "replay", "--at", "now")
    assert now.returncode == 0, now.stderr
    row = next(line for line in now.stdout.splitlines() if line.startswith(WALLET + "\t"))
    assert row.split("\t")[1] == format_usd(stack.balance_nanousd("search"))

    diff = govledger(env, "replay", "--diff-live")
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert "no difference" in diff.stdout

    reconciled = govledger(env, "audit", "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert "all 1 wallets reconcile" in reconciled.stdout

    asked = govledger(env, "audit", "who", "--at", str(first_call_at), "--window", "0.001",
                      "--model", "sim-small")  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    lines = asked.stdout.splitlines()
    header = lines[0].split("\t")
    rows = lines[1 : next(i for i, line in enumerate(lines) if line.startswith("#"))]
    calls = [dict(zip(header, line.split("\t"), strict=True)) for line in rows]
    assert calls, asked.stdout
    assert {c["key_id"] for c in calls} == {key["key_id"]}
    assert {c["key_prefix"] for c in calls} == {key["key_prefix"]}
    assert calls[0]["model_selected"] == "sim-small"
    assert calls[0]["decision"] == "allowed"
    balances = lines[lines.index("wallet_id\tbalance_usd") + 1 :]
    # At the first call's time its own settlement counts (occurred_at <= T).
    assert balances[0].startswith(WALLET + "\t")

    # The same moment from the topics (the embedded broker still holds everything).
    from_kafka = govledger(env, "replay", "--from", "kafka", "--at", str(between))
    assert from_kafka.returncode == 0, from_kafka.stderr
    lines = from_kafka.stdout.splitlines()
    row = next(line for line in lines if line.startswith(WALLET + "\t"))
    assert row.split("\t")[1] == format_usd(balance_then)


def test_a_tenant_admin_key_replays_and_asks_who_about_its_own_tenant_only(
    stack: RunningStack,
) -> None:
    env = stack.env
    for tenant in ("acme", "globex"):
        key = stack.create_key("search", tenant=tenant)
        stack.fund("search", "5", tenant=tenant)
        client = openai.OpenAI(base_url=stack.base_url, api_key=key["key"], max_retries=0)
        burst(client, 2)
    tenants_calls = "SELECT count() FROM lineage WHERE tenant_id IN ('acme', 'globex')"
    wait_for(lambda: stack.sql(tenants_calls) == [["4"]], timeout_s=30)
    for tenant in ("acme", "globex"):
        query = f"SELECT max(entry_count) FROM wallet_state WHERE wallet_id = '{tenant}/search'"
        wait_for(lambda: stack.sql(query) == [["3"]], timeout_s=60)  # noqa: B023 - called here
    acme_admin = stack.create_key("ops", tenant="acme", role="tenant-admin")["key"]
    as_acme = {**env, "GOVLEDGER_ADMIN_TOKEN": acme_admin}

    own = govledger(as_acme, "replay", "--at", "now")
    assert own.returncode == 0, own.stderr
    assert "acme/search\t" in own.stdout
    assert "globex" not in own.stdout, own.stdout

    other = govledger(as_acme, "replay", "--at", "now", "--tenant", "globex")
    assert "globex/search" not in other.stdout, other.stdout

    reconciled = govledger(as_acme, "audit", "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert "globex" not in reconciled.stdout and "acme/search" in reconciled.stdout

    asked = govledger(as_acme, "audit", "who", "--at", "now", "--window", "600")
    assert asked.returncode == 0, asked.stderr
    assert "globex" not in asked.stdout and "acme" in asked.stdout, asked.stdout

    # The topics carry every tenant and the broker knows no tenants: reading them is
    # for whoever runs the stack (the admin token or an org admin), not a tenant key.
    refused = govledger(as_acme, "replay", "--from", "kafka", "--at", "now")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "globex" not in refused.stdout
    assert "org" in refused.stderr
