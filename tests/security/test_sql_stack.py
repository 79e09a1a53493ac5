"""The SQL endpoint of a running stack (gateway, broker, worker, sink on chDB), through
HTTP, for every role: a representative subset of the attack corpus and every case that
passes the guard (crossing attempts, the legitimate analytics). Each is refused or returns
the reader's tenant only; afterwards the sink still inserts (a new call lands in lineage)
and an org query still sees every tenant."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.integration.stack import RunningStack, wait_for
from tests.security import sql_corpus as corpus

pytestmark = pytest.mark.integration

# A few of each kind; the whole corpus runs against the guard and the engine in
# test_sql_guard.py and test_sql_endpoint.py.
REPRESENTATIVE = [
    *corpus.SPLITTING[:6],
    corpus.SPLITTING[22],  # fullwidth semicolon
    *corpus.SETTINGS_AND_SESSION[:6],
    *corpus.SYSTEM_TABLES[:4],
    *corpus.NOT_SELECT[:4],
    *corpus.TABLE_FUNCTIONS[:10],
    *corpus.OUTSIDE_FUNCTIONS[:5],
    *corpus.OUTFILE_AND_FORMATS[:5],
    *corpus.WRITES_AND_DDL[:12],
    "SET readonly = 1",  # the stack-killer
]


@dataclass
class Tenants:
    a: str
    b: str
    keys: dict[str, str]  # role -> secret
    a_developer: str


@pytest.fixture(scope="module")
def stack(shared_stack: RunningStack) -> RunningStack:
    # The shared stack (tests/conftest.py): tenants of this run's own, counts scoped to them.
    return shared_stack


def _call(stack: RunningStack, key: str) -> None:
    sdk = openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)
    sdk.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "hi"}])


def _lineage_count(stack: RunningStack, tenant: str) -> int:
    return int(stack.sql(f"SELECT count() FROM lineage WHERE tenant_id = '{tenant}'")[0][0])


@pytest.fixture(scope="module")
def tenants(stack: RunningStack) -> Tenants:
    a, b = f"sa-{secrets.token_hex(3)}", f"sb-{secrets.token_hex(3)}"
    for tenant, team in ((a, "alpha"), (b, "beta")):
        stack.fund(team, "5", tenant=tenant)
    a_dev = stack.create_key("alpha", tenant=a)["key"]
    b_dev = stack.create_key("beta", tenant=b)["key"]
    wait_for(lambda: stack.balance_nanousd("alpha", tenant=a) > 0)
    wait_for(lambda: stack.balance_nanousd("beta", tenant=b) > 0)
    _call(stack, a_dev)
    _call(stack, b_dev)
    wait_for(lambda: _lineage_count(stack, a) == 1 and _lineage_count(stack, b) == 1)
    keys = {
        "admin-token": stack.token,
        "org-admin": stack.create_key("platform", tenant=a, role="org-admin")["key"],
        "tenant-admin": stack.create_key("ops", tenant=a, role="tenant-admin")["key"],
    }
    found = Tenants(a, b, keys, a_dev)
    wait_for(lambda: _post(stack, keys["tenant-admin"], "SELECT 1")[0] == 200)
    wait_for(lambda: _post(stack, keys["org-admin"], "SELECT 1")[0] == 200)
    return found


def _post(stack: RunningStack, key: str, query: str, **params: str) -> tuple[int, str]:
    response = httpx.post(
        f"{stack.settings.query_url}/",
        content=query.encode(),
        params=params,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    return response.status_code, response.text


@pytest.mark.parametrize("role", ["admin-token", "org-admin", "tenant-admin", "developer"])
def test_attacks_are_refused_for_every_role(
    stack: RunningStack, tenants: Tenants, role: str
) -> None:
    key = tenants.a_developer if role == "developer" else tenants.keys[role]
    for attack in REPRESENTATIVE:
        status, text = _post(stack, key, attack.replace("{b}", tenants.b))
        if role == "developer":
            assert status == 403, (attack, text)
        elif attack in corpus.SPLITTING and status == 200:
            assert tenants.b not in text and tenants.a not in text, (attack, text)
        else:
            assert status == 403, (attack, status, text)
        assert "root:" not in text


def test_crossing_attempts_return_the_tenants_rows_only(
    stack: RunningStack, tenants: Tenants
) -> None:
    for attempt in corpus.CROSSING + corpus.REFUSED_FOR_TENANTS:
        status, text = _post(stack, tenants.keys["tenant-admin"], attempt.replace("{b}", tenants.b))
        assert status in (200, 400, 403), (attempt, text)
        assert tenants.b not in text and "beta" not in text, (attempt, text)


def test_legitimate_analytics_match_the_orgs_rows_filtered_to_the_tenant(
    stack: RunningStack, tenants: Tenants
) -> None:
    params = {f"param_{k}": v for k, v in corpus.LEGIT_PARAMETERS.items()}
    for query in corpus.LEGIT:
        mine = _post(stack, tenants.keys["tenant-admin"], corpus.tenant_version(query), **params)
        org = _post(
            stack, tenants.keys["org-admin"], corpus.org_version(query, tenants.a), **params
        )
        assert mine[0] == 200, (query, mine)
        assert mine == org, query


def test_afterwards_the_sink_still_inserts_and_the_org_sees_every_tenant(
    stack: RunningStack, tenants: Tenants
) -> None:
    # Last in the module: everything above has run against this sink.
    before = _lineage_count(stack, tenants.a)
    _call(stack, tenants.a_developer)
    wait_for(lambda: _lineage_count(stack, tenants.a) == before + 1, timeout_s=20)
    status, text = _post(stack, tenants.keys["org-admin"], "SELECT DISTINCT tenant_id FROM lineage")
    assert status == 200
    assert {tenants.a, tenants.b} <= set(text.split())
    status, text = _post(
        stack, tenants.keys["tenant-admin"], "SELECT DISTINCT tenant_id FROM lineage"
    )
    assert (status, text) == (200, f"{tenants.a}\n")
