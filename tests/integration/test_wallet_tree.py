"""Wallets as a tree journal on the running stack: FinOps funds the org, allocates to a
team and the team's admin to a key; a call with that key (the `openai` SDK) debits the
key's wallet; refunds and corrections are entries of their own, in the balance and in
ClickHouse; a transfer over the limit is refused by the admin API and, when it reaches
the log anyway, by the wallets processor; a tenant admin cannot reach another tenant."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from typing import Any

import httpx
import openai
import pytest

from schemas.ids import now_ms
from schemas.money import format_usd
from schemas.publisher import ChainedPublisher
from schemas.topics import CONTROL
from tests.integration.stack import RunningStack, wait_for
from tests.unit import builders

pytestmark = pytest.mark.integration

# Tenants of this run's own: the stack is shared with other modules (tests/conftest.py).
TENANT = f"acme-{secrets.token_hex(3)}"
OTHER_TENANT = f"globex-{secrets.token_hex(3)}"
USD = 1_000_000_000


@pytest.fixture(scope="module")
def stack(shared_stack: RunningStack) -> RunningStack:
    return shared_stack


def as_key(secret: str, stack: RunningStack, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method,
        f"{stack.settings.gateway_url}{path}",
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
        **kw,
    )


def post(stack: RunningStack, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = stack.admin("POST", f"/v1/admin/wallets/{path}", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def fund(stack: RunningStack, usd: str, **where: str) -> dict[str, Any]:
    """Fund a wallet and wait until the gateway's view has the credit (the processor may
    still be joining its group when the stack has just started)."""
    before = wallet(stack, **where)["balance_nanousd"]
    funded = post(stack, "fund", {**where, "usd": usd})
    wait_for(
        lambda: wallet(stack, **where)["balance_nanousd"] == before + funded["amount_nanousd"],
        timeout_s=60,
    )
    return funded


def wallet(stack: RunningStack, **params: str) -> dict[str, Any]:
    response = stack.admin("GET", "/v1/admin/wallets/balance", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


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


def test_money_flows_down_the_tree_and_a_keys_calls_spend_its_own_wallet(
    stack: RunningStack,
) -> None:
    team, team_wallet = "search", f"{TENANT}/search"
    org = fund(stack, "10", tenant=TENANT)
    assert org["wallet_id"] == TENANT
    to_team = post(stack, "allocate", {"tenant": TENANT, "team": team, "usd": "4"})
    assert (to_team["from_wallet_id"], to_team["to_wallet_id"]) == (TENANT, team_wallet)
    assert to_team["status"] == "accepted"

    # The team's tenant admin hands part of the team's money to one of its keys.
    admin_key = stack.create_key("platform", tenant=TENANT, role="tenant-admin")["key"]
    key = stack.create_key(team, tenant=TENANT)
    key_wallet = f"{team_wallet}/{key['key_id']}"
    response = as_key(
        admin_key,
        stack,
        "POST",
        "/v1/admin/wallets/allocate",
        json={"team": team, "key": key["key_id"], "usd": "1"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["to_wallet_id"] == key_wallet

    assert wallet(stack, tenant=TENANT)["balance_nanousd"] == 6 * USD
    team_view = wallet(stack, tenant=TENANT, team=team)
    assert (team_view["balance_nanousd"], team_view["allocated_in_nanousd"]) == (3 * USD, 4 * USD)
    assert team_view["children"] == [key_wallet]
    assert wallet(stack, wallet_id=key_wallet)["balance_nanousd"] == USD

    sdk = openai.OpenAI(base_url=stack.base_url, api_key=key["key"], max_retries=0)
    sdk.chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": "hi"}], max_tokens=24
    )
    spent = wait_for(lambda: wallet(stack, wallet_id=key_wallet)["spent_nanousd"], timeout_s=20)
    assert wallet(stack, wallet_id=key_wallet)["balance_nanousd"] == USD - spent
    assert wallet(stack, tenant=TENANT, team=team)["balance_nanousd"] == 3 * USD  # untouched
    rows = wait_for(
        lambda: stack.sql(
            f"SELECT wallet_id, cost_nanousd FROM lineage WHERE key_id = '{key['key_id']}'"
        )
    )
    assert rows == [[key_wallet, str(spent)]]
    keys = {k["key_id"]: k for k in stack.admin("GET", "/v1/admin/keys").json()["data"]}
    assert keys[key["key_id"]]["spend_wallet_id"] == key_wallet


def test_refunds_and_corrections_are_new_entries_in_the_balance_and_in_clickhouse(
    stack: RunningStack,
) -> None:
    team = "support"
    key = stack.create_key(team, tenant=TENANT)
    fund(stack, "2", tenant=TENANT, team=team)
    sdk = openai.OpenAI(base_url=stack.base_url, api_key=key["key"], max_retries=0)
    sdk.chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": "hi"}], max_tokens=24
    )
    call_id, cost = wait_for(
        lambda: stack.sql(
            f"SELECT toString(event_id), cost_nanousd FROM lineage WHERE key_id = '{key['key_id']}'"
        )
    )[0]
    wait_for(lambda: wallet(stack, tenant=TENANT, team=team)["spent_nanousd"] == int(cost))

    refund = post(
        stack,
        "refund",
        {
            "tenant": TENANT,
            "team": team,
            "usd": format_usd(int(cost)),
            "call_event_id": call_id,
            "reason": "answer unusable",
        },
    )
    correction = post(
        stack,
        "correct",
        {
            "tenant": TENANT,
            "team": team,
            "usd": "-0.5",
            "entry_event_id": refund["event_id"],
            "reason": "half of the funding was a mistake",
        },
    )
    assert correction["status"] == "accepted"
    view = wallet(stack, tenant=TENANT, team=team)
    assert view["refunded_nanousd"] == int(cost)
    assert view["corrected_nanousd"] == -USD // 2
    assert view["spent_nanousd"] == int(cost)  # the settlement itself is never edited
    assert view["balance_nanousd"] == 2 * USD - int(cost) + int(cost) - USD // 2
    assert view["entry_count"] == 4

    def recorded() -> list[list[str]]:
        return stack.sql(
            "SELECT event_type, amount_nanousd, call_event_id, entry_event_id FROM control_events "
            f"WHERE wallet_id = '{TENANT}/{team}' AND event_type IN "
            "('wallet.refunded', 'wallet.corrected') ORDER BY occurred_at"
        )

    assert wait_for(lambda: len(recorded()) == 2 and recorded()) == [
        ["wallet.refunded", cost, call_id, ""],
        ["wallet.corrected", str(-USD // 2), "", refund["event_id"]],
    ]
    # The published balance in ClickHouse carries the same entries.
    assert wait_for(
        lambda: stack.sql(
            "SELECT refunded_nanousd, corrected_nanousd, balance_nanousd FROM wallet_state "
            f"WHERE wallet_id = '{TENANT}/{team}' AND entry_count = 4"
        )
    )[0] == [cost, str(-USD // 2), str(view["balance_nanousd"])]


def test_a_transfer_over_the_limit_is_rejected_by_the_api_and_by_the_processor(
    stack: RunningStack,
) -> None:
    team, team_wallet = "ads", f"{TENANT}/ads"
    fund(stack, "1", tenant=TENANT, team=team)
    key = stack.create_key(team, tenant=TENANT)
    to_key = {"tenant": TENANT, "team": team, "key": key["key_id"]}

    over = stack.admin("POST", "/v1/admin/wallets/allocate", json={**to_key, "usd": "1.5"})
    assert over.status_code == 409
    assert over.json()["error"]["code"] == "transfer_rejected"

    limit = post(stack, "limit", {"tenant": TENANT, "team": team, "usd": "1"})
    assert limit["overdraft_limit_nanousd"] == USD
    assert post(stack, "allocate", {**to_key, "usd": "1.5"})["status"] == "accepted"
    view = wallet(stack, tenant=TENANT, team=team)
    assert (view["balance_nanousd"], view["available_nanousd"]) == (-USD // 2, USD // 2)
    again = stack.admin("POST", "/v1/admin/wallets/allocate", json={**to_key, "usd": "0.6"})
    assert again.status_code == 409

    # A transfer that reaches the log anyway (another admin process, a race) is decided by
    # the wallets processor: counted as rejected, no money moved.
    record = builders.allocation(
        tenant_id=TENANT,
        occurred_at=now_ms(),
        from_wallet_id=team_wallet,
        to_wallet_id=f"{team_wallet}/{key['key_id']}",
        team_id=team,
        amount_nanousd=USD,
        seq=0,
        producer_id="",
    )

    async def publish() -> None:
        publisher = ChainedPublisher(stack.stack.bootstrap, "admin-wallet-tree-test")
        await publisher.start()
        try:
            await publisher.publish_and_wait(CONTROL.name, TENANT, record)
        finally:
            await publisher.stop()

    asyncio.run(publish())
    rejected = wait_for(
        lambda: (v := wallet(stack, tenant=TENANT, team=team))["rejected_count"] == 1 and v
    )
    assert rejected["balance_nanousd"] == -USD // 2
    assert wallet(stack, wallet_id=f"{team_wallet}/{key['key_id']}")["balance_nanousd"] == (
        3 * USD // 2
    )


def test_a_tenant_admin_cannot_allocate_across_tenants_or_from_the_org(
    stack: RunningStack,
) -> None:
    fund(stack, "5", tenant=OTHER_TENANT)
    post(stack, "allocate", {"tenant": OTHER_TENANT, "team": "research", "usd": "5"})
    other_key = stack.create_key("research", tenant=OTHER_TENANT)
    admin_key = stack.create_key("platform", tenant=TENANT, role="tenant-admin")["key"]

    def allocate(**body: str) -> httpx.Response:
        return as_key(admin_key, stack, "POST", "/v1/admin/wallets/allocate", json=body)

    across = allocate(tenant=OTHER_TENANT, team="research", key=other_key["key_id"], usd="1")
    assert across.status_code == 404
    assert across.json()["error"]["code"] == "not_found"
    by_id = allocate(wallet_id=f"{OTHER_TENANT}/research/{other_key['key_id']}", usd="1")
    assert by_id.status_code == 404
    assert (
        as_key(
            admin_key, stack, "GET", "/v1/admin/wallets/balance", params={"wallet_id": OTHER_TENANT}
        ).status_code
        == 404
    )
    # Within its own tenant it still may not move the org's money to a team.
    from_org = allocate(team="search", usd="1")
    assert from_org.status_code == 403 and from_org.json()["error"]["code"] == "forbidden"
    # Nor name a key of another team, nor move money upwards.
    assert allocate(team="search", key=other_key["key_id"], usd="1").status_code == 404
    upward = stack.admin(
        "POST",
        "/v1/admin/wallets/allocate",
        json={"wallet_id": f"{TENANT}/search", "from_wallet_id": f"{TENANT}/search/x", "usd": "1"},
    )
    assert upward.status_code == 400
    assert wallet(stack, tenant=OTHER_TENANT, team="research")["balance_nanousd"] == 5 * USD


def test_the_command_line_allocates_and_sets_limits(stack: RunningStack) -> None:
    govledger(stack, "wallets", "fund", "--tenant", TENANT, "--usd", "3")
    out = govledger(stack, "wallets", "allocate", "--tenant", TENANT, "--team", "cli", "--usd", "2")
    assert f"to {TENANT}/cli (accepted)" in out
    out = govledger(stack, "wallets", "limit", "--tenant", TENANT, "--team", "cli", "--usd", "0.5")
    assert "set to 0.500000000 USD" in out
    out = govledger(
        stack,
        "wallets",
        "correct",
        "--tenant",
        TENANT,
        "--team",
        "cli",
        "--usd",
        "-2.25",
        "--entry",
        "0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b",
        "--reason",
        "test",
    )
    assert "(accepted)" in out
    assert govledger(stack, "wallets", "balance", "--tenant", TENANT, "--team", "cli").strip() == (
        "-0.250000000"
    )


# --- replay: the store folds the tree as live processing did ----------------------------


def replay_matches_live(store_path: str) -> None:
    """Write a tree journal to a real ClickHouse engine as the sink does, fold it back
    with `replay.restore.fold_wallets`, and compare with the live fold. Two admin
    processes interleave on one tenant, so the decisions depend on their order."""
    from replay.restore import fold_wallets
    from schemas import codec
    from sinks.avro_batch import container_file
    from sinks.store import Store
    from sinks.tables import TABLE_FOR
    from streams.wallets import logic

    store = Store(f"chdb://{store_path}")
    store.migrate()
    org, team, key = "acme", "acme/search", "acme/search/key_1"
    other = "admin-5c6d7e"
    t0 = builders.T0
    events = [
        builders.funding(wallet_id=org, team_id="", seq=1, occurred_at=t0),
        builders.allocation(seq=2, occurred_at=t0 + 1, amount_nanousd=40 * USD),
        builders.allocation(  # over the team's 40 USD and no limit yet: rejected
            seq=1,
            producer_id=other,
            occurred_at=t0 + 2,
            from_wallet_id=team,
            to_wallet_id=key,
            amount_nanousd=50 * USD,
        ),
        builders.limit_set(seq=3, occurred_at=t0 + 3, overdraft_limit_nanousd=20 * USD),
        builders.allocation(  # the same, after the limit: accepted
            seq=2,
            producer_id=other,
            occurred_at=t0 + 4,
            from_wallet_id=team,
            to_wallet_id=key,
            amount_nanousd=50 * USD,
        ),
        builders.refund(seq=4, occurred_at=t0 + 5, wallet_id=key),
        builders.correction(seq=5, occurred_at=t0 + 6, wallet_id=key, amount_nanousd=-USD),
        builders.call(seq=1, wallet_id=key, cost_nanousd=777),
    ]
    by_type: dict[type, list[bytes]] = {}
    for event in events:
        by_type.setdefault(type(event), []).append(codec.encode(event))
    for record_type, values in by_type.items():
        entry = codec.schema_for(record_type)
        table = TABLE_FOR[record_type]
        present = set(store.table_columns(table))
        fields = [f["name"] for f in entry.source["fields"]]
        assert set(fields) <= present, f"{table} lacks columns for {record_type.__name__}"
        data = container_file(entry, values)
        store.insert_avro(table, [*fields, "raw"], data, f"tree-{record_type.__name__}")

    def published(wallets: dict[str, logic.Wallet]) -> dict[str, Any]:
        return {
            w: logic.to_balance(x, event_id="e", occurred_at=0, producer_id="", seq=0)
            for w, x in wallets.items()
        }

    replayed = fold_wallets(store)
    assert published(replayed) == published(logic.fold(events))
    assert replayed[team].rejected_count == 1
    assert replayed[key].allocated_in_nanousd == 50 * USD


def test_replay_from_the_store_folds_the_tree_as_live_did(tmp_path: Any) -> None:
    # chDB allows one engine per process: this one gets its own.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tests.integration.test_wallet_tree import replay_matches_live; "
            "replay_matches_live(sys.argv[1])",
            str(tmp_path / "store"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_teams_budget_counts_what_its_keys_spend_from_their_own_wallets(
    stack: RunningStack,
) -> None:
    team, team_wallet = "rollup", f"{TENANT}/rollup"
    fund(stack, "2", tenant=TENANT)
    post(stack, "allocate", {"tenant": TENANT, "team": team, "usd": "1"})
    own_key = stack.create_key(team, tenant=TENANT)  # spends from the team's wallet
    funded_key = stack.create_key(team, tenant=TENANT)
    post(
        stack,
        "allocate",
        {"tenant": TENANT, "team": team, "key": funded_key["key_id"], "usd": "0.5"},
    )
    key_wallet = f"{team_wallet}/{funded_key['key_id']}"
    for key in (own_key, funded_key):
        sdk = openai.OpenAI(base_url=stack.base_url, api_key=key["key"], max_retries=0)
        sdk.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "same prompt"}], max_tokens=24
        )
    team_spent = wait_for(lambda: wallet(stack, tenant=TENANT, team=team)["spent_nanousd"])
    key_spent = wait_for(lambda: wallet(stack, wallet_id=key_wallet)["spent_nanousd"])
    # The team's wallet alone is at 40 % of the budget; with its key's wallet, at 80 %.
    total = team_spent + key_spent
    budget_nanousd = total * 100 // 80
    assert team_spent * 100 < budget_nanousd * 50
    budget = stack.admin(
        "POST",
        "/v1/admin/wallets/budget",
        json={"tenant": TENANT, "team": team, "usd": format_usd(budget_nanousd)},
    )
    assert budget.status_code == 201, budget.text
    alerts_sql = (
        "SELECT threshold_percent, spent_nanousd FROM alerts WHERE event_type = "
        f"'quota.threshold' AND wallet_id = '{team_wallet}' ORDER BY threshold_percent"
    )
    wait_for(lambda: len(stack.sql(alerts_sql)) == 2, timeout_s=30)
    assert stack.sql(alerts_sql) == [["50", str(total)], ["80", str(total)]]
