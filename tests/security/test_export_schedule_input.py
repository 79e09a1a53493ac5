"""Hostile input to the export schedule routes: cron text, durations, descriptions, ids and
bodies are refused with a 400 and a stable code, nothing is kept, and the default minimum
interval holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sinks.access import AccessDeniedError, Reader
from sinks.query_app import QueryApi
from tests.unit.test_exports import FakeStore

ORG = "org-token"
OK = {"cron": "0 6 * * 1", "type": "events", "format": "csv", "since": "7d"}


def _authenticate(presented: str) -> Reader:
    if presented != ORG:
        raise AccessDeniedError(401, "invalid_api_key", "admin key required")
    return Reader("org", None)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    api = QueryApi(FakeStore([]), _authenticate, dict, 1000, exports_dir=tmp_path)  # type: ignore[arg-type]
    async with TestClient(TestServer(api.application())) as running:
        yield running


HOSTILE_BODIES = [
    ({**OK, "cron": "* * * * * *"}, "invalid_cron"),
    ({**OK, "cron": "@reboot"}, "invalid_cron"),
    ({**OK, "cron": "0 0 * * mon; curl evil"}, "invalid_cron"),
    ({**OK, "cron": "0 0 31 2 *"}, "invalid_cron"),
    ({**OK, "cron": "*/1" + ",1" * 5_000 + " * * * *"}, "invalid_cron"),
    ({**OK, "cron": "0 0 * * \u0661"}, "invalid_cron"),
    ({**OK, "cron": ["0", "6"]}, "invalid_cron"),
    ({**OK, "cron": None, "every": "1w"}, "invalid_every"),
    ({**OK, "cron": None, "every": 3600}, "invalid_every"),
    ({**OK, "cron": None, "every": "9" * 100 + "s"}, "invalid_every"),
    ({**OK, "cron": None, "every": "30s"}, "schedule_too_frequent"),  # 60 s by default
    ({**OK, "cron": "* * * * *", "every": "1d"}, "invalid_schedule"),
    ({k: v for k, v in OK.items() if k != "cron"}, "invalid_schedule"),
    ({**OK, "description": "line\nforged\tline"}, "invalid_description"),
    ({**OK, "description": "\x1b[2J\x1b[Hcleared"}, "invalid_description"),
    ({**OK, "description": "\u202eevil"}, "invalid_description"),
    ({**OK, "description": "d" * 501}, "invalid_description"),
    ({**OK, "description": {"$gt": ""}}, "invalid_description"),
    ({**OK, "type": "../../etc"}, "invalid_export_type"),
    ({**OK, "format": "xlsx"}, "invalid_export_format"),
    ({**OK, "since": "forever"}, "invalid_since"),
    ({**OK, "tenant": ""}, "invalid_tenant"),
    ({**OK, "id": "mine"}, "unknown_field"),
    ({**OK, "next_run_ms": 0}, "unknown_field"),
    ([OK], "invalid_json"),
]


@pytest.mark.parametrize(("body", "code"), HOSTILE_BODIES)
async def test_hostile_schedules_are_refused_with_a_stable_code(
    client: TestClient[Any, Any], body: Any, code: str
) -> None:
    headers = {"Authorization": f"Bearer {ORG}"}
    response = await client.post("/v1/exports/schedules", json=body, headers=headers)
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["code"] == code
    listed = await (await client.get("/v1/exports/schedules", headers=headers)).json()
    assert listed == {"schedules": []}


@pytest.mark.parametrize(
    "schedule_id",
    [
        "not-a-uuid",
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b%0A",
        "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b" * 4,
        "'%20OR%201=1",
    ],
)
async def test_malformed_schedule_ids_are_refused(
    client: TestClient[Any, Any], schedule_id: str
) -> None:
    headers = {"Authorization": f"Bearer {ORG}"}
    for method in ("GET", "DELETE"):
        response = await client.request(
            method, f"/v1/exports/schedules/{schedule_id}", headers=headers
        )
        assert response.status == 400, (method, schedule_id)
        assert (await response.json())["error"]["code"] == "invalid_schedule_id"
    unknown = await client.get(
        "/v1/exports/schedules/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", headers=headers
    )
    assert unknown.status == 404
    assert (await unknown.json())["error"]["code"] == "schedule_not_found"
