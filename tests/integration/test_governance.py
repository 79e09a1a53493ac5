"""Governance on the running stack: policy packs, the policy chain, admin roles, routing
(weighted groups, data residency, circuit breakers), as a platform team and a product team
would meet them through the admin API, the command line and the `openai` SDK."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.policy.pack import template_source
from tests.integration.stack import (
    RunningStack,
    free_port,
    running_stack,
    stack_environ,
    wait_for,
)
from tests.integration.upstream import ECHO_MODEL, OUTAGE_MODEL, fake_upstream

TENANT = "acme"
EU_TENANT = "eu-only"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with fake_upstream({"unused"}, "unused-cut") as upstream:
        env = stack_environ(
            tmp_path_factory.mktemp("govledger-governance"),
            GOVLEDGER_UPSTREAM_BASE_URL=upstream,
            GOVLEDGER_UPSTREAM_MODELS=f"{ECHO_MODEL},{OUTAGE_MODEL}",
            GOVLEDGER_FALLBACKS=f"{OUTAGE_MODEL}=sim-small",
            GOVLEDGER_RETRY_BACKOFF_MS="10",
            GOVLEDGER_UPSTREAM_RETRIES="0",
            GOVLEDGER_BREAKER_FAILURE_THRESHOLD="3",
            GOVLEDGER_BREAKER_RESET_TIMEOUT_S="1",
            GOVLEDGER_MODEL_GROUPS="chat-ab=sim-small:50|sim-large:50",
            GOVLEDGER_TARGET_REGIONS="sim-large=eu-west",
            GOVLEDGER_TENANT_REGIONS=f"{EU_TENANT}=eu-west",
            GOVLEDGER_MAX_HEADER_BYTES="4096",
            GOVLEDGER_TEAM_RATE_LIMITS=f"{TENANT}/limited=3:0",
        )
        with running_stack(env) as running:
            running.upstream_url = upstream  # type: ignore[attr-defined]
            yield running


def push(stack: RunningStack, source: str, tenant: str = TENANT) -> httpx.Response:
    return stack.admin("POST", "/v1/admin/policies", json={"tenant": tenant, "source_yaml": source})


def pack(name: str, chain: str) -> str:
    return f"name: {name}\npolicies:\n  chain:\n" + textwrap.indent(
        textwrap.dedent(chain).strip() + "\n", "    "
    )


def client_for(stack: RunningStack, team: str, tenant: str = TENANT, **key: Any) -> openai.OpenAI:
    stack.fund(team, "5", tenant=tenant)
    secret = stack.create_key(team, tenant=tenant, **key)["key"]
    return openai.OpenAI(base_url=stack.base_url, api_key=secret, max_retries=0)


def lineage_of(stack: RunningStack, trace_id: str, columns: str) -> list[str]:
    rows: list[list[str]] = wait_for(
        lambda: stack.sql(f"SELECT {columns} FROM lineage WHERE trace_id = '{trace_id}'")
    )
    assert len(rows) == 1, rows
    return rows[0]


def spent_when_recorded(stack: RunningStack, where: str, calls: int) -> int:
    """Sum of cost_nanousd over the calls matching `where`, once all of them are in."""

    def spent() -> str | None:
        total, count = stack.sql(f"SELECT sum(cost_nanousd), count() FROM lineage WHERE {where}")[0]
        return total if count == str(calls) else None

    return int(wait_for(spent))


def traced(trace_id: str) -> dict[str, Any]:
    return {"extra_headers": {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}}


def test_packs_are_linted_versioned_with_a_diff_and_recorded(stack: RunningStack) -> None:
    source = template_source("standard-saas")
    first = push(stack, source)
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1
    assert "+name: standard-saas" in first.json()["diff"]

    again = push(stack, source)
    assert again.status_code == 200 and again.json()["version"] == 1
    assert again.json()["diff"] == ""

    changed = push(stack, source.replace("monthly_limit_usd: 5000", "monthly_limit_usd: 7500"))
    assert changed.json()["version"] == 2
    assert "-        monthly_limit_usd: 5000" in changed.json()["diff"]
    assert "+        monthly_limit_usd: 7500" in changed.json()["diff"]

    broken = push(stack, source.replace("action: redact", "action: shred"))
    assert broken.status_code == 400
    error = broken.json()["error"]
    assert error["code"] == "policy_invalid"
    assert error["lines"] == [
        {"line": 14, "message": "action must be one of redact, block, not 'shred'"}
    ]

    rows = wait_for(
        lambda: (
            rows
            if len(
                rows := stack.sql(
                    "SELECT version, published_by, source_sha256 != '' FROM control_events "
                    f"WHERE event_type = 'policy.published' AND tenant_id = '{TENANT}' "
                    "AND pack_name = 'standard-saas' ORDER BY version"
                )
            )
            == 2
            else None
        )
    )
    assert rows == [["1", "admin", "1"], ["2", "admin", "1"]]


def test_policy_lint_on_the_command_line_points_at_the_line(
    stack: RunningStack, tmp_path: Path
) -> None:
    bad = tmp_path / "pack.yaml"
    bad.write_text(pack("x", "- name: rbac\n  policy: {minimum_role: boss}"))
    good = tmp_path / "good.yaml"
    good.write_text(template_source("internal-tools"))
    result = subprocess.run(
        [sys.executable, "-m", "govledger", "policy", "lint", str(good), str(bad)],
        capture_output=True,
        text=True,
        env={**os.environ, **stack.env},
        check=False,
    )
    assert result.returncode == 1
    assert f"{good}: ok" in result.stdout
    assert f"{bad}:5: minimum_role must be one of" in result.stderr


def test_personal_data_is_redacted_before_the_provider_sees_it(stack: RunningStack) -> None:
    chain = """
    - name: pii-detector
      policy: {detect: [email, card, secret], action: redact}
    """
    assert push(stack, pack("redactor", chain)).status_code == 201
    client = client_for(stack, "support", policy_pack="redactor")
    trace_id = "a1" * 16
    answer = client.chat.completions.create(
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
    applied, triggered, decision = lineage_of(
        stack, trace_id, "policies_applied, guardrails_triggered, decision"
    )
    assert "'pii-detector'" in applied
    assert triggered == "[('pii-detector','redact')]"
    assert decision == "allowed"


OWN_TENANT = "initech"


def as_key(stack: RunningStack, secret: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method,
        f"{stack.settings.gateway_url}{path}",
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
        **kw,
    )


def test_a_tenant_admin_cannot_weaken_the_org_baseline(stack: RunningStack) -> None:
    """The finding of issue 11: a tenant admin replaced its default pack, removing PII
    redaction and setting retention_days 1. Now the floor refuses the retention, the
    org's redaction runs whatever the pack says, and the baseline and the role ceiling
    are out of a tenant admin's reach."""
    secret = stack.create_key("platform", tenant=OWN_TENANT, role="tenant-admin")["key"]
    weak = pack("default", "- name: audit-logger\n  policy: {retention_days: 1}")
    refused = as_key(stack, secret, "POST", "/v1/admin/policies", json={"source_yaml": weak})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "org_policy_violation"
    assert refused.json()["error"]["message"] == (
        "org baseline rule retention_floor: retention_days 1 is below the org floor of 30"
    )
    no_pii = pack("default", "- name: audit-logger\n  policy: {retention_days: 45}")
    accepted = as_key(stack, secret, "POST", "/v1/admin/policies", json={"source_yaml": no_pii})
    assert accepted.status_code == 201, accepted.text

    client = client_for(stack, "support", tenant=OWN_TENANT)
    trace_id = "e5" * 16
    answer = client.chat.completions.create(
        model=ECHO_MODEL,
        messages=[{"role": "user", "content": "Mail jane.doe@example.com the refund"}],
        **traced(trace_id),
    )
    seen_upstream = answer.choices[0].message.content or ""
    assert "jane.doe@example.com" not in seen_upstream and "[REDACTED:EMAIL]" in seen_upstream
    applied, triggered = lineage_of(stack, trace_id, "policies_applied, guardrails_triggered")
    assert applied.endswith("'pii-detector','audit-logger','audit-logger','budget']"), applied
    assert triggered == "[('pii-detector','redact')]"

    baseline = "name: mine\nrole_ceiling: tenant-admin\npolicies:\n  chain: []\n"
    put = as_key(
        stack, secret, "PUT", "/v1/admin/policies/baseline", json={"source_yaml": baseline}
    )
    assert put.status_code == 403
    shown = as_key(stack, secret, "GET", "/v1/admin/policies/baseline")
    assert shown.status_code == 200 and shown.json()["retention_floor_days"] == 30
    org_key = as_key(stack, secret, "POST", "/v1/tokens", json={"team": "x", "role": "org-admin"})
    assert org_key.status_code == 403
    assert "org baseline rule role_ceiling" in org_key.json()["error"]["message"]


def test_policy_lint_and_push_name_the_org_rule_a_pack_breaks(
    stack: RunningStack, tmp_path: Path
) -> None:
    weak = tmp_path / "weak.yaml"
    weak.write_text(pack("default", "- name: audit-logger\n  policy: {retention_days: 1}"))

    def govledger(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "govledger", "policy", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **stack.env},
            check=False,
        )

    rule = "org baseline rule retention_floor: retention_days 1 is below the org floor of 30"
    for lint in (govledger("lint", str(weak)), govledger("lint", "--remote", str(weak))):
        assert lint.returncode == 1
        assert f"{weak}:4: {rule}" in lint.stderr, lint.stderr
    push_result = govledger("push", str(weak), "--tenant", OWN_TENANT)
    assert push_result.returncode == 1
    assert f"403 org_policy_violation: {rule}" in push_result.stderr, push_result.stderr
    shown = govledger("baseline", "show")
    assert shown.returncode == 0 and "role_ceiling: tenant-admin" in shown.stdout


def test_blocking_steps_refuse_with_their_own_codes_and_are_recorded(
    stack: RunningStack,
) -> None:
    chain = """
    - name: rbac
      policy: {require_auth: true, minimum_role: developer}
    - name: content-filter
      policy: {deny: [wire transfer], action: block}
    """
    assert push(stack, pack("strict", chain)).status_code == 201
    developer = client_for(stack, "payments", policy_pack="strict")
    viewer = client_for(stack, "interns", policy_pack="strict", role="viewer")
    hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]

    with pytest.raises(openai.BadRequestError) as no_user:
        developer.chat.completions.create(model="sim-small", messages=hello)
    assert no_user.value.code == "user_required"
    with pytest.raises(openai.PermissionDeniedError) as low_role:
        viewer.chat.completions.create(model="sim-small", messages=hello, user="intern-1")
    assert low_role.value.code == "role_insufficient"

    trace_id = "b2" * 16
    with pytest.raises(openai.BadRequestError) as blocked:
        developer.chat.completions.create(
            model="sim-small",
            messages=[{"role": "user", "content": "Start a Wire Transfer of $1M"}],
            user="ops-7",
            **traced(trace_id),
        )
    assert blocked.value.code == "content_blocked"
    status, code, decision, triggered, cost = lineage_of(
        stack,
        trace_id,
        "http_status, error_code, decision, guardrails_triggered, cost_nanousd",
    )
    assert (status, code, decision, cost) == ("400", "content_blocked", "rejected", "0")
    assert triggered == "[('content-filter','block')]"

    ok = developer.chat.completions.create(model="sim-small", messages=hello, user="ops-7")
    assert ok.choices[0].message.content


def test_human_oversight_refuses_or_holds_with_a_reference(stack: RunningStack) -> None:
    refuse = """
    - name: content-filter
      policy: {deny: [diagnosis], action: flag}
    - name: human-oversight
      policy: {triggers: [content-filter], mode: refuse, priority: P2, category: clinical}
    """
    hold = refuse.replace("mode: refuse", "mode: hold, hold_timeout_s: 20")
    assert push(stack, pack("review-refuse", refuse)).status_code == 201
    assert push(stack, pack("review-hold", hold)).status_code == 201
    flagged: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Give me a diagnosis for these symptoms"}
    ]

    refusing = client_for(stack, "clinic", policy_pack="review-refuse")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        refusing.chat.completions.create(model="sim-small", messages=flagged)
    assert refused.value.code == "review_required"
    reference = refused.value.response.headers["X-Govledger-Escalation"]
    assert reference in str(refused.value.message)
    row = wait_for(
        lambda: stack.sql(
            "SELECT priority, category, mode, reason FROM escalation_events "
            f"WHERE escalation_id = '{reference}'"
        )
    )
    assert row == [["P2", "clinical", "refuse", "content-filter"]]

    holding = client_for(stack, "ward", policy_pack="review-hold")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        approved = pool.submit(holding.chat.completions.create, model="sim-small", messages=flagged)
        rejected = pool.submit(holding.chat.completions.create, model="sim-small", messages=flagged)
        held = wait_for(
            lambda: (
                [
                    r[0]
                    for r in stack.sql(
                        "SELECT escalation_id FROM escalation_events WHERE mode = 'hold' "
                        "ORDER BY occurred_at"
                    )
                ]
                if len(stack.sql("SELECT 1 FROM escalation_events WHERE mode = 'hold'")) == 2
                else None
            )
        )
        assert not approved.done() and not rejected.done()  # both wait for a human
        decisions = {}
        for escalation_id, decision in zip(held, ["approve", "reject"], strict=True):
            response = stack.admin(
                "POST",
                f"/v1/admin/escalations/{escalation_id}/resolve",
                json={"decision": decision, "note": "checked"},
            )
            assert response.status_code == 200, response.text
            decisions[escalation_id] = decision
        again = stack.admin(
            "POST", f"/v1/admin/escalations/{held[0]}/resolve", json={"decision": "reject"}
        )
        assert again.status_code == 409
        outcomes = []
        for future in (approved, rejected):
            try:
                outcomes.append(("ok", future.result(timeout=30).choices[0].message.content))
            except openai.PermissionDeniedError as exc:
                outcomes.append(("refused", exc.code))
    assert sorted(o[0] for o in outcomes) == ["ok", "refused"]
    assert ("refused", "review_rejected") in outcomes


def test_cost_limit_stops_a_team_at_its_monthly_limit(stack: RunningStack) -> None:
    # sim-small: 150 nano-USD per prompt token, 600 per completion token; a call here
    # costs about $0.000016, so a $0.0001 limit lets a handful through.
    assert (
        push(
            stack, pack("tight", "- name: cost-limit\n  policy: {monthly_limit_usd: '0.0001'}")
        ).status_code
        == 201
    )
    client = client_for(stack, "growth", policy_pack="tight")
    outcomes = []
    for _ in range(15):
        try:
            client.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": "hi"}], max_tokens=24
            )
            outcomes.append("ok")
        except openai.APIStatusError as exc:
            outcomes.append(f"{exc.status_code} {exc.code}")
    assert outcomes[0] == "ok"
    assert outcomes[-1] == "402 cost_limit_exceeded"
    assert set(outcomes) == {"ok", "402 cost_limit_exceeded"}
    spent = spent_when_recorded(
        stack, f"team_id = 'growth' AND tenant_id = '{TENANT}'", len(outcomes)
    )
    assert 0 < spent <= 100_000  # the limit holds: no call pushed the month past it


def test_admin_roles_keep_each_tenant_to_itself(stack: RunningStack) -> None:
    root = stack.admin(
        "POST", "/v1/tokens", json={"tenant": TENANT, "team": "platform", "role": "tenant-admin"}
    )
    assert root.status_code == 201, root.text
    tenant_admin = {"Authorization": f"Bearer {root.json()['key']}"}
    other = stack.create_key("intruders", tenant="globex")

    def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{stack.settings.gateway_url}{path}",
            headers=tenant_admin,
            timeout=30,
            **kwargs,
        )

    own = call("POST", "/v1/tokens", json={"team": "search"})
    assert own.status_code == 201 and own.json()["tenant"] == TENANT
    assert call("POST", "/v1/tokens", json={"team": "x", "tenant": "globex"}).status_code == 403
    assert call("POST", "/v1/tokens", json={"team": "x", "role": "org-admin"}).status_code == 403
    listed = call("GET", "/v1/tokens").json()["data"]
    assert listed and {k["tenant"] for k in listed} == {TENANT}
    assert call("DELETE", f"/v1/tokens/{other['key_id']}").status_code == 404
    fund = call("POST", "/v1/admin/wallets/fund", json={"team": "search", "usd": "100"})
    assert fund.status_code == 403
    assert fund.json()["error"]["code"] == "forbidden"
    assert call("DELETE", f"/v1/tokens/{own.json()['key_id']}").status_code == 200

    developer = {"Authorization": f"Bearer {stack.create_key('devs', tenant=TENANT)['key']}"}
    refused = httpx.get(f"{stack.settings.gateway_url}/v1/tokens", headers=developer, timeout=30)
    assert refused.status_code == 403


def test_a_team_limit_holds_across_the_team_s_keys(stack: RunningStack) -> None:
    first = client_for(stack, "limited")
    second = openai.OpenAI(
        base_url=stack.base_url,
        api_key=stack.create_key("limited", tenant=TENANT)["key"],
        max_retries=0,
    )
    hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    for sdk in (first, second, first):
        sdk.chat.completions.create(model="sim-small", messages=hi)
    with pytest.raises(openai.RateLimitError) as limited:
        second.chat.completions.create(model="sim-small", messages=hi)
    assert limited.value.code == "rate_limited"
    assert "team limited" in limited.value.message
    assert int(limited.value.response.headers["Retry-After"]) >= 1


def test_weighted_group_splits_traffic_and_records_the_pick(stack: RunningStack) -> None:
    client = client_for(stack, "experiments")
    picked = {
        client.chat.completions.create(
            model="chat-ab", messages=[{"role": "user", "content": "hi"}]
        ).model
        for _ in range(30)
    }
    assert picked == {"chat-ab"}  # the caller sees the group name it asked for
    rows = wait_for(
        lambda: (
            rows
            if len(
                rows := stack.sql(
                    "SELECT model_selected, selection_reason, count() FROM lineage "
                    "WHERE model_requested = 'chat-ab' GROUP BY 1, 2 ORDER BY 1"
                )
            )
            == 2
            and sum(int(r[2]) for r in rows) == 30
            else None
        )
    )
    assert [r[:2] for r in rows] == [["sim-large", "weighted"], ["sim-small", "weighted"]]


def test_data_residency_keeps_a_tenant_in_its_regions(stack: RunningStack) -> None:
    client = client_for(stack, "berlin", tenant=EU_TENANT)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.code == "region_not_allowed"
    served = client.chat.completions.create(
        model="sim-large", messages=[{"role": "user", "content": "hi"}]
    )
    assert served.choices[0].message.content


def test_a_failing_target_trips_its_breaker_traffic_fails_over_and_it_closes(
    stack: RunningStack,
) -> None:
    client = client_for(stack, "oncall")
    hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    assert httpx.post(f"{stack.upstream_url}/outage/on").status_code == 200  # type: ignore[attr-defined]
    traces = [f"{i:032x}" for i in range(0xC0, 0xC5)]
    for trace_id in traces:
        client.chat.completions.create(model=OUTAGE_MODEL, messages=hi, **traced(trace_id))
    assert httpx.post(f"{stack.upstream_url}/outage/off").status_code == 200  # type: ignore[attr-defined]

    trail = [
        lineage_of(stack, t, "selection_reason, model_selected, toString(attempts.status)")
        for t in traces
    ]
    # Three failures open the breaker; later calls skip the primary without calling it.
    assert trail[:3] == [["fallback", "sim-small", "[503,200]"]] * 3
    assert trail[3:] == [["breaker_open", "sim-small", "[0,200]"]] * 2

    probes = iter(f"{i:032x}" for i in range(0xD0, 0xE0))

    def recovered() -> bool:
        probe = next(probes)
        client.chat.completions.create(model=OUTAGE_MODEL, messages=hi, **traced(probe))
        return lineage_of(stack, probe, "selection_reason")[0] == "catalogue"

    # After the reset timeout a probe goes to the primary, succeeds, and closes it.
    wait_for(recovered, timeout_s=10, every_s=1.2)


def test_oversized_headers_get_a_json_431(stack: RunningStack) -> None:
    response = httpx.post(
        f"{stack.base_url}/chat/completions",
        headers={"X-Padding": "p" * 5_000, "Authorization": "Bearer nope"},
        json={"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "request_headers_too_large"


@contextlib.contextmanager
def extra_gateways(stack: RunningStack, count: int) -> Iterator[list[str]]:
    """More gateway processes on the same broker (as a fleet runs); their base URLs."""
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for _ in range(count):
            port = free_port()
            env = {
                **stack.env,
                "GOVLEDGER_KAFKA_BOOTSTRAP": f"127.0.0.1:{stack.settings.broker_port}",
                "GOVLEDGER_GATEWAY_PORT": str(port),
            }
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "govledger", "gateway"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_for(functools.partial(_healthy, url), timeout_s=60, every_s=0.2)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_several_gateways_overspend_at_most_what_the_others_admit_before_they_hear(
    stack: RunningStack,
) -> None:
    """Each gateway refuses past the balance it has heard of, minus its own commitments;
    it cannot know what the others admitted in the last moments. The bound stated in
    docs/failures.md: overspend <= (gateways - 1) x the balance at the start of a burst, reached
    only when the whole burst lands before any settlement is heard. Measured here at its
    worst: every call of the burst in flight at once."""
    gateways = 3
    calls_per_gateway = 8
    price = 5 * 150 + 24 * 600  # sim-small, 'hi' (5 tokens), 24 completion tokens
    stack.fund("fleet", f"{4 * price / 1e9:.9f}", tenant=TENANT)  # room for four calls
    key = stack.create_key("fleet", tenant=TENANT)["key"]
    hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    with extra_gateways(stack, gateways - 1) as others:
        urls = [stack.settings.gateway_url, *others]
        clients = [openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) for url in urls]
        # Every gateway has heard of the funding before the burst.
        for url in urls:
            wait_for(functools.partial(_heard_balance, url, stack.token, 4 * price))

        def call(index: int) -> int:
            try:
                clients[index % gateways].chat.completions.create(
                    model="sim-small", messages=hi, max_tokens=24
                )
            except openai.APIStatusError as exc:
                return exc.status_code
            return 200

        with concurrent.futures.ThreadPoolExecutor(gateways * calls_per_gateway) as pool:
            statuses = list(pool.map(call, range(gateways * calls_per_gateway)))

    allowed = statuses.count(200)
    assert statuses.count(402) == len(statuses) - allowed
    spent = spent_when_recorded(stack, f"wallet_id = '{TENANT}/fleet'", len(statuses))
    funded = 4 * price
    overspend = max(0, spent - funded)
    print(
        f"\n{gateways} gateways, burst of {len(statuses)}: {allowed} admitted, "
        f"overspend {overspend} nano-USD = {overspend / price:.0f} calls"
    )
    assert spent == allowed * price
    assert allowed >= 4  # no gateway refuses what the wallet can pay
    assert overspend <= (gateways - 1) * funded


def _heard_balance(url: str, token: str, nanousd: int) -> bool:
    response = httpx.get(
        f"{url}/v1/admin/wallets/balance",
        params={"tenant": TENANT, "team": "fleet"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    return response.status_code == 200 and response.json()["balance_nanousd"] == nanousd
