"""The SQL endpoint on the real engine (chDB, migrated, two tenants of rows) through the
real HTTP handler, for every role: the attack corpus is refused or returns the reader's
tenant only, settings never outlive a query, the sink's session stays default and still
inserts, and the legitimate analytics return for a tenant admin exactly the org's rows
filtered to the tenant, rendered text and original text alike."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sinks.access import AccessDeniedError, Reader
from sinks.query_app import QueryApi
from sinks.store import Store
from tests.security import sql_corpus as corpus

A, B = "tenant-aaa", "tenant-bbb"
TOKENS = {"admin": Reader("admin", None), "org": Reader("key_org", None), "ta": Reader("key_ta", A)}


def authenticate(token: str) -> Reader:
    if token in TOKENS:
        return TOKENS[token]
    if token == "dev":
        raise AccessDeniedError(403, "forbidden", "developer keys may not read")
    raise AccessDeniedError(401, "invalid_api_key", "unknown key")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("sql-security") / "chdb"
    store = Store(f"chdb://{path}")
    store.migrate()
    for tenant, team in ((A, "alpha"), (B, "beta")):
        for i in range(3):
            store.command(
                "INSERT INTO lineage (event_id, occurred_at, tenant_id, team_id, key_id, "
                "wallet_id, model_requested, model_selected, provider, http_status, "
                "cost_nanousd, latency_ms, policies_applied, attempts, guardrails_triggered, "
                "raw) VALUES (generateUUIDv7(), now64(3) - %(i)s, %(tenant)s, %(team)s, "
                "'key_a', %(wallet)s, 'sim-small', 'sim-small', 'sim', 200, %(cost)s, "
                "%(latency)s, ['default'], [('sim', 'sim-small', 200, 1.5, NULL)], "
                "[('pii-detector', 'redact')], 'raw')",
                {
                    "i": i,
                    "tenant": tenant,
                    "team": team,
                    "wallet": f"w-{team}",
                    "cost": 1000 * (i + 1),
                    "latency": 10.0 * (i + 1),
                },
            )
        store.command(
            "INSERT INTO control_events (event_id, event_type, occurred_at, tenant_id, team_id, "
            "wallet_id, amount_nanousd, raw) VALUES (generateUUIDv7(), 'wallet.funded', "
            "now64(3), %(tenant)s, %(team)s, %(wallet)s, 5000000000, 'raw')",
            {"tenant": tenant, "team": team, "wallet": f"w-{team}"},
        )
    yield store
    store.close()


@pytest.fixture
async def http(store: Store) -> AsyncIterator[TestClient[Any, Any]]:
    api = QueryApi(store, authenticate, dict, max_rows=10_000)
    async with TestClient(TestServer(api.application())) as client:
        yield client


async def sql(http: TestClient[Any, Any], token: str, text: str, **params: str) -> tuple[int, str]:
    response = await http.post(
        "/", data=text.encode(), params=params, headers={"Authorization": f"Bearer {token}"}
    )
    return response.status, await response.text()


def _sink_session_is_default(store: Store) -> None:
    rows = store.client.query(
        "SELECT getSetting('readonly'), toString(getSetting('additional_table_filters')), "
        "getSetting('max_result_rows'), getSetting('output_format_write_statistics')"
    ).result_rows
    assert rows == [(0, "{}", 0, True)]


@pytest.mark.parametrize("token", ["admin", "org", "ta"])
async def test_attacks_are_refused_for_every_role(
    http: TestClient[Any, Any], store: Store, token: str
) -> None:
    for attack in corpus.REFUSED_FOR_ALL:
        status, text = await sql(http, token, attack.replace("{b}", B))
        if attack in corpus.SPLITTING and status == 200:
            assert B not in text and A not in text, (attack, text)  # first statement only
            continue
        assert status == 403, (attack, status, text)
        assert '"code"' in text
    _sink_session_is_default(store)


async def test_developer_keys_and_strangers_get_no_sql(http: TestClient[Any, Any]) -> None:
    for attack in [*corpus.REFUSED_FOR_ALL[:20], "SELECT 1"]:
        assert (await sql(http, "dev", attack))[0] == 403
        assert (await sql(http, "nope", attack))[0] == 401


async def test_crossing_attempts_return_the_tenants_rows_only(
    http: TestClient[Any, Any], store: Store
) -> None:
    for attempt in corpus.CROSSING + corpus.REFUSED_FOR_TENANTS:
        status, text = await sql(http, "ta", attempt.replace("{b}", B))
        assert status in (200, 400, 403), (attempt, text)
        assert B not in text and "beta" not in text, (attempt, text)
    status, text = await sql(http, "ta", "SELECT DISTINCT tenant_id FROM lineage")
    assert (status, text) == (200, f"{A}\n")
    _sink_session_is_default(store)


@pytest.mark.parametrize(
    "params",
    [
        {"additional_table_filters": "{}"},
        {"readonly": "0"},
        {"max_result_rows": "0"},
        {"database": "system"},
        {"default_format": "Template"},
        {"default_format": "JSON; SELECT 1"},
        {"param_x": "x', tenant_id != 'y"},
        {"query": "SELECT 1; SELECT tenant_id FROM lineage"},
    ],
)
async def test_url_parameters_and_settings_change_nothing(
    http: TestClient[Any, Any], params: dict[str, str]
) -> None:
    status, text = await sql(http, "ta", "SELECT tenant_id FROM lineage", **params)
    assert status in (200, 403), text
    assert B not in text
    if status == 200:
        assert text == f"{A}\n{A}\n{A}\n"


async def test_parameters_are_bound_by_the_engine_never_formatted_into_the_text(
    http: TestClient[Any, Any],
) -> None:
    # clickhouse-connect formats `%(x)s` into the text when a query has no {x:Type}
    # placeholder: the value would move the string's quotes. Values reach the engine only
    # for the query's own placeholders.
    status, text = await sql(http, "ta", "SELECT '%(x)s'", param_x="' || (SELECT 1) || '")
    assert (status, text) == (200, "%(x)s\n")
    status, text = await sql(
        http, "ta", "SELECT count() FROM lineage WHERE team_id = {t:String}", param_t="x' OR '1"
    )
    assert (status, text) == (200, "0\n")


async def test_json_statistics_carry_no_cross_tenant_figures(http: TestClient[Any, Any]) -> None:
    status, text = await sql(http, "ta", "SELECT team_id FROM lineage LIMIT 1 FORMAT JSON")
    assert status == 200, text
    assert "rows_read" not in text and "bytes_read" not in text
    assert '"rows_before_limit_at_least": 3' in text  # counted after the tenant filter


async def test_settings_of_a_query_die_with_it_and_the_sink_still_inserts(
    http: TestClient[Any, Any], store: Store
) -> None:
    assert (await sql(http, "ta", "SELECT count() FROM lineage"))[1] == "3\n"
    _sink_session_is_default(store)
    before = store.query_rows("SELECT count() FROM lineage")[0][0]
    store.insert_rows("schema_migrations", [(999, "probe")], ["number", "name"])
    store.command("ALTER TABLE schema_migrations DELETE WHERE number = 999")
    assert (await sql(http, "admin", "SELECT count() FROM lineage"))[1] == f"{before}\n"
    org = await sql(http, "org", "SELECT DISTINCT tenant_id FROM lineage ORDER BY 1")
    assert org == (200, f"{A}\n{B}\n")


def test_a_setting_left_on_a_reader_session_reaches_neither_the_sink_nor_other_reads(
    store: Store,
) -> None:
    # The worst case the guard exists to prevent: a `SET` that sticks. On its own chDB
    # connection handle it stays there; the sink's session and the endpoint's are others.
    import chdb

    stray = chdb.connect(os.path.realpath(store.dsn.removeprefix("chdb://")))  # type: ignore[no-untyped-call]  # chdb has no types
    try:
        stray.query("SET additional_table_filters = {'lineage': '0'}")
        stray.query("SET readonly = 1")
        with pytest.raises(Exception, match="readonly"):
            stray.query("INSERT INTO schema_migrations (number, name) VALUES (998, 'x')")
        _sink_session_is_default(store)
        store.insert_rows("schema_migrations", [(998, "probe")], ["number", "name"])
        assert store.query_rows("SELECT count() FROM lineage")[0][0] >= 6
    finally:
        stray.close()
        store.command("ALTER TABLE schema_migrations DELETE WHERE number = 998")


@pytest.mark.parametrize("query", corpus.LEGIT)
async def test_legitimate_analytics_match_the_orgs_rows_filtered_to_the_tenant(
    http: TestClient[Any, Any], store: Store, query: str
) -> None:
    params = {f"param_{k}": v for k, v in corpus.LEGIT_PARAMETERS.items()}
    mine = await sql(http, "ta", corpus.tenant_version(query), **params)
    org_query = corpus.org_version(query, A)
    theirs = await sql(http, "org", org_query, **params)
    assert mine[0] == 200, mine
    assert mine == theirs
    # The rendering runs as the original text would, on a connection of the test's own.
    if "FORMAT" not in org_query:
        rendered = await sql(http, "org", org_query, default_format="JSON", **params)
        assert _data(rendered[1]) == _data(await asyncio.to_thread(_direct, store, org_query))


def _direct(store: Store, query: str) -> str:
    import chdb

    connection = chdb.connect(os.path.realpath(store.dsn.removeprefix("chdb://")))  # type: ignore[no-untyped-call]  # chdb has no types
    try:
        return bytes(
            connection.query(query, "JSON", params=dict(corpus.LEGIT_PARAMETERS)).bytes()
        ).decode()
    finally:
        connection.close()


def _data(json_text: str) -> str:
    start = json_text.index('"data"')
    return json_text[start : json_text.index('"rows"', start)]
