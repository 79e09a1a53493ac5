"""Console pages over the real admin API (tests/component/console_support.py): what a
user does on them, beyond the attacks of tests/security/test_console_security.py."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import openai
import pytest
from aiohttp.test_utils import unused_port

from schemas.records import EscalationOpened, PolicyPackPublished
from tests.component.console_support import running_console, serving_worker_metrics
from tests.component.support import ADMIN_TOKEN, review_pack


async def test_a_pack_starts_from_a_seed_template_and_is_pushed_under_its_own_name(
    tmp_path: Path,
) -> None:
    async with running_console(tmp_path) as console:
        await console.login(ADMIN_TOKEN)
        listing = await (await console.client.get("/policies", params={"tenant": "acme"})).text()
        assert "the standard-saas template" in listing
        page = await console.client.get(
            "/policies/pack",
            params={"tenant": "acme", "name": "support-guard", "template": "standard-saas"},
        )
        text = await page.text()
        assert page.status == 200 and "starts from the template standard-saas" in text
        source = html.unescape(text.split('name="source_yaml"', 1)[1].split(">", 1)[1])
        source = source.split("</textarea>", 1)[0]
        assert "name: support-guard" in source and "name: standard-saas" not in source
        token = await console.csrf("/policies")
        pushed = await console.client.post(
            "/policies/push",
            data={"csrf": token, "tenant": "acme", "name": "support-guard", "source_yaml": source},
            allow_redirects=False,
        )
        assert pushed.status == 303, await pushed.text()
        published = console.component.views.packs[("acme", "support-guard")]
        assert published.version == 1 and published.source_yaml == source
        unknown = await console.client.get(
            "/policies/pack", params={"tenant": "acme", "name": "x", "template": "nope"}
        )
        assert unknown.status == 404


async def test_the_overview_shows_each_workers_commit_stalls_and_unknown_when_one_is_down(
    tmp_path: Path,
) -> None:
    async with serving_worker_metrics() as worker:
        worker.metrics.commit_stalled()
        worker.metrics.commit_stalled()
        worker.metrics.dead_lettered("wallets", "bad record")
        worker.metrics.folded("wallets", int(time.time() * 1000) - 3_000)
        worker.metrics.watch_lag(
            lambda: [("streams-agents", "lineage", 0, 5), ("streams-agents", "lineage", 1, 2)]
        )
        down = f"http://127.0.0.1:{unused_port()}"
        # By name, as compose's console finds each replica (every address of `worker`).
        by_name = "dns+" + worker.url.replace("127.0.0.1", "localhost")
        urls = f"{by_name},{down},dns+http://no-such-worker.invalid:6066"
        async with running_console(
            tmp_path, console_worker_urls=urls, console_worker_timeout_s=1.0
        ) as console:
            await console.login(ADMIN_TOKEN)
            page = await (await console.client.get("/overview/live")).text()
    assert re.search(r'id="commit-stalls-1">2<', page), page
    assert 'lineage</td><td class="num">7 records' in page.replace("streams-agents · ", "")
    assert re.search(r"wallets \(fold\)</td><td class=\"num\">[34]\.\d s", page)
    # The worker that does not answer is unknown, never 0.
    assert re.search(r'id="commit-stalls-2">unknown: the worker did not answer', page)
    assert re.search(r'id="commit-stalls-3">unknown: the worker did not answer \(no address', page)
    assert f"<code>{worker.url}/metrics</code>" in page  # the address the name resolved to
    assert worker.scrapes == 1


ACME_P = {"tenant": "acme", "name": "p"}
PACK = (
    "name: p\npolicies:\n  chain:\n    # every call is logged\n"
    "    - name: audit-logger\n      policy: {}\n"
)


async def test_a_pack_is_assigned_to_teams_and_gateways_as_a_new_version(tmp_path: Path) -> None:
    async with running_console(tmp_path) as console:
        pushed = await console.component.admin(
            "POST", "/v1/admin/policies", json={"tenant": "acme", "source_yaml": PACK}
        )
        assert pushed.status == 201
        await console.login(ADMIN_TOKEN)
        page = await (await console.client.get("/policies/pack", params=ACME_P)).text()
        assert 'id="assign"' in page and 'name="version" value="1"' in page
        token = await console.csrf("/policies")
        form = {"csrf": token, "tenant": "acme", "name": "p", "version": "1"}
        assigned = await console.client.post(
            "/policies/assign",
            data={**form, "teams": "alpha, beta alpha", "gateways": "eu-1"},
            allow_redirects=False,
        )
        assert assigned.status == 303, await assigned.text()
        assert assigned.headers["Location"] == "/policies/pack?name=p&done=assigned&tenant=acme"
        published = console.component.views.packs[("acme", "p")]
        assert published.version == 2
        assert published.source_yaml == (
            PACK + 'targeting:\n  teams: ["alpha", "beta"]\n  gateways: ["eu-1"]\n'
        )
        assert "# every call is logged" in published.source_yaml  # the text is kept
        (_, record) = console.component.control.of_type(PolicyPackPublished)
        assert (record.version, record.published_by) == (2, "admin")
        assert '+  teams: ["alpha", "beta"]' in record.diff
        # A page that still shows v1 does not overwrite v2 (If-Match): 412, nothing published.
        stale = await console.client.post("/policies/assign", data={**form, "teams": "gamma"})
        assert stale.status == 412 and "is at version 2" in await stale.text()
        assert console.component.views.packs[("acme", "p")].version == 2
        # Neither teams nor gateways: the whole tenant again, every step as written.
        cleared = await console.client.post(
            "/policies/assign", data={**form, "version": "2"}, allow_redirects=False
        )
        assert cleared.status == 303
        assert console.component.views.packs[("acme", "p")].source_yaml == PACK


async def test_an_assignment_a_step_cannot_run_under_shows_the_lint_error(tmp_path: Path) -> None:
    scoped = PACK.replace(
        "      policy: {}\n", "      policy: {}\n      targeting: {teams: [alpha]}\n"
    )
    async with running_console(tmp_path) as console:
        pushed = await console.component.admin(
            "POST", "/v1/admin/policies", json={"tenant": "acme", "source_yaml": scoped}
        )
        assert pushed.status == 201, await pushed.text()
        await console.login(ADMIN_TOKEN)
        token = await console.csrf("/policies")
        refused = await console.client.post(
            "/policies/assign",
            data={"csrf": token, "tenant": "acme", "name": "p", "version": "1", "teams": "beta"},
        )
        text = html.unescape(await refused.text())
        assert refused.status == 400 and 'id="lint-errors"' in text, text
        assert 'teams: ["beta"]' in text  # the text as sent, beside its errors
        assert console.component.views.packs[("acme", "p")].version == 1
        for teams in ("al pha;", "x" * 65):
            bad = await console.client.post(
                "/policies/assign",
                data={"csrf": token, "tenant": "acme", "name": "p", "version": "1", "teams": teams},
            )
            assert bad.status == 403


async def test_revert_goes_through_the_admin_api_and_reads_older_versions_from_the_store(
    tmp_path: Path,
) -> None:
    async with running_console(tmp_path) as console:
        for source in (PACK, PACK.replace("every call", "each call")):
            pushed = await console.component.admin(
                "POST", "/v1/admin/policies", json={"tenant": "acme", "source_yaml": source}
            )
            assert pushed.status == 201
        await console.login(ADMIN_TOKEN)
        token = await console.csrf("/policies")
        form = {"csrf": token, "tenant": "acme", "name": "p", "version": "1"}
        reverted = await console.client.post("/policies/revert", data=form, allow_redirects=False)
        assert reverted.headers["Location"] == "/policies/pack?name=p&done=reverted&tenant=acme"
        assert console.component.views.packs[("acme", "p")].version == 3
        assert console.component.views.packs[("acme", "p")].source_yaml == PACK
        assert not console.query.asked_about("source_yaml")  # no store read was needed
        # A version the gateway no longer keeps (it keeps the newest 100): from the store.
        del console.component.views.pack_versions[("acme", "p")][2]
        older = PACK.replace("every call", "each call")
        console.query.rows_for["SELECT source_yaml"] = [{"source_yaml": older}]
        again = await console.client.post(
            "/policies/revert", data={**form, "version": "2"}, allow_redirects=False
        )
        assert again.status == 303
        assert console.component.views.packs[("acme", "p")].source_yaml == older
        assert console.query.asked_about("source_yaml")
        console.query.rows_for.clear()
        missing = await console.client.post("/policies/revert", data={**form, "version": "2"})
        assert missing.status == 404


async def test_the_key_form_offers_the_tenants_packs(tmp_path: Path) -> None:
    async with running_console(tmp_path) as console:
        for tenant in ("acme", "globex"):
            body = {"tenant": tenant, "source_yaml": PACK.replace("name: p", f"name: {tenant}-p")}
            assert (await console.component.admin("POST", "/v1/admin/policies", json=body)).ok
        await console.login(ADMIN_TOKEN)
        page = await (await console.client.get("/keys", params={"tenant": "acme"})).text()
        form = page.split('id="key-pack"', 1)[1].split("</select>", 1)[0]
        assert '<option value="acme-p">' in form and "globex-p" not in form
        token = await console.csrf("/keys")
        created = await console.client.post(
            "/keys",
            data={"csrf": token, "tenant": "acme", "team": "alpha", "policy_pack": "acme-p"},
        )
        assert created.status == 201
        (key,) = [k for k in console.component.views.keys.values() if k.team_id == "alpha"]
        assert key.policy_pack == "acme-p"


async def test_an_escalation_shows_the_held_calls_context_without_its_text(
    tmp_path: Path,
) -> None:
    async with running_console(tmp_path) as console:
        component = console.component
        pack = review_pack("review", "P2", "fraud")
        pushed = await component.admin(
            "POST", "/v1/admin/policies", json={"tenant": "acme", "source_yaml": pack}
        )
        assert pushed.status == 201
        sdk = await component.sdk_for("beta", tenant="acme", usd="1", policy_pack="review")
        with pytest.raises(openai.PermissionDeniedError):
            await sdk.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": "a diagnosis please"}]
            )
        (opened,) = component.lineage.of_type(EscalationOpened)
        (call,) = component.lineage.lineage()
        # The store's rows, as the sink writes them from these records.
        console.query.rows_for["FROM escalation_events"] = [
            {"at_ms": opened.occurred_at, "producer_id": opened.producer_id, "seq": opened.seq}
            | {"request_sha256": opened.request_sha256}
        ]
        console.query.rows_for["FROM lineage WHERE trace_id"] = [
            {
                "id": call.event_id,
                "at_ms": call.occurred_at,
                "model_requested": call.model_requested,
                "model_selected": call.model_selected,
                "provider": call.provider,
                "policies_applied": list(call.policies_applied),
                "guardrails_triggered": [[g.name, g.action] for g in call.guardrails_triggered],
                "decision": call.decision,
                "http_status": call.http_status,
                "error_code": call.error_code,
                "request_sha256": call.request_sha256,
                "cost_nanousd": call.cost_nanousd,
            }
        ]
        await console.login(ADMIN_TOKEN)
        queue = await (await console.client.get("/escalations")).text()
        assert f'href="/escalations/{opened.escalation_id}?tenant=acme"' in queue
        page = await console.client.get(f"/escalations/{opened.escalation_id}")
        text = html.unescape(await page.text())
        assert page.status == 200, text
        key = component.views.keys[opened.key_id]
        assert f'id="key-prefix">{key.key_prefix}…' in text
        assert f'id="request-sha256">{opened.request_sha256}<' in text
        assert "P2" in text and "fraud" in text and "sim-small" in text
        assert "content-filter → human-oversight" in text  # the pack's steps
        triggered = ", ".join(f"{g.name} ({g.action})" for g in call.guardrails_triggered)
        assert triggered.startswith("content-filter (") and triggered in text
        assert "human-oversight</code>" in text and "yes: its sha256 matches" in text
        assert f"/events/{call.event_id}" in text
        assert "diagnosis" not in text  # the prompt is nowhere: the records do not hold it
        # What the console asked the store, it asked by this escalation and its trace.
        asked = [q.params for q in console.query.asked if "escalation_events" in q.text]
        assert asked[-1]["escalation"] == opened.escalation_id
        # Without the call's record yet, the page says so.
        del console.query.rows_for["FROM lineage WHERE trace_id"]
        held = await (await console.client.get(f"/escalations/{opened.escalation_id}")).text()
        assert "not in the store yet" in held
