"""The admin API in-process: budgets are an org admin's and are validated; a tenant admin
sees and changes only its own tenant's escalations.

Moved from tests/integration/test_quotas_escalations.py (same assertions)."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.component.support import Component, review_pack

TENANT = "acme"
OTHER_TENANT = "globex"


async def test_budgets_are_for_org_admins_and_validated(component: Component) -> None:
    stack = component
    tenant_admin = (await stack.create_key("platform", tenant=TENANT, role="tenant-admin"))["key"]
    for tenant in (TENANT, OTHER_TENANT):
        refused = await stack.as_key(
            tenant_admin,
            "POST",
            "/v1/admin/wallets/budget",
            json={"tenant": tenant, "team": "search", "usd": "1000000"},
        )
        assert refused.status == 403, await refused.text()
        assert (await refused.json())["error"]["code"] == "forbidden"
    for bad in ({"usd": "-1"}, {"usd": "10", "thresholds": [80, 50]}, {"thresholds": "x"}):
        response = await stack.admin(
            "POST", "/v1/admin/wallets/budget", json={"team": "search", "usd": "10", **bad}
        )
        assert response.status == 400, (bad, await response.text())
    defaults = await stack.admin(
        "POST", "/v1/admin/wallets/budget", json={"team": "s", "usd": "25"}
    )
    assert defaults.status == 201
    assert (await defaults.json())["thresholds_percent"] == [50, 80, 100]
    assert (await defaults.json())["budget_nanousd"] == 25_000_000_000


async def escalate(stack: Component, tenant: str, team: str, pack: str) -> str:
    """A call the pack refuses for review; the escalation's reference."""
    sdk = await stack.sdk_for(team, tenant=tenant, usd="1", policy_pack=pack)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await sdk.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "a diagnosis please"}]
        )
    assert refused.value.code == "review_required"
    return str(refused.value.response.headers["X-Govledger-Escalation"])


async def listed(stack: Component, **params: str) -> dict[str, dict[str, Any]]:
    response = await stack.admin("GET", "/v1/admin/escalations", params=params)
    assert response.status == 200, await response.text()
    return {row["escalation_id"]: row for row in (await response.json())["data"]}


async def test_tenant_admins_see_and_change_only_their_own_escalations(
    component: Component,
) -> None:
    stack = component
    # The integration module's earlier tests had left escalations of TENANT behind; this
    # test opens one of its own.
    for tenant in (TENANT, OTHER_TENANT):
        pushed = await stack.admin(
            "POST",
            "/v1/admin/policies",
            json={"tenant": tenant, "source_yaml": review_pack("isolated", "P2", "clinical")},
        )
        assert pushed.status in (200, 201), await pushed.text()
    await escalate(stack, TENANT, "ward", "isolated")
    theirs = await escalate(stack, OTHER_TENANT, "lab", "isolated")
    assert theirs in await listed(stack)
    admin = (await stack.create_key("platform", tenant=TENANT, role="tenant-admin"))["key"]

    visible = await stack.as_key(admin, "GET", "/v1/admin/escalations", params={"status": "all"})
    assert visible.status == 200
    visible_rows = (await visible.json())["data"]
    assert visible_rows
    assert {row["tenant_id"] for row in visible_rows} == {TENANT}
    snooping = await stack.as_key(
        admin, "GET", "/v1/admin/escalations", params={"tenant": OTHER_TENANT}
    )
    assert (await snooping.json())["data"] == []
    for action, body in (("claim", None), ("reassign", {"queue": "central"})):
        response = await stack.as_key(
            admin, "POST", f"/v1/admin/escalations/{theirs}/{action}", json=body
        )
        assert response.status == 404, await response.text()
    assert (await stack.admin("POST", "/v1/admin/escalations/esc_nope/claim")).status == 404
    assert (await listed(stack))[theirs]["status"] == "open"  # nothing changed it
