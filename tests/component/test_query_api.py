"""The query API in-process, with keys issued through the admin API and read from the
same views (as the sink folds the control topic): what it refuses before any query
reaches the store.

Moved from tests/integration/test_query_api.py (same assertions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.component.support import Component, running_query_api

TENANT = "qa"


@dataclass
class Readers:
    """The query API and keys of every kind in one tenant."""

    query: TestClient[Any, Any]
    a_admin: str
    a_viewer: str
    a_developer: str


@pytest.fixture
async def readers(component: Component, tmp_path: Path) -> AsyncIterator[Readers]:
    async with running_query_api(tmp_path / "sink", component.views) as query:
        yield Readers(
            query,
            a_admin=(await component.create_key("ops", tenant=TENANT, role="tenant-admin"))["key"],
            a_viewer=(await component.create_key("ops", tenant=TENANT, role="viewer"))["key"],
            a_developer=(await component.create_key("alpha", tenant=TENANT))["key"],
        )


async def get(readers: Readers, path: str, key: str, **params: str) -> int:
    response = await readers.query.get(
        path, params=params, headers={"Authorization": f"Bearer {key}"}
    )
    return response.status


async def sql_as(readers: Readers, key: str, query: str) -> int:
    response = await readers.query.post(
        "/", data=query.encode(), headers={"Authorization": f"Bearer {key}"}
    )
    return response.status


async def test_bad_report_parameters_are_400(readers: Readers) -> None:
    assert await get(readers, "/v1/events", readers.a_admin, group_by="tenant_id; DROP") == 400
    assert await get(readers, "/v1/events", readers.a_admin, since="forever") == 400
    assert await get(readers, "/v1/escalations", readers.a_admin, status="maybe") == 400


async def test_viewers_developers_and_strangers_get_no_sql(readers: Readers) -> None:
    assert await sql_as(readers, readers.a_viewer, "SELECT 1") == 403
    assert await sql_as(readers, readers.a_developer, "SELECT 1") == 403
    assert await sql_as(readers, "gk_nope", "SELECT 1") == 401
