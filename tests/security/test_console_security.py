"""The console's attacks (tests/component/console_support.py: the real admin API, the
query API's real authentication): sessions (fixation, cookie flags, expiry, logout),
CSRF on every change, the content security policy, and above all tenant isolation — a
tenant admin's session cannot see or change another tenant by any page, form, URL
parameter or htmx fragment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from console.security import CSP
from schemas.records import WalletBudgetSet, WalletFunded
from tests.component.console_support import (
    ConsoleHarness,
    running_console,
    serving_worker_metrics,
)
from tests.component.support import ADMIN_TOKEN, review_pack

TENANT, OTHER = "acme", "globex"
# Every page and fragment a tenant admin could aim at another tenant.
PAGES = (
    "/",
    "/overview/live",
    "/events",
    "/costs",
    "/keys",
    "/policies",
    "/escalations",
    "/escalations/live",
    "/audit",
    "/audit/exports",
    "/audit/verify",
)
A_CALL = "/events/01a24fa3-c84a-7518-bfb6-b4910deaa3e4"


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[ConsoleHarness]:
    async with running_console(tmp_path) as harness:
        yield harness


async def tenant_admin(console: ConsoleHarness, tenant: str = TENANT) -> str:
    key = await console.component.create_key("ops", tenant=tenant, role="tenant-admin")
    return str(key["key"])


async def test_pages_need_a_session_and_fragments_say_where_to_log_in(
    console: ConsoleHarness,
) -> None:
    for path in PAGES:
        page = await console.client.get(path, allow_redirects=False)
        assert (page.status, page.headers["Location"]) == (303, "/login"), path
    fragment = await console.client.get(
        "/overview/live", headers={"HX-Request": "true"}, allow_redirects=False
    )
    assert (fragment.status, fragment.headers["HX-Redirect"]) == (401, "/login")


async def test_only_active_admin_keys_log_in(console: ConsoleHarness) -> None:
    viewer = await console.component.create_key("ops", tenant=TENANT, role="viewer")
    for key in ("gk_unknown", viewer["key"], "bad key with spaces", ""):
        answer = await console.login(str(key))
        assert answer.status in (401, 403) or answer.status == 400, key
        assert console.session_cookie() is None
    assert (await console.login(await tenant_admin(console))).status == 303


async def test_session_cookie_flags_and_csp_on_every_answer(console: ConsoleHarness) -> None:
    answer = await console.login(ADMIN_TOKEN)
    cookie = answer.cookies["govledger_console"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain HTTP here; see the Secure test below
    for path in ("/login", "/", "/overview/live", "/nowhere", "/static/console.css"):
        page = await console.client.get(path)
        assert page.headers["Content-Security-Policy"] == CSP, path
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
    # No inline script anywhere: htmx is configured by a meta tag.
    assert "<script>" not in await (await console.client.get("/")).text()


async def test_the_cookie_is_secure_behind_tls(tmp_path: Path) -> None:
    async with running_console(tmp_path, console_secure_cookie=True) as console:
        form = await console.client.get("/login")
        assert form.cookies["govledger_console_login"]["secure"]
        # A browser sends a Secure cookie over TLS only; this client over plain HTTP is
        # handed it by hand.
        token = form.cookies["govledger_console_login"].value
        answer = await console.client.post(
            "/login",
            data={"csrf": token, "key": ADMIN_TOKEN},
            headers={"Cookie": f"govledger_console_login={token}"},
            allow_redirects=False,
        )
        assert answer.status == 303
        cookie = answer.cookies["govledger_console"]
        assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"


async def test_login_makes_a_new_session_whatever_cookie_came_with_it(
    console: ConsoleHarness,
) -> None:
    # An attacker plants a session id of their choosing, or their own live session.
    console.plant_session_cookie("planted-by-attacker")
    await console.login(ADMIN_TOKEN)
    first = console.session_cookie()
    assert first not in (None, "planted-by-attacker")
    await console.login(await tenant_admin(console))
    second = console.session_cookie()
    assert second != first
    # The session the second login replaced is gone: its id opens nothing.
    console.plant_session_cookie(str(first))
    assert (await console.client.get("/", allow_redirects=False)).status == 303


async def test_changes_without_the_csrf_token_are_403_and_change_nothing(
    console: ConsoleHarness,
) -> None:
    await console.login(ADMIN_TOKEN)
    token = await console.csrf("/")
    for data, headers in (({}, {}), ({"csrf": "wrong"}, {}), ({}, {"X-CSRF-Token": "wrong"})):
        answer = await console.client.post("/logout", data=data, headers=headers)
        assert answer.status == 403
        assert (await console.client.get("/", allow_redirects=False)).status == 200
    form = await console.client.get("/login")
    assert form.status == 200
    # The login form's own token must match its cookie.
    bad_login = await console.client.post("/login", data={"csrf": "x", "key": ADMIN_TOKEN})
    assert bad_login.status == 403
    logout = await console.client.post("/logout", data={"csrf": token}, allow_redirects=False)
    assert logout.status == 303
    assert (await console.client.get("/", allow_redirects=False)).status == 303


async def test_a_revoked_key_ends_its_session(console: ConsoleHarness) -> None:
    key = await console.component.create_key("ops", tenant=TENANT, role="tenant-admin")
    await console.login(str(key["key"]))
    assert (await console.client.get("/", allow_redirects=False)).status == 200
    revoked = await console.component.admin("POST", f"/v1/admin/keys/{key['key_id']}/revoke")
    assert revoked.status == 200
    assert (await console.client.get("/", allow_redirects=False)).status == 303


async def test_a_tenant_admin_cannot_name_another_tenant_on_any_page(
    console: ConsoleHarness,
) -> None:
    await console.login(await tenant_admin(console))
    for path in PAGES:
        for tenant in (OTHER, "", " "):
            page = await console.client.get(path, params={"tenant": tenant})
            if tenant == OTHER:
                assert page.status == 403, path
                assert OTHER in await page.text()  # the refusal names it, nothing else
            else:
                assert page.status == 200, (path, await page.text())
    fragment = await console.client.get(
        "/overview/live", params={"tenant": OTHER}, headers={"HX-Request": "true"}
    )
    assert fragment.status == 403
    assert (await console.client.get(A_CALL, params={"tenant": OTHER})).status == 403
    # Another tenant's call by its id: the query runs as the tenant admin (the engine
    # filters its rows to its tenant), so the store has no such call for it.
    assert (await console.client.get(A_CALL)).status == 404
    # Whatever the console sent the query API, it sent with the tenant admin's key: the
    # API's reader was the tenant's (and so the engine filters every table to it).
    assert console.query.asked
    assert {q.reader_tenant for q in console.query.asked} == {TENANT}
    assert {q.params["tenant"] for q in console.query.asked} == {TENANT}


async def test_an_org_admin_sees_every_tenant_and_may_narrow_to_one(
    console: ConsoleHarness,
) -> None:
    await console.login(ADMIN_TOKEN)
    assert (await console.client.get("/")).status == 200
    assert (await console.client.get("/", params={"tenant": OTHER})).status == 200
    assert {q.reader_tenant for q in console.query.asked} == {None}
    assert {q.params["tenant"] for q in console.query.asked} == {"", OTHER}
    refused = await console.client.get("/", params={"tenant": "x' OR 1=1 --"})
    assert refused.status == 403


async def test_a_tenant_admins_forms_cannot_reach_another_tenant(console: ConsoleHarness) -> None:
    await console.login(await tenant_admin(console))
    token = await console.csrf("/costs")
    for path, fields in (
        ("/costs/fund", {"team": "alpha", "usd": "1"}),
        ("/costs/allocate", {"team": "alpha", "key": "key_x", "usd": "1"}),
        ("/costs/budget", {"team": "alpha", "usd": "1"}),
    ):
        answer = await console.client.post(path, data={"csrf": token, "tenant": OTHER, **fields})
        assert answer.status == 403, path
    journal = await console.client.get("/costs/journal", params={"wallet": f"{OTHER}/alpha"})
    assert journal.status == 403
    # In its own tenant the admin API decides: funding is for org admins.
    own = await console.client.post(
        "/costs/fund", data={"csrf": token, "tenant": TENANT, "team": "alpha", "usd": "1"}
    )
    assert own.status == 403
    assert "only an org admin may fund" in await own.text()
    assert console.component.control.of_type(WalletFunded) == []


async def test_changes_go_through_the_admin_api_with_the_sessions_key(
    console: ConsoleHarness,
) -> None:
    await console.login(ADMIN_TOKEN)
    token = await console.csrf("/costs")
    form = {"tenant": OTHER, "team": "alpha", "usd": "12.5", "thresholds": "50,90"}
    refused = await console.client.post("/costs/budget", data=form)  # no CSRF token
    assert refused.status == 403
    assert console.component.control.of_type(WalletBudgetSet) == []
    done = await console.client.post(
        "/costs/budget", data={"csrf": token, **form}, allow_redirects=False
    )
    assert done.status == 303
    assert done.headers["Location"] == f"/costs?tenant={OTHER}&done=budget"
    (budget,) = console.component.control.of_type(WalletBudgetSet)
    assert (budget.tenant_id, budget.wallet_id, budget.set_by) == (OTHER, f"{OTHER}/alpha", "admin")
    assert (budget.budget_nanousd, list(budget.thresholds_percent)) == (12_500_000_000, [50, 90])
    invalid = await console.client.post(
        "/costs/budget", data={"csrf": token, **form, "usd": "lots"}
    )
    assert invalid.status == 400 and "usd" in await invalid.text()


async def test_a_tenant_admin_lists_creates_and_revokes_keys_of_its_own_tenant_only(
    console: ConsoleHarness,
) -> None:
    rival = await console.component.create_key("beta", tenant=OTHER)
    await console.login(await tenant_admin(console))
    listing = await (await console.client.get("/keys")).text()
    assert rival["key_id"] not in listing and OTHER not in listing
    token = await console.csrf("/keys")
    refused = await console.client.post(
        "/keys", data={"csrf": token, "tenant": OTHER, "team": "beta"}
    )
    assert refused.status == 403
    # The rival's key id on the tenant admin's own form: the admin API does not find it.
    revoke = await console.client.post(
        f"/keys/{rival['key_id']}/revoke", data={"csrf": token, "tenant": TENANT}
    )
    assert revoke.status == 404
    assert console.component.views.keys[rival["key_id"]].revoked_at is None
    # Its own: created, the secret on this answer only.
    created = await console.client.post(
        "/keys", data={"csrf": token, "tenant": TENANT, "team": "alpha", "role": "developer"}
    )
    assert created.status == 201
    page = await created.text()
    (issued,) = [k for k in console.component.views.keys.values() if k.team_id == "alpha"]
    secret = page.split('class="secret">', 1)[1].split("<", 1)[0]
    assert secret.startswith("gk_") and issued.key_prefix == secret[: len(issued.key_prefix)]
    assert created.headers["Cache-Control"] == "no-store"
    assert secret not in await (await console.client.get("/keys")).text()
    # A tenant admin may not issue an org admin's key: the admin API refuses it.
    escalated = await console.client.post(
        "/keys", data={"csrf": token, "tenant": TENANT, "team": "alpha", "role": "org-admin"}
    )
    assert escalated.status == 403
    revoked = await console.client.post(
        f"/keys/{issued.key_id}/revoke", data={"csrf": token, "tenant": TENANT}
    )
    assert revoked.status == 200 and "Key revoked" in await revoked.text()
    assert console.component.views.keys[issued.key_id].revoked_at is not None


async def test_a_tenant_admin_pushes_packs_to_its_own_tenant_only(console: ConsoleHarness) -> None:
    await console.login(await tenant_admin(console))
    page = await console.client.get("/policies/pack", params={"name": "p", "tenant": OTHER})
    assert page.status == 403
    token = await console.csrf("/policies")
    pack = "name: p\npolicies:\n  chain:\n    - name: audit-logger\n      policy: {}\n"
    fields = {"name": "p", "source_yaml": pack, "version": "1", "teams": "alpha"}
    for path in ("/policies/push", "/policies/revert", "/policies/assign"):
        answer = await console.client.post(path, data={"csrf": token, "tenant": OTHER, **fields})
        assert answer.status == 403, path
    assert console.component.views.packs == {}
    # In its own tenant the admin API lints: the error is shown at its line.
    bad = pack.replace("audit-logger", "nope")
    linted = await console.client.post(
        "/policies/push", data={"csrf": token, "tenant": TENANT, "name": "p", "source_yaml": bad}
    )
    assert linted.status == 400
    assert "line 4:" in await linted.text()
    assert console.component.views.packs == {}


async def test_a_tenant_admin_cannot_see_or_decide_another_tenants_escalation(
    console: ConsoleHarness,
) -> None:
    component = console.component
    pack = review_pack("review", "P2", "fraud")
    pushed = await component.admin(
        "POST", "/v1/admin/policies", json={"tenant": OTHER, "source_yaml": pack}
    )
    assert pushed.status == 201
    sdk = await component.sdk_for("beta", tenant=OTHER, usd="1", policy_pack="review")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await sdk.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "a diagnosis please"}]
        )
    theirs = str(refused.value.response.headers["X-Govledger-Escalation"])
    await console.login(await tenant_admin(console))
    page = await console.client.get("/escalations", params={"status": "all"})
    assert page.status == 200 and theirs not in await page.text()
    # Its context page by id: the admin API does not list it for this key (404), and the
    # store is not even asked; naming the other tenant is refused outright.
    context = await console.client.get(f"/escalations/{theirs}")
    assert context.status == 404
    assert not console.query.asked_about("escalation_events")
    named = await console.client.get(f"/escalations/{theirs}", params={"tenant": OTHER})
    assert named.status == 403
    assert (await console.client.get("/escalations/esc_x'--")).status == 403
    token = await console.csrf("/escalations")
    for action, fields in (
        ("claim", {}),
        ("reassign", {"queue": "central"}),
        ("resolve", {"decision": "approve"}),
    ):
        # With its own tenant on the form (another is refused by the console), the admin
        # API does not find the other tenant's escalation.
        answer = await console.client.post(
            f"/escalations/{theirs}/{action}", data={"csrf": token, "tenant": TENANT, **fields}
        )
        assert answer.status == 404, action
        assert theirs not in await answer.text() or "no escalation" in await answer.text()
        other = await console.client.post(
            f"/escalations/{theirs}/{action}", data={"csrf": token, "tenant": OTHER, **fields}
        )
        assert other.status == 403
    assert theirs not in component.views.escalation_decisions
    # The org admin sees it and decides it, through the admin API.
    await console.login(ADMIN_TOKEN)
    assert theirs in await (await console.client.get("/escalations")).text()
    token = await console.csrf("/escalations")
    decided = await console.client.post(
        f"/escalations/{theirs}/resolve",
        data={"csrf": token, "tenant": OTHER, "decision": "reject", "note": "no"},
        allow_redirects=False,
    )
    assert decided.status == 303
    assert component.views.escalation_decisions[theirs] == "reject"


async def test_a_tenant_admin_exports_and_downloads_its_own_tenant_only(
    console: ConsoleHarness,
) -> None:
    await console.login(await tenant_admin(console))
    token = await console.csrf("/audit")
    form = {"csrf": token, "type": "events", "format": "csv", "since": "1d"}
    refused = await console.client.post("/audit/exports", data={**form, "tenant": OTHER})
    assert refused.status == 403
    queued = await console.client.post(
        "/audit/exports", data={**form, "tenant": TENANT}, allow_redirects=False
    )
    assert (queued.status, queued.headers["Location"]) == (303, "/audit?done=export")
    # Another tenant's export by its id: the query API, asked with this key, has none.
    for path in ("/audit/exports/exp_theirs/download", "/audit/exports/exp_theirs"):
        answer = await console.client.get(path)
        assert answer.status == 404, path
        assert answer.headers["Content-Security-Policy"] == CSP


async def test_failed_logins_from_one_address_are_throttled(tmp_path: Path) -> None:
    async with running_console(tmp_path, console_login_failures_per_minute=3) as console:
        for _ in range(3):
            assert (await console.login("gk_guess")).status == 401
        # Past the limit even the right key waits: nothing is tried for a minute.
        answer = await console.login(ADMIN_TOKEN)
        assert answer.status == 429 and console.session_cookie() is None


async def test_a_tenant_admins_overview_reads_no_worker_metrics(tmp_path: Path) -> None:
    # A worker's metrics are the fleet's (every tenant's lag and dead letters): only an
    # org admin's Overview shows them.
    async with serving_worker_metrics() as worker:
        worker.metrics.commit_stalled()
        async with running_console(tmp_path, console_worker_urls=worker.url) as console:
            await console.login(await tenant_admin(console))
            for path in ("/", "/overview/live"):
                page = await (await console.client.get(path)).text()
                assert "Commit stalls" not in page and worker.url not in page, path
            assert worker.scrapes == 0
            await console.login(ADMIN_TOKEN)
            assert "Commit stalls" in await (await console.client.get("/overview/live")).text()
            assert worker.scrapes == 1


async def test_a_tenant_admin_cannot_assign_revert_or_offer_another_tenants_pack(
    console: ConsoleHarness,
) -> None:
    pack = "name: theirs\npolicies:\n  chain:\n    - name: audit-logger\n      policy: {}\n"
    for _ in range(2):  # two versions, so there is one to revert to
        pushed = await console.component.admin(
            "POST", "/v1/admin/policies", json={"tenant": OTHER, "source_yaml": pack}
        )
        assert pushed.status in (200, 201)
        pack += "# again\n"
    await console.login(await tenant_admin(console))
    keys = await (await console.client.get("/keys")).text()
    assert "theirs" not in keys  # the key form offers its own tenant's packs only
    token = await console.csrf("/policies")
    # Its own tenant on the form, the other's pack by name: the admin API finds no such
    # pack in the tenant admin's tenant (and the store, asked with its key, has none).
    own = {"csrf": token, "tenant": TENANT, "name": "theirs", "version": "1"}
    assign = await console.client.post("/policies/assign", data={**own, "teams": "alpha"})
    assert assign.status == 404
    revert = await console.client.post("/policies/revert", data=own)
    assert revert.status == 404
    assert console.component.views.packs[(OTHER, "theirs")].version == 2
    assert {q.reader_tenant for q in console.query.asked} == {TENANT}


async def page_once(console: ConsoleHarness, path: str, text: str, **params: str) -> str:
    """The page (or fragment) once it shows `text` (a job runs in the background)."""
    for _ in range(200):
        page = await console.client.get(path, params=params)
        assert page.status == 200, await page.text()
        if text in (shown := await page.text()):
            return shown
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never showed {text!r}")


async def test_a_tenant_admin_verifies_its_own_tenant_only(console: ConsoleHarness) -> None:
    await console.login(await tenant_admin(console))
    token = await console.csrf("/audit")
    assert "No verification of acme yet." in await (await console.client.get("/audit")).text()
    refused = await console.client.post("/audit/verify", data={"csrf": token, "tenant": OTHER})
    assert refused.status == 403
    for data, headers in (({}, {}), ({"csrf": "wrong"}, {}), ({}, {"X-CSRF-Token": "x"})):
        answer = await console.client.post("/audit/verify", data=data, headers=headers)
        assert answer.status == 403
    assert console.query.verified == []
    started = await console.client.post(
        "/audit/verify", data={"csrf": token}, allow_redirects=False
    )
    assert (started.status, started.headers["Location"]) == (303, "/audit?done=verify")
    page = await page_once(console, "/audit", "TAMPERED: 1 finding<")
    # Run by the query API with the tenant admin's key: the scope is its tenant.
    assert console.query.verified == [TENANT]
    assert "gateway-shared" in page and "seq 4 missing" in page
    assert 'hx-get="/audit/verify' not in page  # finished: not polled


async def test_a_running_verification_shows_progress_is_polled_and_runs_once(
    console: ConsoleHarness,
) -> None:
    await console.login(ADMIN_TOKEN)
    console.query.verify_release.clear()
    token = await console.csrf("/audit")
    form = {"csrf": token, "tenant": OTHER}
    started = await console.client.post("/audit/verify", data=form, allow_redirects=False)
    assert started.headers["Location"] == f"/audit?done=verify&tenant={OTHER}"
    page = await page_once(console, "/audit", "3 / 7 records", tenant=OTHER)
    assert f'hx-get="/audit/verify?tenant={OTHER}"' in page and "<progress" in page
    again = await console.client.post("/audit/verify", data=form, allow_redirects=False)
    assert again.headers["Location"] == f"/audit?done=verifying&tenant={OTHER}"
    console.query.verify_release.set()
    fragment = await page_once(console, "/audit/verify", "TAMPERED", tenant=OTHER)
    assert "hx-get" not in fragment and "Findings: deleted" in fragment
    assert console.query.verified == [OTHER]
