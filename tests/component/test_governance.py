"""Governance in-process: policy packs, the policy chain, admin roles, routing (weighted
groups, data residency, circuit breakers) and header limits, as a platform team and a
product team meet them through the admin API and the `openai` SDK. What the integration
tier read from ClickHouse (lineage, control and escalation rows) is read here from the
in-memory publishers' records.

Moved from tests/integration/test_governance.py (same assertions)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.policy.pack import template_source
from schemas.records import EscalationOpened, PolicyPackPublished
from tests.component.support import ECHO_MODEL, OUTAGE_MODEL, Component, running_component

TENANT = "acme"
EU_TENANT = "eu-only"
OWN_TENANT = "initech"
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Component]:
    """Settings as the integration module's stack had them."""
    async with running_component(
        tmp_path,
        fallbacks=f"{OUTAGE_MODEL}=sim-small",
        retry_backoff_ms=10,
        upstream_retries=0,
        breaker_failure_threshold=3,
        breaker_reset_timeout_s=1.0,
        model_groups="chat-ab=sim-small:50|sim-large:50",
        target_regions="sim-large=eu-west",
        tenant_regions=f"{EU_TENANT}=eu-west",
        max_header_bytes=4096,
        team_rate_limits=f"{TENANT}/limited=3:0",
    ) as running:
        yield running


async def push(stack: Component, source: str, tenant: str = TENANT) -> Any:
    return await stack.admin(
        "POST", "/v1/admin/policies", json={"tenant": tenant, "source_yaml": source}
    )


def pack(name: str, chain: str) -> str:
    return f"name: {name}\npolicies:\n  chain:\n" + textwrap.indent(
        textwrap.dedent(chain).strip() + "\n", "    "
    )


async def client_for(
    stack: Component, team: str, tenant: str = TENANT, **key: Any
) -> openai.AsyncOpenAI:
    return await stack.sdk_for(team, tenant=tenant, **key)


def traced(trace_id: str) -> dict[str, Any]:
    return {"extra_headers": {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}}


def triggered_of(stack: Component, trace_id: str) -> list[tuple[str, str]]:
    return [(g.name, g.action) for g in stack.lineage_of(trace_id).guardrails_triggered]


async def wait_until(check: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    """Poll (yielding to the server) until check() returns something truthy."""
    async with asyncio.timeout(timeout_s):
        while True:
            found = check()
            if found:
                return found
            await asyncio.sleep(0.02)


async def test_packs_are_linted_versioned_with_a_diff_and_recorded(stack: Component) -> None:
    source = template_source("standard-saas")
    first = await push(stack, source)
    assert first.status == 201, await first.text()
    assert (await first.json())["version"] == 1
    assert "+name: standard-saas" in (await first.json())["diff"]

    again = await push(stack, source)
    assert again.status == 200 and (await again.json())["version"] == 1
    assert (await again.json())["diff"] == ""

    changed = await push(
        stack, source.replace("monthly_limit_usd: 5000", "monthly_limit_usd: 7500")
    )
    changed_body = await changed.json()
    assert changed_body["version"] == 2
    assert "-        monthly_limit_usd: 5000" in changed_body["diff"]
    assert "+        monthly_limit_usd: 7500" in changed_body["diff"]

    broken = await push(stack, source.replace("action: redact", "action: shred"))
    assert broken.status == 400
    error = (await broken.json())["error"]
    assert error["code"] == "policy_invalid"
    assert error["lines"] == [
        {"line": 14, "message": "action must be one of redact, block, not 'shred'"}
    ]

    rows = [
        [str(r.version), r.published_by, str(int(r.source_sha256 != ""))]
        for r in stack.control.of_type(PolicyPackPublished)
        if r.tenant_id == TENANT and r.pack_name == "standard-saas"
    ]
    assert rows == [["1", "admin", "1"], ["2", "admin", "1"]]


async def test_personal_data_is_redacted_before_the_provider_sees_it(stack: Component) -> None:
    chain = """
    - name: pii-detector
      policy: {detect: [email, card, secret], action: redact}
    """
    assert (await push(stack, pack("redactor", chain))).status == 201
    client = await client_for(stack, "support", policy_pack="redactor")
    trace_id = "a1" * 16
    answer = await client.chat.completions.create(
        model=ECHO_MODEL,
        messages=[
            {
                "role": "user",
                "content": "Refund jane.doe@example.com on card 4111 1111 1111 1111 please",
            }
        ],
        **traced(trace_id),
    )
    seen_upstream = answer.choices[0].message.content or ""
    assert "jane.doe@example.com" not in seen_upstream
    assert "4111" not in seen_upstream
    assert "[REDACTED:EMAIL]" in seen_upstream and "[REDACTED:CARD]" in seen_upstream
    record = stack.lineage_of(trace_id)
    assert "pii-detector" in record.policies_applied
    assert triggered_of(stack, trace_id) == [("pii-detector", "redact")]
    assert record.decision == "allowed"


async def test_a_tenant_admin_cannot_weaken_the_org_baseline(stack: Component) -> None:
    """The finding of issue 11: a tenant admin replaced its default pack, removing PII
    redaction and setting retention_days 1. Now the floor refuses the retention, the
    org's redaction runs whatever the pack says, and the baseline and the role ceiling
    are out of a tenant admin's reach."""
    secret = (await stack.create_key("platform", tenant=OWN_TENANT, role="tenant-admin"))["key"]
    weak = pack("default", "- name: audit-logger\n  policy: {retention_days: 1}")
    refused = await stack.as_key(secret, "POST", "/v1/admin/policies", json={"source_yaml": weak})
    assert refused.status == 403
    refused_error = (await refused.json())["error"]
    assert refused_error["code"] == "org_policy_violation"
    assert refused_error["message"] == (
        "org baseline rule retention_floor: retention_days 1 is below the org floor of 30"
    )
    no_pii = pack("default", "- name: audit-logger\n  policy: {retention_days: 45}")
    accepted = await stack.as_key(
        secret, "POST", "/v1/admin/policies", json={"source_yaml": no_pii}
    )
    assert accepted.status == 201, await accepted.text()

    client = await client_for(stack, "support", tenant=OWN_TENANT)
    trace_id = "e5" * 16
    answer = await client.chat.completions.create(
        model=ECHO_MODEL,
        messages=[{"role": "user", "content": "Mail jane.doe@example.com the refund"}],
        **traced(trace_id),
    )
    seen_upstream = answer.choices[0].message.content or ""
    assert "jane.doe@example.com" not in seen_upstream and "[REDACTED:EMAIL]" in seen_upstream
    applied = stack.lineage_of(trace_id).policies_applied
    assert applied[-4:] == ("pii-detector", "audit-logger", "audit-logger", "budget"), applied
    assert triggered_of(stack, trace_id) == [("pii-detector", "redact")]

    baseline = "name: mine\nrole_ceiling: tenant-admin\npolicies:\n  chain: []\n"
    put = await stack.as_key(
        secret, "PUT", "/v1/admin/policies/baseline", json={"source_yaml": baseline}
    )
    assert put.status == 403
    shown = await stack.as_key(secret, "GET", "/v1/admin/policies/baseline")
    assert shown.status == 200 and (await shown.json())["retention_floor_days"] == 30
    org_key = await stack.as_key(
        secret, "POST", "/v1/tokens", json={"team": "x", "role": "org-admin"}
    )
    assert org_key.status == 403
    assert "org baseline rule role_ceiling" in (await org_key.json())["error"]["message"]


async def test_blocking_steps_refuse_with_their_own_codes_and_are_recorded(
    stack: Component,
) -> None:
    chain = """
    - name: rbac
      policy: {require_auth: true, minimum_role: developer}
    - name: content-filter
      policy: {deny: [wire transfer], action: block}
    """
    assert (await push(stack, pack("strict", chain))).status == 201
    developer = await client_for(stack, "payments", policy_pack="strict")
    viewer = await client_for(stack, "interns", policy_pack="strict", role="viewer")
    hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]

    with pytest.raises(openai.BadRequestError) as no_user:
        await developer.chat.completions.create(model="sim-small", messages=hello)
    assert no_user.value.code == "user_required"
    with pytest.raises(openai.PermissionDeniedError) as low_role:
        await viewer.chat.completions.create(model="sim-small", messages=hello, user="intern-1")
    assert low_role.value.code == "role_insufficient"

    trace_id = "b2" * 16
    with pytest.raises(openai.BadRequestError) as blocked:
        await developer.chat.completions.create(
            model="sim-small",
            messages=[{"role": "user", "content": "Start a Wire Transfer of $1M"}],
            user="ops-7",
            **traced(trace_id),
        )
    assert blocked.value.code == "content_blocked"
    record = stack.lineage_of(trace_id)
    assert (record.http_status, record.error_code, record.decision, record.cost_nanousd) == (
        400,
        "content_blocked",
        "rejected",
        0,
    )
    assert triggered_of(stack, trace_id) == [("content-filter", "block")]

    ok = await developer.chat.completions.create(model="sim-small", messages=hello, user="ops-7")
    assert ok.choices[0].message.content


async def test_human_oversight_refuses_or_holds_with_a_reference(stack: Component) -> None:
    refuse = """
    - name: content-filter
      policy: {deny: [diagnosis], action: flag}
    - name: human-oversight
      policy: {triggers: [content-filter], mode: refuse, priority: P2, category: clinical}
    """
    hold = refuse.replace("mode: refuse", "mode: hold, hold_timeout_s: 20")
    assert (await push(stack, pack("review-refuse", refuse))).status == 201
    assert (await push(stack, pack("review-hold", hold))).status == 201
    flagged: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Give me a diagnosis for these symptoms"}
    ]

    refusing = await client_for(stack, "clinic", policy_pack="review-refuse")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await refusing.chat.completions.create(model="sim-small", messages=flagged)
    assert refused.value.code == "review_required"
    reference = refused.value.response.headers["X-Govledger-Escalation"]
    assert reference in str(refused.value.message)
    row = [
        [r.priority, r.category, r.mode, r.reason]
        for r in stack.lineage.of_type(EscalationOpened)
        if r.escalation_id == reference
    ]
    assert row == [["P2", "clinical", "refuse", "content-filter"]]

    holding = await client_for(stack, "ward", policy_pack="review-hold")

    def create() -> Awaitable[Any]:
        return holding.chat.completions.create(model="sim-small", messages=flagged)

    approved = asyncio.ensure_future(create())
    rejected = asyncio.ensure_future(create())
    held = await wait_until(
        lambda: (
            [r.escalation_id for r in opened]
            if len(
                opened := [r for r in stack.lineage.of_type(EscalationOpened) if r.mode == "hold"]
            )
            == 2
            else None
        )
    )
    assert not approved.done() and not rejected.done()  # both wait for a human
    for escalation_id, decision in zip(held, ["approve", "reject"], strict=True):
        response = await stack.admin(
            "POST",
            f"/v1/admin/escalations/{escalation_id}/resolve",
            json={"decision": decision, "note": "checked"},
        )
        assert response.status == 200, await response.text()
    again = await stack.admin(
        "POST", f"/v1/admin/escalations/{held[0]}/resolve", json={"decision": "reject"}
    )
    assert again.status == 409
    outcomes = []
    for future in (approved, rejected):
        try:
            answer = await asyncio.wait_for(future, 30)
            outcomes.append(("ok", answer.choices[0].message.content))
        except openai.PermissionDeniedError as exc:
            outcomes.append(("refused", exc.code))
    assert sorted(o[0] for o in outcomes) == ["ok", "refused"]
    assert ("refused", "review_rejected") in outcomes


async def test_admin_roles_keep_each_tenant_to_itself(stack: Component) -> None:
    root = await stack.admin(
        "POST", "/v1/tokens", json={"tenant": TENANT, "team": "platform", "role": "tenant-admin"}
    )
    assert root.status == 201, await root.text()
    tenant_admin = (await root.json())["key"]
    other = await stack.create_key("intruders", tenant="globex")

    async def call(method: str, path: str, **kwargs: Any) -> Any:
        return await stack.as_key(tenant_admin, method, path, **kwargs)

    own = await call("POST", "/v1/tokens", json={"team": "search"})
    own_key = await own.json()
    assert own.status == 201 and own_key["tenant"] == TENANT
    assert (await call("POST", "/v1/tokens", json={"team": "x", "tenant": "globex"})).status == 403
    assert (await call("POST", "/v1/tokens", json={"team": "x", "role": "org-admin"})).status == 403
    listed = (await (await call("GET", "/v1/tokens")).json())["data"]
    assert listed and {k["tenant"] for k in listed} == {TENANT}
    assert (await call("DELETE", f"/v1/tokens/{other['key_id']}")).status == 404
    fund = await call("POST", "/v1/admin/wallets/fund", json={"team": "search", "usd": "100"})
    assert fund.status == 403
    assert (await fund.json())["error"]["code"] == "forbidden"
    assert (await call("DELETE", f"/v1/tokens/{own_key['key_id']}")).status == 200

    developer = (await stack.create_key("devs", tenant=TENANT))["key"]
    refused = await stack.as_key(developer, "GET", "/v1/tokens")
    assert refused.status == 403


async def test_a_team_limit_holds_across_the_team_s_keys(stack: Component) -> None:
    first = await client_for(stack, "limited")
    second = stack.sdk((await stack.create_key("limited", tenant=TENANT))["key"])
    for sdk in (first, second, first):
        await sdk.chat.completions.create(model="sim-small", messages=HI)
    with pytest.raises(openai.RateLimitError) as limited:
        await second.chat.completions.create(model="sim-small", messages=HI)
    assert limited.value.code == "rate_limited"
    assert "team limited" in limited.value.message
    assert int(limited.value.response.headers["Retry-After"]) >= 1


async def test_weighted_group_splits_traffic_and_records_the_pick(stack: Component) -> None:
    client = await client_for(stack, "experiments")
    picked = {
        (await client.chat.completions.create(model="chat-ab", messages=HI)).model
        for _ in range(30)
    }
    assert picked == {"chat-ab"}  # the caller sees the group name it asked for
    counts: dict[tuple[str, str], int] = {}
    for r in stack.lineage.lineage():
        if r.model_requested == "chat-ab":
            pick = (r.model_selected, r.selection_reason)
            counts[pick] = counts.get(pick, 0) + 1
    assert sum(counts.values()) == 30
    assert sorted(counts) == [("sim-large", "weighted"), ("sim-small", "weighted")]


async def test_data_residency_keeps_a_tenant_in_its_regions(stack: Component) -> None:
    client = await client_for(stack, "berlin", tenant=EU_TENANT)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client.chat.completions.create(model="sim-small", messages=HI)
    assert refused.value.code == "region_not_allowed"
    served = await client.chat.completions.create(model="sim-large", messages=HI)
    assert served.choices[0].message.content


async def test_a_failing_target_trips_its_breaker_traffic_fails_over_and_it_closes(
    stack: Component,
) -> None:
    client = await client_for(stack, "oncall")
    stack.upstream.outage = True
    traces = [f"{i:032x}" for i in range(0xC0, 0xC5)]
    for trace_id in traces:
        await client.chat.completions.create(model=OUTAGE_MODEL, messages=HI, **traced(trace_id))
    stack.upstream.outage = False

    trail = [
        (
            stack.lineage_of(t).selection_reason,
            stack.lineage_of(t).model_selected,
            [a.status for a in stack.lineage_of(t).attempts],
        )
        for t in traces
    ]
    # Three failures open the breaker; later calls skip the primary without calling it.
    assert trail[:3] == [("fallback", "sim-small", [503, 200])] * 3
    assert trail[3:] == [("breaker_open", "sim-small", [0, 200])] * 2

    # After the reset timeout a probe goes to the primary, succeeds, and closes it.
    async with asyncio.timeout(10):
        for i in range(0xD0, 0xE0):
            probe = f"{i:032x}"
            await client.chat.completions.create(model=OUTAGE_MODEL, messages=HI, **traced(probe))
            if stack.lineage_of(probe).selection_reason == "catalogue":
                break
            await asyncio.sleep(1.2)
        else:
            pytest.fail("the breaker never closed")


async def test_oversized_headers_get_a_json_431(stack: Component) -> None:
    response = await stack.client.post(
        "/v1/chat/completions",
        headers={"X-Padding": "p" * 5_000, "Authorization": "Bearer nope"},
        json={"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status == 431
    assert (await response.json())["error"]["code"] == "request_headers_too_large"
