"""The org baseline through the admin API, in-process: the real routes, guard and views,
with a control publisher that hands each sealed record straight to the views (as the
control topic would). What a tenant admin may and may not do to its own governance."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.admin.api import AdminApi
from gateway.budget import Budget
from gateway.views import LocalViews
from schemas.codec import HashChain
from schemas.records import Event
from schemas.topics import CONTROL
from streams.escalations.logic import EscalationConfig
from tests.unit import builders

ROOT_TOKEN = "root-token-for-tests"
TENANT = "acme"


class LoopbackControl:
    """Seals like the admin API's publisher and delivers to the views at once."""

    def __init__(self, views: LocalViews) -> None:
        self.views = views
        self.chain = HashChain("admin-test")
        self.published: list[Event] = []

    async def publish_and_wait(self, topic: str, key: str, record: Event) -> Event:
        sealed = self.chain.seal(record)
        self.published.append(sealed)
        self.views.apply(builders.signed_message(topic, sealed))
        return sealed


class Admin:
    def __init__(
        self, client: TestClient[web.Request, web.Application], control: LoopbackControl
    ) -> None:
        self.client = client
        self.control = control

    async def call(
        self, method: str, path: str, secret: str = ROOT_TOKEN, **body: Any
    ) -> tuple[int, dict[str, Any]]:
        response = await self.client.request(
            method, path, json=body or None, headers={"Authorization": f"Bearer {secret}"}
        )
        return response.status, await response.json()

    async def key(self, role: str, secret: str = ROOT_TOKEN) -> tuple[int, dict[str, Any]]:
        return await self.call(
            "POST", "/v1/admin/keys", secret, tenant=TENANT, team="platform", role=role
        )


@pytest.fixture
async def admin() -> AsyncIterator[Admin]:
    views = LocalViews()
    control = LoopbackControl(views)
    api = AdminApi(
        token=ROOT_TOKEN,
        views=views,
        control=control,  # type: ignore[arg-type]
        budget=Budget(views, "gateway-test"),
        default_tenant="default",
        escalation_config=EscalationConfig(),
    )
    app = web.Application()
    app.add_routes(api.routes())
    async with TestClient(TestServer(app)) as client:
        yield Admin(client, control)


async def tenant_admin(admin: Admin) -> str:
    status, key = await admin.key("tenant-admin")
    assert status == 201, key
    return str(key["key"])


def pack(chain: str, name: str = "default", head: str = "") -> str:
    return f"name: {name}\n{head}policies:\n  chain:\n" + textwrap.indent(
        textwrap.dedent(chain).strip() + "\n", "    "
    )


STRICT_BASELINE = pack(
    """
    - name: pii-detector
      policy: {action: block}
    - name: audit-logger
      policy: {retention_days: 90}
    """,
    name="org-baseline",
    head="role_ceiling: developer\n",
)


async def test_a_fresh_gateway_serves_the_default_baseline_to_tenant_admins(admin: Admin) -> None:
    status, body = await admin.call("GET", "/v1/admin/policies/baseline", await tenant_admin(admin))
    assert status == 200
    assert body["default"] is True and body["version"] == 0
    assert body["required_steps"] == ["pii-detector", "audit-logger"]
    assert body["retention_floor_days"] == 30
    assert body["role_ceiling"] == "tenant-admin"


async def test_a_tenant_admin_cannot_set_retention_below_the_floor(admin: Admin) -> None:
    secret = await tenant_admin(admin)
    status, body = await admin.call(
        "POST",
        "/v1/admin/policies",
        secret,
        source_yaml=pack("- name: audit-logger\n  policy: {retention_days: 1}"),
    )
    assert status == 403
    assert body["error"]["code"] == "org_policy_violation"
    assert body["error"]["message"] == (
        "org baseline rule retention_floor: retention_days 1 is below the org floor of 30"
    )
    assert body["error"]["violations"] == [
        {"rule": "retention_floor", "line": 4, "message": body["error"]["message"]}
    ]
    assert (TENANT, "default") not in admin.control.views.packs


async def test_a_tenant_admin_may_drop_its_pii_step_but_not_weaken_the_org_s(admin: Admin) -> None:
    secret = await tenant_admin(admin)
    # Leaving the step out is accepted: the org's step runs on every call anyway
    # (tests/unit/test_policy_baseline.py shows the redaction).
    no_pii = pack("- name: cost-limit\n  policy: {monthly_limit_usd: 10}")
    status, _ = await admin.call("POST", "/v1/admin/policies", secret, source_yaml=no_pii)
    assert status == 201
    redacting = pack("- name: pii-detector\n  policy: {action: redact}", name="support")
    status, _ = await admin.call("POST", "/v1/admin/policies", secret, source_yaml=redacting)
    assert status == 201  # as strict as the default baseline
    status, body = await admin.call(
        "PUT", "/v1/admin/policies/baseline", source_yaml=STRICT_BASELINE
    )
    assert status == 201, body
    # A pack published before the org asked for more is listed; the baseline holds over it.
    weaker = (
        "org baseline rule required_step: pii-detector action redact is weaker than the org's block"
    )
    assert body["packs_below_baseline"] == [
        {"tenant": TENANT, "pack": "support", "rule": "required_step", "message": weaker}
    ]
    status, body = await admin.call(
        "POST", "/v1/admin/policies", secret, source_yaml=redacting + "description: again\n"
    )
    assert status == 403
    assert body["error"]["message"] == weaker


async def test_only_an_org_admin_publishes_the_baseline(admin: Admin) -> None:
    secret = await tenant_admin(admin)
    status, body = await admin.call(
        "PUT", "/v1/admin/policies/baseline", secret, source_yaml=STRICT_BASELINE
    )
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert admin.control.views.baseline.version == 0
    status, org_key = await admin.key("org-admin")
    assert status == 201
    status, body = await admin.call(
        "PUT", "/v1/admin/policies/baseline", org_key["key"], source_yaml=STRICT_BASELINE
    )
    assert status == 201, body
    assert (body["version"], body["retention_floor_days"]) == (1, 90)
    assert body["published_by"] == f"key:{org_key['key_id']}"
    assert "+      policy: {retention_days: 90}" in body["diff"]
    again = await admin.call("PUT", "/v1/admin/policies/baseline", source_yaml=STRICT_BASELINE)
    assert again[0] == 200 and again[1]["version"] == 1  # unchanged: nothing published
    assert [e.event_type for e in admin.control.published].count("policy.baseline_published") == 1


async def test_an_invalid_baseline_is_refused_with_its_lines(admin: Admin) -> None:
    status, body = await admin.call(
        "PUT",
        "/v1/admin/policies/baseline",
        source_yaml=pack("- name: cost-limit\n  policy: {monthly_limit_usd: 1}", head="x: 1\n"),
    )
    assert status == 400 and body["error"]["code"] == "policy_invalid"
    assert [line["line"] for line in body["error"]["lines"]] == [1, 2, 5]


async def test_a_tenant_admin_cannot_grant_above_the_role_ceiling(admin: Admin) -> None:
    secret = await tenant_admin(admin)
    status, body = await admin.key("org-admin", secret)
    assert status == 403
    assert body["error"]["code"] == "org_policy_violation"
    assert "org baseline rule role_ceiling" in body["error"]["message"]
    assert (await admin.key("tenant-admin", secret))[0] == 201
    lowered = STRICT_BASELINE  # role_ceiling: developer
    assert (await admin.call("PUT", "/v1/admin/policies/baseline", source_yaml=lowered))[0] == 201
    status, body = await admin.key("tenant-admin", secret)
    assert status == 403 and body["error"]["message"] == (
        "org baseline rule role_ceiling: a tenant admin may grant roles up to developer, "
        "not tenant-admin"
    )
    assert (await admin.key("developer", secret))[0] == 201
    assert (await admin.key("tenant-admin"))[0] == 201  # the org admin sets the ceiling


async def test_a_baseline_record_for_one_tenant_changes_nothing(admin: Admin) -> None:
    from tests.unit import builders

    views = admin.control.views
    views.apply(
        builders.signed_message(CONTROL.name, builders.baseline_published(tenant_id=TENANT))
    )
    assert views.baseline.version == 0
    views.apply(builders.signed_message(CONTROL.name, builders.baseline_published()))
    assert views.baseline.version == 1
    assert views.baseline.baseline.retention_floor_days == 90
