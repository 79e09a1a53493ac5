"""Logs a machine can read, and that hold nothing a reader of logs must not see.

Calls go through the gateway, its admin API and the query API in-process with a known key
secret, the admin token, a known prompt and known personal data (in the prompt, in the
`user` field, in a path); every structlog line is captured (as its JSON line would be
written) and so is every standard-library record (aiohttp, httpx), and each is scanned
for them. The real stack's log files get the same scan (tests/integration/test_logs.py).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import MutableMapping
from typing import Any

import openai
import pytest
from structlog.testing import capture_logs

from govledger.logs import render_json
from schemas.records import LineageRecord
from tests.component.support import (
    ADMIN_TOKEN,
    ECHO_MODEL,
    FAILING_MODEL,
    Component,
    running_query_api,
)

RUN = uuid.uuid4().hex[:12]
TENANT = f"logs-{RUN}"
PROMPT = f"Draft the merger memo for Project Bluebird {RUN} before Friday"
EMAIL = f"jane.doe.{RUN}@example.com"
CARD = "4111 1111 1111 1111"
BLOCKED_WORD = f"wire{RUN}"
UPSTREAM_API_KEY = "upstream-key"  # the provider key tests/component/support.py wires in


def rendered(captured: list[MutableMapping[str, Any]]) -> list[str]:
    """Each captured structlog event as the JSON line `GOVLEDGER_LOG_FORMAT=json` writes."""
    return [render_json(None, "info", dict(event)) for event in captured]


def assert_clean(lines: list[str], secrets: dict[str, str]) -> None:
    leaks = [
        f"{name} in: {line[:300]}"
        for line in lines
        for name, secret in secrets.items()
        if secret in line
    ]
    assert not leaks, "\n".join(leaks)


async def test_every_line_is_free_of_secrets_prompts_and_personal_data(
    component: Component, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pack = (
        "name: logs-strict\npolicies:\n  chain:\n"
        f"    - name: content-filter\n      policy: {{deny: [{BLOCKED_WORD}], action: block}}\n"
    )
    with capture_logs() as captured:
        pushed = await component.admin(
            "POST", "/v1/admin/policies", json={"tenant": TENANT, "source_yaml": pack}
        )
        assert pushed.status == 201, await pushed.text()
        component.publish_balance("legal", "5", tenant=TENANT)
        secret = (await component.create_key("legal", tenant=TENANT))["key"]
        strict = (await component.create_key("legal", tenant=TENANT, policy_pack="logs-strict"))[
            "key"
        ]
        admin_key = (await component.create_key("ops", tenant=TENANT, role="tenant-admin"))["key"]
        # The query API first: an aiohttp client after the SDK's sometimes hangs here.
        async with running_query_api(tmp_path / "sink", component.views) as query:
            bad = await query.get(
                "/v1/events",
                params={"since": EMAIL},
                headers={"Authorization": f"Bearer {admin_key}"},
            )
            assert bad.status == 400
            refused = await query.get("/v1/events", headers={"Authorization": f"Bearer {secret}"})
            assert refused.status == 403
        client = component.sdk(secret)
        prompt = f"{PROMPT}; reply to {EMAIL}, card {CARD}"
        answer = await client.chat.completions.create(
            model=ECHO_MODEL, messages=[{"role": "user", "content": prompt}], user=EMAIL
        )
        assert PROMPT in (answer.choices[0].message.content or "")
        stream = await client.chat.completions.create(
            model=ECHO_MODEL, messages=[{"role": "user", "content": prompt}], stream=True
        )
        assert [chunk async for chunk in stream]
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(
                model=FAILING_MODEL, messages=[{"role": "user", "content": prompt}]
            )
        with pytest.raises(openai.BadRequestError):
            await component.sdk(strict).chat.completions.create(
                model="sim-small",
                messages=[{"role": "user", "content": f"{prompt} {BLOCKED_WORD}"}],
            )
        with pytest.raises(openai.AuthenticationError):
            await component.sdk(secret[:-4] + "zzzz").chat.completions.create(
                model=ECHO_MODEL, messages=[{"role": "user", "content": prompt}]
            )
        unknown = await component.as_key(secret, "GET", f"/v1/admin/users/{EMAIL}")
        assert unknown.status == 404
        listed = await component.as_key(admin_key, "GET", "/v1/admin/keys")
        assert listed.status == 200

    lines = rendered(captured) + [record.getMessage() for record in caplog.records]
    assert len(captured) >= 12, captured  # the scan saw the calls' and requests' lines
    assert_clean(
        lines,
        {
            "the key secret": secret,
            "another key's secret": strict,
            "the tenant admin's secret": admin_key,
            "the presented bad key": secret[:-4] + "zzzz",
            "the admin token": ADMIN_TOKEN,
            "the upstream provider key": UPSTREAM_API_KEY,
            "the prompt": PROMPT,
            "the e-mail address": EMAIL,
            "the card number": CARD,
            "the blocked word": BLOCKED_WORD,
        },
    )


async def test_one_access_line_per_call_names_it_and_its_key_by_prefix(
    component: Component,
) -> None:
    client = await component.sdk_for("alpha", tenant=TENANT)
    with capture_logs() as captured:
        await client.chat.completions.create(
            model=ECHO_MODEL, messages=[{"role": "user", "content": "hello"}]
        )
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(
                model=FAILING_MODEL, messages=[{"role": "user", "content": "hello"}]
            )
    calls = [event for event in captured if event["event"] == "gateway call"]
    records: list[LineageRecord] = component.lineage.lineage()[-2:]
    assert [line["event_id"] for line in calls] == [r.event_id for r in records]
    served, failed = calls
    key_prefix = str(client.api_key)[:10]
    assert served == {
        "event": "gateway call",
        "log_level": "info",
        "trace_id": records[0].trace_id,
        "event_id": records[0].event_id,
        "tenant": TENANT,
        "team": "alpha",
        "key_prefix": key_prefix,
        "api": "chat.completions",
        "model": ECHO_MODEL,
        "model_selected": ECHO_MODEL,
        "provider": "openai",
        "attempts": 1,
        "stream": False,
        "decision": "allowed",
        "status": 200,
        "error_code": None,
        "latency_ms": round(records[0].latency_ms, 3),
        "overhead_ms": round(records[0].gateway_overhead_ms, 3),
        "cost_nanousd": records[0].cost_nanousd,
    }
    assert (failed["status"], failed["error_code"], failed["decision"]) == (
        502,
        records[1].error_code,
        "failed",
    )
    # The gateway call's line is the request's only one: the middleware left it alone.
    assert not [event for event in captured if event["event"] == "http request"]


async def test_admin_and_query_requests_get_a_line_with_route_status_and_tenant(
    component: Component, tmp_path: Any
) -> None:
    admin_key = (await component.create_key("ops", tenant=TENANT, role="tenant-admin"))["key"]
    with capture_logs() as captured:
        assert (await component.admin("GET", "/v1/admin/keys")).status == 200
        assert (await component.as_key(admin_key, "GET", "/v1/admin/keys")).status == 200
        assert (await component.admin("DELETE", "/v1/tokens/nope")).status == 404
        assert (await component.admin("GET", f"/v1/nowhere/{RUN}")).status == 404
        async with running_query_api(tmp_path / "sink", component.views) as query:
            answer = await query.get(
                "/v1/events",
                params={"since": "forever"},
                headers={"Authorization": f"Bearer {admin_key}"},
            )
            assert answer.status == 400
    lines = [
        {k: v for k, v in event.items() if k != "latency_ms"}
        for event in captured
        if event["event"] == "http request"
    ]
    assert all(event["latency_ms"] >= 0 for event in captured if event["event"] == "http request")
    route = "/v1/admin/keys"
    assert lines[:2] == [
        {"event": "http request", "log_level": "info", "method": "GET", "route": route}
        | {"status": 200, "tenant": None},
        {"event": "http request", "log_level": "info", "method": "GET", "route": route}
        | {"status": 200, "tenant": TENANT},
    ]
    assert lines[2]["route"] == "/v1/tokens/{key_id}" and lines[2]["status"] == 404
    # A path no route matched is not written down: the caller chose it.
    assert lines[3] == {
        "event": "http request",
        "log_level": "info",
        "method": "GET",
        "route": "(no route)",
        "status": 404,
    }
    assert lines[4] == {
        "event": "http request",
        "log_level": "info",
        "method": "GET",
        "route": "/v1/events",
        "status": 400,
        "tenant": TENANT,
    }
