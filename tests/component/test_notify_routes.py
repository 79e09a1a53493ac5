"""Notification routes in-process: the admin API adds (destination checked, secret sealed
on the control record), lists (no secret), tests (a signed request a receiver verifies;
a redirect is not followed) and removes routes, tenant-isolated; `govledger notify` does
the same from the command line and reports a refused destination."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from schemas.notify_records import NotifyRouteAdded
from streams.notify import logic
from tests.component.support import Component, running_component
from tests.component.test_policy_cli import govledger

SECRET = "whsec_c2lnbmluZy1zZWNyZXQtZm9yLXRlc3Rz"


class Receiver:
    """A local webhook receiver: records what it gets; /moved answers a redirect."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, str], bytes]] = []

    async def hook(self, request: web.Request) -> web.Response:
        self.got.append((request.path, dict(request.headers), await request.read()))
        return web.json_response({"ok": True})

    async def moved(self, request: web.Request) -> web.Response:
        self.got.append((request.path, dict(request.headers), await request.read()))
        raise web.HTTPFound("/hook")

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        app.router.add_post("/moved", self.moved)
        return app


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    made = Receiver()
    server = TestServer(made.application(), host="127.0.0.1")
    await server.start_server()
    try:
        yield made, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


@pytest.fixture
async def component(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Component]:
    # The org allows the local receiver (plain http, a loopback address) and localhost by
    # name for http but not as a private host: it must be refused when it resolves.
    monkeypatch.setenv("GOVLEDGER_NOTIFY_ALLOWED_HOSTS", "http://127.0.0.1,http://localhost")
    monkeypatch.setenv("GOVLEDGER_NOTIFY_PRIVATE_HOSTS", "127.0.0.1")
    async with running_component(tmp_path) as running:
        yield running


async def add(component: Component, key: str | None = None, **body: Any) -> Any:
    """POST a route as `key` (default: the admin token)."""
    if key is None:
        return await component.admin("POST", "/v1/admin/notify/routes", json=body)
    return await component.as_key(key, "POST", "/v1/admin/notify/routes", json=body)


async def test_a_route_is_added_with_its_secret_sealed_and_listed_without_it(
    component: Component, receiver: tuple[Receiver, str]
) -> None:
    _, base = receiver
    response = await add(
        component, events=["quota.threshold"], url=f"{base}/hook", secret=SECRET, tenant="acme"
    )
    assert response.status == 201, await response.text()
    route = await response.json()
    assert route["events"] == ["quota.threshold"] and route["tenant_id"] == "acme"
    (record,) = [r for _, r in component.control.records if isinstance(r, NotifyRouteAdded)]
    # Neither the secret nor the URL's path (a Slack URL is a credential) is in the clear.
    assert SECRET.encode() not in record.secret_sealed and b"/hook" not in record.secret_sealed
    assert record.url == route["url"] == f"{base}/…"
    listed = await component.admin("GET", "/v1/admin/notify/routes")
    text = await listed.text()
    assert route["id"] in text and SECRET not in text and "secret" not in text


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://hooks.example.com/x", "not in GOVLEDGER_NOTIFY_ALLOWED_HOSTS"),
        ("http://localhost/x", "private or reserved addresses"),
        ("http://127.0.0.1@evil.example/x", "user information"),
        ("http://0x7f.1/x", "numeric"),
        ("http://[::1]/x", "not in GOVLEDGER_NOTIFY_ALLOWED_HOSTS"),
    ],
)
async def test_a_destination_the_org_does_not_allow_is_refused_with_400(
    component: Component, url: str, reason: str
) -> None:
    response = await add(component, events=["quota.threshold"], url=url, secret=SECRET)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_request" and reason in error["message"]
    assert component.views.notify_routes == {}


async def test_bad_events_formats_and_secrets_are_refused(
    component: Component, receiver: tuple[Receiver, str]
) -> None:
    url = f"{receiver[1]}/hook"
    bodies: list[dict[str, Any]] = [
        {"events": ["quota.thresh"], "url": url, "secret": SECRET},
        {"events": [], "url": url, "secret": SECRET},
        {"events": ["quota.threshold"], "url": url, "secret": SECRET, "format": "xml"},
        {"events": ["quota.threshold"], "url": url, "secret": ""},
        {"events": ["quota.threshold"], "url": url, "secret": "x" * 2000},
    ]
    for body in bodies:
        response = await component.admin("POST", "/v1/admin/notify/routes", json=body)
        assert response.status == 400, body


async def test_routes_are_tenant_isolated(
    component: Component, receiver: tuple[Receiver, str]
) -> None:
    url = f"{receiver[1]}/hook"
    acme = (await component.create_key("ops", tenant="acme", role="tenant-admin"))["key"]
    globex = (await component.create_key("ops", tenant="globex", role="tenant-admin"))["key"]
    ours = await (
        await add(component, acme, events=["quota.threshold"], url=url, secret=SECRET)
    ).json()
    assert ours["tenant_id"] == "acme"
    theirs = await add(
        component, acme, events=["quota.threshold"], url=url, secret=SECRET, tenant="globex"
    )
    assert theirs.status == 403
    org = await add(component, acme, events=["circuit.opened"], url=url, secret=SECRET, scope="org")
    assert org.status == 403
    listed = await (await component.as_key(globex, "GET", "/v1/admin/notify/routes")).json()
    assert listed["data"] == []
    path = f"/v1/admin/notify/routes/{ours['id']}"
    assert (await component.as_key(globex, "DELETE", path)).status == 404
    assert (await component.as_key(globex, "POST", f"{path}/test")).status == 404
    assert (await component.as_key(acme, "DELETE", path)).status == 200
    assert component.views.notify_routes == {}


async def test_a_route_test_sends_a_signed_cloudevent_and_follows_no_redirect(
    component: Component, receiver: tuple[Receiver, str]
) -> None:
    got, base = receiver
    good = await (
        await add(component, events=["quota.threshold"], url=f"{base}/hook", secret=SECRET)
    ).json()
    answer = await (
        await component.admin("POST", f"/v1/admin/notify/routes/{good['id']}/test")
    ).json()
    assert answer["delivered"] is True and answer["http_status"] == 200
    _, headers, body = got.got[0]
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["webhook-id"] == answer["webhook_id"]
    assert logic.verify(SECRET, lowered, body, int(time.time()))
    moved = await (
        await add(component, events=["quota.threshold"], url=f"{base}/moved", secret=SECRET)
    ).json()
    answer = await (
        await component.admin("POST", f"/v1/admin/notify/routes/{moved['id']}/test")
    ).json()
    assert (answer["delivered"], answer["http_status"]) == (False, 302)
    assert [p for p, _, _ in got.got] == ["/hook", "/moved"]  # the redirect was not followed


async def test_the_command_line_adds_lists_tests_and_removes_and_reports_refusals(
    component: Component, receiver: tuple[Receiver, str]
) -> None:
    got, base = receiver
    refused = await govledger(
        component, "notify", "add", "--on", "quota.threshold",
        "--webhook", "https://hooks.example.com/x", "--secret", SECRET,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "400 invalid_request: destination refused" in refused.stderr
    added = await govledger(
        component, "notify", "add", "--on", "quota.threshold,escalation.p1,export.completed",
        "--webhook", f"{base}/hook", "--secret", SECRET, "--format", "slack",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    route_id = added.stdout.split()[1].rstrip(":")
    listed = await govledger(component, "notify", "list")
    assert route_id in listed.stdout
    assert "quota.threshold,escalation.p1,export.completed" in listed.stdout
    assert SECRET not in listed.stdout
    tested = await govledger(component, "notify", "test", route_id)
    assert tested.returncode == 0 and "delivered (HTTP 200" in tested.stdout
    assert "text" in json.loads(got.got[-1][2])  # a Slack message
    removed = await govledger(component, "notify", "remove", route_id)
    assert removed.returncode == 0
    assert component.views.notify_routes == {}
