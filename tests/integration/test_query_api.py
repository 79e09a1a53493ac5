"""The query API on the running stack: reports, SQL over HTTP (curl and clickhouse-connect),
rollups, retention and ingestion lag, and tenant isolation on every route. Calls come
from the official openai SDK in two tenants; a tenant admin of one tries every way we
know to read the other."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import clickhouse_connect
import httpx
import openai
import pytest
from aiokafka import AIOKafkaProducer

from gateway.policy.baseline import DEFAULT_BASELINE_YAML
from schemas import authn, codec
from schemas.ids import uuid7
from schemas.records import LineageRecord
from schemas.topics import LINEAGE
from tests.integration.conftest import FAILING_MODEL
from tests.integration.stack import RunningStack, running_stack, stack_environ, wait_for
from tests.integration.upstream import fake_upstream

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with fake_upstream({FAILING_MODEL}, "cut-stream") as upstream:
        env = stack_environ(
            tmp_path_factory.mktemp("govledger-query"),
            GOVLEDGER_UPSTREAM_BASE_URL=upstream,
            GOVLEDGER_UPSTREAM_MODELS=FAILING_MODEL,
            GOVLEDGER_UPSTREAM_RETRIES="0",
            GOVLEDGER_UPSTREAM_TIMEOUT_S="2",
            GOVLEDGER_SLA_GRACE_MS="1000",
            GOVLEDGER_SLA_TICK_S="0.5",
        )
        with running_stack(env) as running:
            yield running


@dataclass
class World:
    """Two tenants with traffic, and keys of every kind."""

    a: str
    b: str
    a_admin: str  # tenant-admin of A
    org_admin: str
    a_viewer: str
    a_developer: str
    a_calls: int
    b_calls: int
    escalation: str  # opened by one of A's calls, still undecided


def _call(stack: RunningStack, key: str, model: str = "sim-small") -> None:
    sdk = openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)
    sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])


@pytest.fixture(scope="module")
def world(stack: RunningStack) -> World:
    a, b = f"qa-{secrets.token_hex(3)}", f"qb-{secrets.token_hex(3)}"
    stack.fund("alpha", "5", tenant=a)
    stack.fund("beta", "5", tenant=b)
    a_dev = stack.create_key("alpha", tenant=a)["key"]
    b_dev = stack.create_key("beta", tenant=b)["key"]
    wait_for(lambda: stack.balance_nanousd("alpha", tenant=a) > 0)
    wait_for(lambda: stack.balance_nanousd("beta", tenant=b) > 0)
    for _ in range(2):
        _call(stack, a_dev)
    for _ in range(3):
        _call(stack, b_dev)
    with pytest.raises(openai.APIStatusError):
        _call(stack, b_dev, FAILING_MODEL)  # an error in B
    # A call in A that a pack refuses for human review: an escalation, and an error row.
    pack = (
        "name: review-all\npolicies:\n  chain:\n"
        "    - name: human-oversight\n"
        "      policy: {mode: refuse, priority: P2, category: fraud}\n"
    )
    published = stack.admin("POST", "/v1/admin/policies", json={"tenant": a, "source_yaml": pack})
    assert published.status_code in (200, 201), published.text
    reviewed = stack.create_key("alpha", tenant=a, policy_pack="review-all")["key"]
    with pytest.raises(openai.PermissionDeniedError) as refused:
        _call(stack, reviewed)
    escalation = refused.value.response.headers["X-Govledger-Escalation"]
    wait_for(
        lambda: stack.sql(
            f"SELECT count() FROM lineage WHERE tenant_id IN ('{a}', '{b}') HAVING count() = 7"
        ),
        timeout_s=20,
    )
    world = World(
        a=a,
        b=b,
        a_admin=stack.create_key("ops", tenant=a, role="tenant-admin")["key"],
        org_admin=stack.create_key("platform", tenant=a, role="org-admin")["key"],
        a_viewer=stack.create_key("ops", tenant=a, role="viewer")["key"],
        a_developer=a_dev,
        a_calls=3,
        b_calls=4,
        escalation=escalation,
    )
    # The sink reads keys from the control topic: wait until it knows the new ones.
    wait_for(lambda: get(stack, "/v1/events", world.a_admin).status_code == 200)
    return world


def get(stack: RunningStack, path: str, key: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{stack.settings.query_url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def sql_as(stack: RunningStack, key: str, query: str, **params: str) -> httpx.Response:
    return httpx.post(
        f"{stack.settings.query_url}/",
        content=query.encode(),
        params=params,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


# --- reports --------------------------------------------------------------------------


@pytest.mark.parametrize("group_by", ["gateway", "provider", "model", "team"])
def test_events_per_group_cover_only_the_readers_tenant(
    stack: RunningStack, world: World, group_by: str
) -> None:
    mine = get(stack, "/v1/events", world.a_admin, since="1d", group_by=group_by)
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert body["tenant"] == world.a
    assert sum(g["calls"] for g in body["groups"]) == world.a_calls
    if group_by == "team":
        assert {g["team"] for g in body["groups"]} == {"alpha"}
    (cost,) = stack.sql(f"SELECT sum(cost_nanousd) FROM lineage WHERE tenant_id = '{world.a}'")[0]
    assert sum(g["cost_nanousd"] for g in body["groups"]) == int(cost)
    assert all(
        g["total_tokens"] == g["prompt_tokens"] + g["completion_tokens"] for g in body["groups"]
    )

    theirs = get(
        stack, "/v1/events", world.org_admin, since="1d", group_by=group_by, tenant=world.b
    )
    assert theirs.status_code == 200, theirs.text
    assert sum(g["calls"] for g in theirs.json()["groups"]) == world.b_calls
    assert sum(g["errors"] for g in theirs.json()["groups"]) == 1


def test_events_grouped_by_tenant_show_one_tenant_to_a_tenant_admin(
    stack: RunningStack, world: World
) -> None:
    mine = get(stack, "/v1/events", world.a_admin, group_by="tenant").json()
    assert [g["tenant"] for g in mine["groups"]] == [world.a]
    every = get(stack, "/v1/events", stack.token, group_by="tenant").json()
    assert {world.a, world.b} <= {g["tenant"] for g in every["groups"]}


@pytest.mark.parametrize(
    "path", ["/v1/events", "/v1/wallets/balance", "/v1/escalations", "/v1/sla"]
)
def test_a_tenant_admin_naming_another_tenant_is_refused(
    stack: RunningStack, world: World, path: str
) -> None:
    assert get(stack, path, world.a_admin, tenant=world.b).status_code == 403
    assert get(stack, path, world.a_admin, tenant=world.a).status_code == 200
    for key in (world.a_viewer, world.a_developer):
        assert get(stack, path, key).status_code == 403
    assert get(stack, path, "gk_not_a_key").status_code == 401
    assert httpx.get(f"{stack.settings.query_url}{path}").status_code == 401


def test_wallet_balances_are_the_latest_published(stack: RunningStack, world: World) -> None:
    def alpha() -> dict[str, Any] | None:
        response = get(stack, "/v1/wallets/balance", world.a_admin, team="alpha")
        assert response.status_code == 200, response.text
        wallets = response.json()["wallets"]
        expected = stack.balance_nanousd("alpha", tenant=world.a)
        found = [w for w in wallets if w["balance_nanousd"] == expected]
        return found[0] if found else None

    wallet = wait_for(alpha, timeout_s=15)
    assert wallet["tenant_id"] == world.a
    every = get(stack, "/v1/wallets/balance", world.a_admin).json()["wallets"]
    assert every and {w["tenant_id"] for w in every} == {world.a}
    org = get(stack, "/v1/wallets/balance", stack.token).json()["wallets"]
    assert {world.a, world.b} <= {w["tenant_id"] for w in org}


def test_escalations_list_open_and_resolved_per_tenant(stack: RunningStack, world: World) -> None:
    escalation = world.escalation

    def status_of(key: str, **params: str) -> str | None:
        response = get(stack, "/v1/escalations", key, **params)
        assert response.status_code == 200, response.text
        rows = {e["escalation_id"]: e for e in response.json()["data"]}
        return rows[escalation]["status"] if escalation in rows else None

    assert wait_for(lambda: status_of(world.a_admin, status="open"), timeout_s=15) == "open"
    assert status_of(stack.token, tenant=world.b) is None
    decided = stack.admin(
        "POST", f"/v1/admin/escalations/{escalation}/resolve", json={"decision": "reject"}
    )
    assert decided.status_code == 200, decided.text
    assert wait_for(lambda: status_of(world.a_admin, status="resolved"), timeout_s=15) == "resolved"
    assert status_of(world.a_admin, status="open") is None
    assert status_of(world.a_admin) is None  # the default is open, as on the admin API
    assert status_of(world.org_admin, tenant=world.a, status="all") == "resolved"
    rows = get(stack, "/v1/escalations", world.a_admin, status="all").json()["data"]
    assert {e["tenant_id"] for e in rows} == {world.a}
    assert next(e for e in rows if e["escalation_id"] == escalation)["decision"] == "reject"
    # One listing shape: the admin API's rows have the same fields as the query API's.
    listed = stack.admin("GET", "/v1/admin/escalations", params={"status": "all"}).json()
    assert listed["data"] and {*listed["data"][0]} == {*rows[0]}


# --- SQL --------------------------------------------------------------------------------

CROSSING_ATTEMPTS = [
    "SELECT tenant_id, team_id FROM lineage",
    "SELECT tenant_id, team_id FROM lineage WHERE tenant_id = '{b}'",
    "SELECT tenant_id, team_id FROM lineage WHERE tenant_id != '{a}'",
    "SELECT tenant_id, team_id FROM default.lineage",
    "SELECT tenant_id, team_id FROM lineage UNION ALL SELECT tenant_id, team_id FROM lineage",
    "SELECT tenant_id, 'x' FROM lineage UNION DISTINCT SELECT tenant_id, team_id FROM wallet_state",
    "SELECT * FROM (SELECT tenant_id, team_id FROM lineage WHERE tenant_id = '{b}')",
    "SELECT l.tenant_id, w.team_id FROM lineage AS l JOIN wallet_state AS w ON 1",
    "SELECT l.tenant_id, w.tenant_id FROM lineage AS l FULL OUTER JOIN lineage AS w ON 0",
    "WITH x AS (SELECT tenant_id, team_id FROM lineage) SELECT * FROM x",
    "SELECT (SELECT groupArray(tenant_id) FROM lineage), 1",
    "SELECT tenant_id FROM lineage WHERE tenant_id IN (SELECT tenant_id FROM wallet_state)",
    "SELECT count(), '{b}' IN (SELECT tenant_id FROM lineage) FROM system.one",
    "SELECT tenant_id, team_id FROM spend_daily",
    "SELECT tenant_id, team_id FROM spend_daily FINAL",
    "SELECT tenant_id, team_id FROM spend_daily_mv",
    "SELECT tenant_id, provider FROM provider_hourly FINAL",
    "SELECT tenant_id, team_id FROM control_events",
    "SELECT tenant_id, wallet_id FROM wallet_state",
    "SELECT tenant_id, team_id FROM escalation_events",
    "SELECT tenant_id, model FROM sla_windows",
    "SELECT tenant_id, team_id FROM alerts",
    "SELECT tenant_id, provider FROM breaker_state",
    "SELECT tenant_id, consumer FROM dead_letters",
    "SELECT tenant_id, team_id FROM lineage AS `x, table_name: default.lineage`",
    "SELECT tenant_id, team_id FROM lineage -- ' OR 1",
    "SELECT tenant_id, team_id FROM lineage # comment",
    "SELECT tenant_id, team_id FROM lineage FORMAT JSONEachRow",
    "SELECT tenant_id, team_id FROM lineage FORMAT TSVWithNames;",
    "SELECT name, value FROM system.settings WHERE name = 'additional_table_filters'",
]

REFUSED_ATTEMPTS = [
    "SELECT name FROM system.tables",
    "SELECT * FROM system.query_log",
    "SELECT * FROM INFORMATION_SCHEMA.TABLES",
    "SELECT * FROM information_schema.columns",
    "SELECT * FROM schema_migrations",
    "SELECT tenant_id FROM merge('default', '^lineage$')",
    "SELECT tenant_id FROM merge(currentDatabase(), 'lineage')",
    "SELECT * FROM numbers(10)",
    "SELECT * FROM file('/etc/passwd')",
    "SELECT file('/etc/passwd')",
    "SELECT * FROM url('http://127.0.0.1:1/', CSV)",
    "SELECT * FROM remote('127.0.0.1', default.lineage)",
    "SELECT * FROM s3('http://127.0.0.1:1/x', CSV)",
    "SELECT * FROM view(SELECT tenant_id FROM lineage)",
    "SELECT * FROM cluster('default', default.lineage)",
    "SELECT * FROM input('x String')",
    "SELECT tenant_id FROM lineage SETTINGS additional_table_filters = {}",
    "SELECT tenant_id FROM lineage SETTINGS readonly = 0",
    "SELECT tenant_id FROM lineage; SELECT tenant_id FROM lineage",
    "SELECT $$ ' $$; SELECT tenant_id FROM lineage; -- '",
    "SELECT tenant_id FROM lineage /* unterminated",
    "SELECT tenant_id FROM lineage INTO OUTFILE '/tmp/leak.tsv'",
    "SELECT tenant_id FROM {t:Identifier}",
    "SELECT 1 WHERE 'x' IN system.tables",
    "SHOW TABLES",
    "DESCRIBE TABLE lineage",
    "EXPLAIN SELECT * FROM lineage",
    "EXISTS TABLE lineage",
    "INSERT INTO lineage (tenant_id) VALUES ('x')",
    "SET additional_table_filters = {}",
    "SELECT dictGet('x', 'y', 1)",
    "SELECT joinGet('lineage', 'tenant_id', 1)",
]


@pytest.mark.parametrize("attempt", CROSSING_ATTEMPTS)
def test_sql_of_a_tenant_admin_returns_only_its_rows(
    stack: RunningStack, world: World, attempt: str
) -> None:
    response = sql_as(stack, world.a_admin, attempt.format(a=world.a, b=world.b))
    assert response.status_code in (200, 400, 403), response.text
    assert world.b not in response.text
    assert "beta" not in response.text


@pytest.mark.parametrize("attempt", REFUSED_ATTEMPTS)
def test_sql_outside_the_tenant_tables_is_refused(
    stack: RunningStack, world: World, attempt: str
) -> None:
    response = sql_as(stack, world.a_admin, attempt)
    assert response.status_code in (400, 403), response.text
    assert world.b not in response.text


def test_sql_sees_the_tenants_own_rows(stack: RunningStack, world: World) -> None:
    rows = sql_as(stack, world.a_admin, "SELECT tenant_id, count() FROM lineage GROUP BY tenant_id")
    assert rows.status_code == 200, rows.text
    assert rows.text == f"{world.a}\t{world.a_calls}\n"
    # The same query through the admin token still sees both: nothing stayed behind.
    every = sql_as(stack, stack.token, "SELECT DISTINCT tenant_id FROM lineage ORDER BY 1")
    assert {world.a, world.b} <= set(every.text.split())


@pytest.mark.parametrize(
    "params",
    [
        {"additional_table_filters": "{}"},
        {"additional_table_filters": "{'lineage': '1'}"},
        {"readonly": "0"},
        {"default_format": "JSONEachRow", "max_result_rows": "0"},
        {"param_t": "x', tenant_id != 'y"},
        {"database": "system"},
        {"default_format": "Template"},
    ],
)
def test_url_settings_do_not_lift_the_filters(
    stack: RunningStack, world: World, params: dict[str, str]
) -> None:
    response = sql_as(stack, world.a_admin, "SELECT tenant_id FROM lineage", **params)
    assert response.status_code in (200, 400, 403), response.text
    assert world.b not in response.text
    if response.status_code == 200:
        assert world.a in response.text


def test_curl_style_get_with_each_credential_form(stack: RunningStack, world: World) -> None:
    url = f"{stack.settings.query_url}/"
    query = {"query": "SELECT DISTINCT tenant_id FROM lineage"}
    basic = base64.b64encode(f"default:{world.a_admin}".encode()).decode()
    for response in (
        httpx.get(url, params=query, headers={"Authorization": f"Basic {basic}"}),
        httpx.get(url, params=query, headers={"X-ClickHouse-Key": world.a_admin}),
        httpx.get(url, params={**query, "password": world.a_admin}),
        httpx.get(url, params=query, headers={"Authorization": f"Bearer {world.a_admin}"}),
    ):
        assert response.status_code == 200, response.text
        assert response.text == f"{world.a}\n"


def test_clickhouse_connect_works_with_the_token_and_with_tenant_keys(
    stack: RunningStack, world: World
) -> None:
    host, port = stack.settings.query_host, stack.settings.query_port
    tenant = clickhouse_connect.get_client(
        host=host, port=port, username="default", password=world.a_admin
    )
    rows = tenant.query(
        "SELECT tenant_id, team_id, count() FROM lineage WHERE team_id != {t:String} "
        "GROUP BY ALL ORDER BY ALL",
        parameters={"t": "nobody"},
    ).result_rows
    assert rows == [(world.a, "alpha", world.a_calls)]
    assert int(str(tenant.command("SELECT count() FROM lineage"))) == world.a_calls
    assert tenant.query(
        "SELECT count() FROM lineage WHERE tenant_id = %(b)s", parameters={"b": world.b}
    ).result_rows == [(0,)]
    frame = tenant.query_df("SELECT tenant_id, cost_nanousd FROM lineage")
    assert set(frame["tenant_id"]) == {world.a}
    with pytest.raises(Exception, match=r"403|not readable"):
        tenant.query("SELECT name FROM system.tables")
    tenant.close()

    admin = clickhouse_connect.get_client(
        host=host, port=port, username="default", password=stack.token
    )
    tenants = {row[0] for row in admin.query("SELECT DISTINCT tenant_id FROM lineage").result_rows}
    assert {world.a, world.b} <= tenants
    admin.close()

    with pytest.raises(Exception, match="401"):
        clickhouse_connect.get_client(host=host, port=port, username="default", password="nope")


# --- audit store: rollups, retention, ingestion -------------------------------------


def test_rollups_match_the_lineage_rows(stack: RunningStack, world: World) -> None:
    for tenant in (world.a, world.b):
        lineage = stack.sql(
            "SELECT count(), sum(cost_nanousd), sum(prompt_tokens), sum(completion_tokens), "
            f"countIf(error_code IS NOT NULL) FROM lineage WHERE tenant_id = '{tenant}'"
        )
        spend = stack.sql(
            "SELECT sum(calls), sum(cost_nanousd), sum(prompt_tokens), sum(completion_tokens), "
            f"sum(errors) FROM spend_daily WHERE tenant_id = '{tenant}'"
        )
        assert spend == lineage
        hourly = stack.sql(
            "SELECT sum(calls), length(quantilesTDigestMerge(0.5, 0.9, 0.99)(latency_ms)) "
            f"FROM provider_hourly WHERE tenant_id = '{tenant}'"
        )
        assert hourly == [[lineage[0][0], "3"]]
    mine = sql_as(stack, world.a_admin, "SELECT DISTINCT tenant_id FROM provider_hourly")
    assert mine.text == f"{world.a}\n"


async def _publish(bootstrap: str, records: list[LineageRecord]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        # Signed as the record's gateway would sign it: unsigned records are dead-lettered.
        keyring = authn.installed()
        assert keyring is not None, "running_stack installs the stack's keyring"
        for record in records:
            value = codec.encode(record)
            credential = keyring.credential("gateway", record.producer_id)
            await producer.send_and_wait(
                LINEAGE.name,
                value,
                key=record.tenant_id.encode(),
                headers=credential.headers(value),
            )
    finally:
        await producer.stop()


RETENTION_DAYS = 30


def publish_retention_pack(stack: RunningStack, tenant: str, days: int) -> None:
    pack = (
        "name: default\npolicies:\n  chain:\n"
        "    - name: audit-logger\n"
        f"      policy: {{retention_days: {days}}}\n"
    )
    published = stack.admin(
        "POST", "/v1/admin/policies", json={"tenant": tenant, "source_yaml": pack}
    )
    assert published.status_code in (200, 201), published.text


def old_copy(stack: RunningStack, tenant: str, days_ago: int, team: str) -> LineageRecord:
    """A copy of one of the tenant's real records, `days_ago` back, at no cost."""
    (raw,) = stack.sql(f"SELECT hex(raw) FROM lineage WHERE tenant_id = '{tenant}' LIMIT 1")[0]
    record = codec.decode(bytes.fromhex(raw))
    assert isinstance(record, LineageRecord)
    at = int(time.time() * 1000) - days_ago * DAY_MS
    return dataclasses.replace(
        record,
        event_id=uuid7(at),
        occurred_at=at,
        team_id=team,
        cost_nanousd=0,
        reserved_nanousd=0,
    )


def run_retention(stack: RunningStack) -> dict[str, Any]:
    response = httpx.post(
        f"{stack.settings.query_url}/v1/retention/run",
        headers={"Authorization": f"Bearer {stack.token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_retention_deletes_only_rows_past_the_tenants_audit_policy(
    stack: RunningStack, world: World
) -> None:
    # 30 days: the org baseline's default floor (a shorter retention is refused at push).
    publish_retention_pack(stack, world.a, RETENTION_DAYS)
    # Old history in both tenants: copies of real records, 40 days back, at no cost.
    old = [old_copy(stack, tenant, 40, "archive") for tenant in (world.a, world.b)]
    asyncio.run(_publish(stack.stack.bootstrap, old))
    archive = "SELECT tenant_id FROM lineage WHERE team_id = 'archive' ORDER BY 1"
    wait_for(lambda: len(stack.sql(archive)) == 2, timeout_s=15)

    result = wait_for(
        lambda: (r := run_retention(stack))["retention_days"].get(world.a) == RETENTION_DAYS and r,
        timeout_s=10,
    )
    assert world.b not in result["retention_days"]
    assert stack.sql(archive) == [[world.b]]  # A's old row went; B keeps everything
    assert (
        int(
            stack.sql(
                f"SELECT count() FROM lineage WHERE tenant_id = '{world.a}' AND team_id = 'alpha'"
            )[0][0]
        )
        == world.a_calls
    )
    refused = httpx.post(
        f"{stack.settings.query_url}/v1/retention/run",
        headers={"Authorization": f"Bearer {world.a_admin}"},
    )
    assert refused.status_code == 403


def test_retention_never_deletes_rows_younger_than_the_org_floor(
    stack: RunningStack, world: World
) -> None:
    """A's pack keeps 30 days and was published before the org raised its floor to 90:
    the retention job keeps A's rows of 60 days ago, and still deletes those of 100."""
    publish_retention_pack(stack, world.a, RETENTION_DAYS)
    raised = DEFAULT_BASELINE_YAML.replace("retention_days: 30", "retention_days: 90")
    put = stack.admin("PUT", "/v1/admin/policies/baseline", json={"source_yaml": raised})
    assert put.status_code == 201, put.text
    try:
        # The sink has heard of the floor (retention ran with it) before the old rows land.
        wait_for(lambda: run_retention(stack)["retention_days"].get(world.a) == 90, timeout_s=15)
        old = [old_copy(stack, world.a, days, f"floor-{days}") for days in (60, 100)]
        asyncio.run(_publish(stack.stack.bootstrap, old))
        floor_rows = "SELECT team_id FROM lineage WHERE team_id LIKE 'floor-%' ORDER BY 1"
        wait_for(lambda: len(stack.sql(floor_rows)) == 2, timeout_s=15)
        result = run_retention(stack)
        assert result["retention_days"][world.a] == 90
        assert result["deleted"]["lineage"] == 1
        assert stack.sql(floor_rows) == [["floor-60"]]
    finally:
        back = stack.admin(
            "PUT", "/v1/admin/policies/baseline", json={"source_yaml": DEFAULT_BASELINE_YAML}
        )
        assert back.status_code == 201, back.text


def test_ingestion_reports_freshness_and_consumer_lag(stack: RunningStack, world: World) -> None:
    def caught_up() -> dict[str, Any] | None:
        response = get(stack, "/v1/ingestion", stack.token)
        assert response.status_code == 200, response.text
        body = dict(response.json())
        return body if body["consumer_lag_records"].get(LINEAGE.name) == 0 else None

    body = wait_for(caught_up, timeout_s=15)
    lineage = body["tables"]["lineage"]
    assert lineage["rows"] >= world.a_calls + world.b_calls
    assert 0 <= lineage["lag_ms"] == body["now_ms"] - lineage["latest_occurred_at_ms"]
    assert body["rows_inserted"] > 0
    assert get(stack, "/v1/ingestion", world.a_admin).status_code == 403
    assert get(stack, "/v1/ingestion", world.org_admin).status_code == 200


# Last in the module: it stops the stream worker.
def test_sla_rolls_up_closed_minutes_per_target(stack: RunningStack, world: World) -> None:
    def targets(key: str, **params: str) -> list[dict[str, Any]]:
        response = get(stack, "/v1/sla", key, since="1h", **params)
        assert response.status_code == 200, response.text
        return list(response.json()["targets"])

    # Minutes close at their end plus the grace, up to a minute after the calls; a
    # graceful stop publishes the minutes in progress at once (test_sla_windows proves
    # both), so this test does not wait for the clock.
    (worker,) = [c for c in stack.stack.children if c.name == "worker"]
    worker.process.terminate()
    assert worker.process.wait(timeout=60) == 0
    mine = wait_for(lambda: targets(world.a_admin), timeout_s=90, every_s=0.25)
    assert {t["tenant_id"] for t in mine} == {world.a}
    sim = next(t for t in mine if t["model"] == "sim-small" and t["provider"] == "sim")
    assert sim["requests"] >= 2
    assert sim["latency_p50_p90_p99_ms"] is not None
    theirs = wait_for(lambda: targets(stack.token, tenant=world.b), timeout_s=90, every_s=0.25)
    assert {t["tenant_id"] for t in theirs} == {world.b}
