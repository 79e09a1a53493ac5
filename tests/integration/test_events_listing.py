"""Calls listed and followed on the shared stack: `GET /v1/events/list` (filters, keyset
paging, tenants kept apart) and `govledger events list | tail` as a user runs them."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.integration.stack import RunningStack, govledger, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(shared_stack: RunningStack) -> RunningStack:
    return shared_stack


@dataclass
class World:
    """Two tenants with traffic, and their keys."""

    a: str
    b: str
    a_admin: str  # tenant-admin of A
    org_admin: str
    a_viewer: str
    a_developer: str
    b_developer: str
    a_calls: int
    b_calls: int


def _call(stack: RunningStack, key: str, model: str = "sim-small") -> None:
    sdk = openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)
    sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])


def _stored(stack: RunningStack, tenant: str, calls: int) -> bool:
    query = f"SELECT count() FROM lineage WHERE tenant_id = '{tenant}' HAVING count() = {calls}"
    return bool(stack.sql(query))


@pytest.fixture(scope="module")
def world(stack: RunningStack) -> World:
    run = secrets.token_hex(3)
    a, b = f"ev-a-{run}", f"ev-b-{run}"
    stack.fund("alpha", "5", tenant=a)
    stack.fund("beta", "5", tenant=b)
    # A's developer may call sim-small only: a call to sim-large is refused (403), a row too.
    a_dev = stack.create_key("alpha", tenant=a, models=["sim-small"])["key"]
    b_dev = stack.create_key("beta", tenant=b)["key"]
    wait_for(lambda: stack.balance_nanousd("alpha", tenant=a) > 0)
    wait_for(lambda: stack.balance_nanousd("beta", tenant=b) > 0)
    for _ in range(2):
        _call(stack, a_dev)
    with pytest.raises(openai.PermissionDeniedError):
        _call(stack, a_dev, "sim-large")
    for _ in range(2):
        _call(stack, b_dev)
    wait_for(lambda: _stored(stack, a, 3) and _stored(stack, b, 2), timeout_s=20)
    world = World(
        a=a,
        b=b,
        a_admin=stack.create_key("ops", tenant=a, role="tenant-admin")["key"],
        org_admin=stack.create_key("platform", tenant=a, role="org-admin")["key"],
        a_viewer=stack.create_key("ops", tenant=a, role="viewer")["key"],
        a_developer=a_dev,
        b_developer=b_dev,
        a_calls=3,
        b_calls=2,
    )
    # The sink reads keys from the control topic: wait until it knows the new ones.
    wait_for(lambda: get(stack, "/v1/events/list", world.a_admin).status_code == 200)
    return world


def get(stack: RunningStack, path: str, key: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{stack.settings.query_url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def _pages(stack: RunningStack, key: str, **params: str) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    after = ""
    while True:
        response = get(stack, "/v1/events/list", key, since="1h", **params, after=after)
        assert response.status_code == 200, response.text
        pages.append(response.json()["data"])
        after = response.json()["next"] or ""
        if not after:
            return pages


def test_event_list_pages_a_tenants_calls_newest_first(stack: RunningStack, world: World) -> None:
    pages = _pages(stack, world.a_admin, limit="1")
    rows = [row for page in pages for row in page]
    assert [len(page) for page in pages] == [1] * world.a_calls
    assert {row["tenant_id"] for row in rows} == {world.a}
    assert len({row["event_id"] for row in rows}) == world.a_calls
    moments = [row["occurred_at_ms"] for row in rows]
    assert moments == sorted(moments, reverse=True)
    refused = _pages(stack, world.a_admin, status="error")[0]
    assert [(row["http_status"], row["error_code"]) for row in refused] == [
        (403, "model_not_allowed")
    ]
    assert _pages(stack, world.a_admin, status="ok", team="alpha")[0][0]["team_id"] == "alpha"
    assert _pages(stack, world.a_admin, team="nobody") == [[]]


def test_event_list_keeps_tenants_apart_and_refuses_bad_parameters(
    stack: RunningStack, world: World
) -> None:
    both = _pages(stack, world.org_admin, limit="1000")[0]
    assert {row["tenant_id"] for row in both} >= {world.a, world.b}
    b_rows = _pages(stack, world.org_admin, tenant=world.b)[0]
    assert [row["tenant_id"] for row in b_rows] == [world.b] * world.b_calls
    assert get(stack, "/v1/events/list", world.a_admin, tenant=world.b).status_code == 403
    assert get(stack, "/v1/events/list", world.a_viewer).status_code == 403
    for bad in ({"after": "1:' OR 1=1"}, {"status": "fine"}, {"limit": "100000"}):
        assert get(stack, "/v1/events/list", world.a_admin, **bad).status_code == 400, bad
    # Filters are bound as parameters: SQL in one matches no row instead of widening the set.
    for hostile in ("alpha' OR '1'='1", "alpha') OR (1=1", "alpha\\' OR 1=1 --"):
        assert _pages(stack, world.a_admin, team=hostile) == [[]], hostile
        assert _pages(stack, world.a_admin, guardrail=hostile) == [[]], hostile


def test_events_list_from_the_terminal(stack: RunningStack, world: World) -> None:
    listed = govledger(stack.env, "events", "list", "--since", "1h", "--limit", "10", "--json",
                       "--tenant", world.a)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == world.a_calls and {row["tenant_id"] for row in rows} == {world.a}
    table = govledger({**stack.env, "GOVLEDGER_API_KEY": world.a_admin},
                      "events", "list", "--group-by", "team")  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split("\t")[:2] == ["team", "calls"]
    assert [line.split("\t")[:2] for line in table.stdout.splitlines()[1:]] == [
        ["alpha", str(world.a_calls)]
    ]


@pytest.mark.parametrize("reader", ["operator", "tenant-admin"])
def test_events_tail_follows_new_calls(stack: RunningStack, world: World, reader: str) -> None:
    """The operator follows the lineage topic (records authenticated); a tenant key its
    tenant's rows through the query API. Either sees a new call of its tenant, and not
    the other tenant's call made just before it."""
    env = dict(stack.env)
    if reader == "tenant-admin":
        env["GOVLEDGER_API_KEY"] = world.a_admin
    args = [sys.executable, "-m", "govledger", "events", "tail", "--json", "--count", "1"]
    if reader == "operator":
        args += ["--tenant", world.a]
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as tail:  # fmt: skip
        assert tail.stderr is not None and tail.stdout is not None
        assert "following" in tail.stderr.readline()
        _call(stack, world.b_developer)
        world.b_calls += 1
        if reader == "tenant-admin":  # B's row lands first in the store, at its own poll
            wait_for(lambda: _stored(stack, world.b, world.b_calls))
        _call(stack, world.a_developer)
        world.a_calls += 1
        try:
            out, err = tail.communicate(timeout=30)
        finally:
            tail.kill()
    assert tail.returncode == 0, err
    row = json.loads(out)
    assert (row["tenant_id"], row["team_id"], row["http_status"]) == (world.a, "alpha", 200)
