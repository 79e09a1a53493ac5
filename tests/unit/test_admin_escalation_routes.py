"""GET /v1/admin/escalations in-process (aiohttp's TestClient): the page shape and the
default status the query API answers too, and deadlines under the escalation
configuration the caller passed in (no read of the environment)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.admin.api import AdminApi
from gateway.budget import Budget
from gateway.views import LocalViews
from schemas.topics import CONTROL, ESCALATIONS
from streams.escalations.logic import MINUTE_MS, EscalationConfig
from tests.unit import builders
from tests.unit.builders import T0
from tests.unit.test_admin_baseline import ROOT_TOKEN, LoopbackControl

P2_SLA_MS = 7 * MINUTE_MS  # not a default: the listing must take it from the caller
CONFIG = EscalationConfig(
    sla_ms={"P1": MINUTE_MS, "P2": P2_SLA_MS, "P3": 9 * MINUTE_MS, "P4": 11 * MINUTE_MS}
)


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    views = LocalViews()
    views.apply(
        builders.signed_message(
            ESCALATIONS.name,
            builders.escalation_opened(escalation_id="esc_waiting", occurred_at=T0),
        )
    )
    views.apply(
        builders.signed_message(
            ESCALATIONS.name,
            builders.escalation_opened(escalation_id="esc_decided", occurred_at=T0),
        )
    )
    views.apply(
        builders.signed_message(
            CONTROL.name,
            builders.escalation_resolved(escalation_id="esc_decided", decision="reject"),
        )
    )
    api = AdminApi(
        token=ROOT_TOKEN,
        views=views,
        control=LoopbackControl(views),  # type: ignore[arg-type]
        budget=Budget(views, "gateway-test"),
        default_tenant="default",
        escalation_config=CONFIG,
    )
    app = web.Application()
    app.add_routes(api.routes())
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def listing(client: TestClient[Any, Any], **params: str) -> tuple[int, dict[str, Any]]:
    response = await client.get(
        "/v1/admin/escalations",
        params=params,
        headers={"Authorization": f"Bearer {ROOT_TOKEN}"},
    )
    return response.status, await response.json()


async def test_the_default_is_open_and_the_page_names_its_filters(
    client: TestClient[Any, Any],
) -> None:
    status, page = await listing(client)
    assert status == 200
    assert (page["tenant_id"], page["status"]) == (None, "open")
    assert [row["escalation_id"] for row in page["data"]] == ["esc_waiting"]
    status, page = await listing(client, status="all", tenant=builders.TENANT)
    assert (page["tenant_id"], page["status"]) == (builders.TENANT, "all")
    rows = {row["escalation_id"]: row for row in page["data"]}
    assert rows.keys() == {"esc_waiting", "esc_decided"}
    assert (rows["esc_decided"]["status"], rows["esc_decided"]["decision"]) == (
        "resolved",
        "reject",
    )


async def test_deadlines_follow_the_configuration_passed_in(
    client: TestClient[Any, Any],
) -> None:
    _, page = await listing(client)
    (row,) = page["data"]
    assert row["deadline_at_ms"] - row["opened_at_ms"] == P2_SLA_MS
    assert row["tenant_id"] == builders.TENANT and row["priority"] == "P2"


@pytest.mark.parametrize("status", ["maybe", "", "OPEN"])
async def test_an_unknown_status_is_400(client: TestClient[Any, Any], status: str) -> None:
    code, body = await listing(client, status=status)
    assert code == 400
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["message"] == "'status' must be open, resolved or all"
