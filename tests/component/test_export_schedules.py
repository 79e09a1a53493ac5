"""The schedule routes of the query API in-process (export jobs over test_exports' fake
store): a tenant admin schedules its own tenant's exports and sees the runs with their
outcome; another tenant's schedules do not exist for it; the org level sees and removes
any; limits answer their codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from schemas.ids import now_ms
from sinks.access import AccessDeniedError, Reader
from sinks.exports.scheduler import ExportSchedules, ScheduleLimits
from sinks.query_app import QueryApi
from tests.unit.test_exports import FakeStore, _rows

READERS = {
    "org": Reader("org", None),
    "acme-admin": Reader("acme-admin", "acme"),
    "globex-admin": Reader("globex-admin", "globex"),
}
WEEKLY = {"cron": "0 6 * * 1", "type": "events", "format": "csv", "since": "7d"}


def _authenticate(presented: str) -> Reader:
    if presented not in READERS:
        raise AccessDeniedError(401, "invalid_api_key", "admin key required")
    return READERS[presented]


class Api:
    def __init__(self, client: TestClient[Any, Any], schedules: ExportSchedules) -> None:
        self.client = client
        self.schedules = schedules

    async def call(self, method: str, key: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = await self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {key}"}
        )
        return response.status, await response.json()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    query = QueryApi(
        FakeStore(_rows()),  # type: ignore[arg-type]
        _authenticate,
        dict,
        1000,
        exports_dir=tmp_path,
        # One-second schedules looked at every 20 ms, so a run comes within the test.
        schedule_limits=ScheduleLimits(min_interval_s=1, max_per_tenant=3, tick_s=0.02),
    )
    assert query.export_schedules is not None
    async with TestClient(TestServer(query.application())) as client:
        yield Api(client, query.export_schedules)


async def test_a_tenant_admin_schedules_its_exports_and_sees_each_runs_outcome(
    api: Api,
) -> None:
    status, schedule = await api.call(
        "POST", "acme-admin", "/v1/exports/schedules",
        {"every": "1s", "type": "events", "format": "jsonl", "since": "3650d",
         "description": "every second"},
    )  # fmt: skip
    assert status == 201, schedule
    assert schedule["tenant"] == "acme" and schedule["every"] == "1s"
    assert schedule["last_run"] is None
    assert schedule["next_run_ms"] == schedule["created_at_ms"] + 1000
    api.schedules.clock = lambda: now_ms() + 1000  # a second later, without waiting for it

    path = f"/v1/exports/schedules/{schedule['id']}"
    for _ in range(300):
        _, shown = await api.call("GET", "acme-admin", path)
        if any(run["status"] == "succeeded" for run in shown["runs"]):
            break
        await asyncio.sleep(0.02)
    run = next(run for run in shown["runs"] if run["status"] == "succeeded")
    _, job = await api.call("GET", "acme-admin", f"/v1/exports/{run['job_id']}")
    assert job["status"] == "succeeded" and job["tenant"] == "acme"
    assert run["rows"] == job["manifest"]["rows"] == 75
    assert run["manifest_sha256"] == job["manifest"]["file"]["sha256"]
    assert run["started_at_ms"] <= run["finished_at_ms"]

    _, listed = await api.call("GET", "acme-admin", "/v1/exports/schedules")
    (entry,) = listed["schedules"]
    assert entry["id"] == schedule["id"] and entry["last_run"] is not None
    assert entry["next_run_ms"] > entry["last_run"]["slot_ms"]
    assert "runs" not in entry

    status, removed = await api.call("DELETE", "acme-admin", path)
    assert status == 200 and removed["id"] == schedule["id"]
    assert (await api.call("GET", "acme-admin", path))[0] == 404
    assert (await api.call("GET", "acme-admin", f"/v1/exports/{run['job_id']}"))[0] == 200


async def test_one_tenant_cannot_see_or_remove_anothers_schedules(api: Api) -> None:
    _, acme = await api.call("POST", "acme-admin", "/v1/exports/schedules", WEEKLY)
    status, globex = await api.call(
        "POST", "org", "/v1/exports/schedules", {**WEEKLY, "tenant": "globex"}
    )
    assert status == 201 and globex["tenant"] == "globex"
    _, every = await api.call("POST", "org", "/v1/exports/schedules", WEEKLY)
    assert every["tenant"] is None

    for method in ("GET", "DELETE"):
        status, body = await api.call(method, "acme-admin", f"/v1/exports/schedules/{globex['id']}")
        assert (status, body["error"]["code"]) == (404, "schedule_not_found"), method
        status, _ = await api.call(method, "acme-admin", f"/v1/exports/schedules/{every['id']}")
        assert status == 404
    status, crossing = await api.call(
        "POST", "acme-admin", "/v1/exports/schedules", {**WEEKLY, "tenant": "globex"}
    )
    assert (status, crossing["error"]["code"]) == (403, "forbidden")

    _, mine = await api.call("GET", "acme-admin", "/v1/exports/schedules")
    assert [s["id"] for s in mine["schedules"]] == [acme["id"]]
    _, theirs = await api.call("GET", "globex-admin", "/v1/exports/schedules")
    assert [s["id"] for s in theirs["schedules"]] == [globex["id"]]
    _, everything = await api.call("GET", "org", "/v1/exports/schedules")
    assert {s["id"] for s in everything["schedules"]} == {acme["id"], globex["id"], every["id"]}
    assert (await api.call("DELETE", "org", f"/v1/exports/schedules/{globex['id']}"))[0] == 200
    assert (await api.call("GET", "nobody", "/v1/exports/schedules"))[0] == 401


async def test_limits_answer_their_codes(api: Api) -> None:
    for _ in range(3):
        assert (await api.call("POST", "acme-admin", "/v1/exports/schedules", WEEKLY))[0] == 201
    status, body = await api.call("POST", "acme-admin", "/v1/exports/schedules", WEEKLY)
    assert (status, body["error"]["code"]) == (429, "too_many_schedules")
    # Another tenant has its own count.
    assert (await api.call("POST", "globex-admin", "/v1/exports/schedules", WEEKLY))[0] == 201
