"""Policy packs applied from CI (`PUT /v1/configurations/{name}`), their versions and
reverts, against the in-process gateway: idempotent applies, If-Match preconditions, and
the gateway enforcing each version as it lands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from schemas.records import PolicyPackPublished
from tests.component.support import ECHO_MODEL, Component, running_component
from tests.component.test_policy_cli import govledger
from tests.component.test_seed_packs import AUDIT_ONLY_BASELINE

TENANT = "gitops"
OTHER = "elsewhere"
NAME = "support-bot"
BLOCKING = f"""name: {NAME}
policies:
  chain:
    - name: content-filter
      policy: {{deny: [diagnosis], action: block}}
"""
PERMISSIVE = f"""name: {NAME}
policies:
  chain:
    - name: content-filter
      policy: {{deny: [forbidden-word], action: block}}
"""
ASKED: list[ChatCompletionMessageParam] = [{"role": "user", "content": "a diagnosis please"}]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Component]:
    async with running_component(tmp_path) as running:
        yield running


async def put(stack: Component, source: str, if_match: str | None = None, **query: str) -> Any:
    headers = {"Content-Type": "application/yaml"}
    if if_match is not None:
        headers["If-Match"] = if_match
    return await stack.admin(
        "PUT",
        f"/v1/configurations/{NAME}",
        data=source.encode(),
        headers=headers,
        params={"tenant": TENANT, **query},
    )


async def allowed(sdk: openai.AsyncOpenAI) -> bool:
    """Whether the pack in force lets the call through (else it names content_blocked)."""
    try:
        await sdk.chat.completions.create(model="sim-small", messages=ASKED)
    except openai.BadRequestError as exc:
        return str(exc.code) != "content_blocked"
    return True


async def test_ci_applies_packs_idempotently_and_reverts(stack: Component) -> None:
    first = await put(stack, BLOCKING, if_match='"0"')  # must not exist yet
    assert first.status == 201, await first.text()
    assert first.headers["ETag"] == '"1"'
    sdk = await stack.sdk_for("support", tenant=TENANT, policy_pack=NAME)
    assert not await allowed(sdk)

    again = await put(stack, BLOCKING)
    assert again.status == 200 and (await again.json())["version"] == 1
    assert (await again.json())["diff"] == ""

    changed = await put(stack, PERMISSIVE, if_match='"1"')
    body = await changed.json()
    assert changed.status == 201 and body["version"] == 2
    assert "-      policy: {deny: [diagnosis], action: block}" in body["diff"]
    assert await allowed(sdk)

    stale = await put(stack, BLOCKING, if_match='"1"')  # another pipeline saw v1
    assert stale.status == 412
    assert (await stale.json())["error"]["code"] == "precondition_failed"
    assert await allowed(sdk)  # nothing published

    shown = await stack.admin("GET", f"/v1/configurations/{NAME}", params={"tenant": TENANT})
    assert shown.headers["ETag"] == '"2"'
    assert (await shown.json())["source_yaml"] == PERMISSIVE

    reverted = await stack.admin(
        "POST", f"/v1/admin/policies/{NAME}/revert", json={"tenant": TENANT, "to_version": 1}
    )
    body = await reverted.json()
    assert reverted.status == 201, body
    assert (body["version"], body["reverted_to"]) == (3, 1)
    assert "+      policy: {deny: [diagnosis], action: block}" in body["diff"]
    assert not await allowed(sdk)

    versions = await stack.admin(
        "GET", f"/v1/admin/policies/{NAME}/versions", params={"tenant": TENANT}
    )
    assert [v["version"] for v in (await versions.json())["data"]] == [3, 2, 1]
    published = [
        (r.version, r.source_yaml)
        for r in stack.control.of_type(PolicyPackPublished)
        if r.tenant_id == TENANT
    ]
    assert published == [(1, BLOCKING), (2, PERMISSIVE), (3, BLOCKING)]


async def test_bad_applies_are_refused_and_publish_nothing(stack: Component) -> None:
    renamed = BLOCKING.replace(f"name: {NAME}", "name: another")
    cases = [
        (await put(stack, renamed), 400, "invalid_request"),
        (await put(stack, BLOCKING, if_match="latest"), 400, "invalid_request"),
        (await put(stack, "policies: [", if_match='"0"'), 400, "policy_invalid"),
        (await put(stack, BLOCKING, if_match='"4"'), 412, "precondition_failed"),
        (
            await stack.admin(
                "PUT",
                f"/v1/configurations/{NAME}",
                data=b"<xml/>",
                headers={"Content-Type": "application/xml"},
            ),
            415,
            "unsupported_media_type",
        ),
        (
            await stack.admin(
                "POST",
                f"/v1/admin/policies/{NAME}/revert",
                json={"tenant": TENANT, "to_version": 9},
            ),
            404,
            "not_found",
        ),
        (await stack.admin("GET", "/v1/configurations/NOT..valid!"), 400, "invalid_request"),
    ]
    for response, status, code in cases:
        assert (response.status, (await response.json())["error"]["code"]) == (status, code)
    assert stack.control.of_type(PolicyPackPublished) == []


async def test_a_tenant_admin_applies_only_in_its_tenant(stack: Component) -> None:
    admin = (await stack.create_key("ops", tenant=TENANT, role="tenant-admin"))["key"]
    own = await stack.as_key(
        admin,
        "PUT",
        f"/v1/configurations/{NAME}",
        data=BLOCKING.encode(),
        headers={"Content-Type": "application/yaml"},
    )
    assert own.status == 201, await own.text()
    assert (await own.json())["tenant"] == TENANT
    for method, path, extra in [
        ("PUT", f"/v1/configurations/{NAME}", {"data": BLOCKING.encode()}),
        ("GET", f"/v1/configurations/{NAME}", {}),
        ("GET", f"/v1/admin/policies/{NAME}/versions", {}),
    ]:
        response = await stack.as_key(
            admin,
            method,
            path,
            params={"tenant": OTHER},
            headers={"Content-Type": "application/yaml"},
            **extra,
        )
        assert response.status == 403, (method, path)
    revert = await stack.as_key(
        admin, "POST", f"/v1/admin/policies/{NAME}/revert", json={"tenant": OTHER, "to_version": 1}
    )
    assert revert.status == 403


async def test_config_and_revert_from_the_command_line(stack: Component, tmp_path: Path) -> None:
    pack_file = tmp_path / f"{NAME}.yaml"
    pack_file.write_text(BLOCKING)
    tenant = ("--tenant", TENANT)
    first = await govledger(stack, "config", "push", "--file", str(pack_file), *tenant)
    assert first.returncode == 0, first.stderr
    assert f"published {NAME} v1 in {TENANT}" in first.stdout
    again = await govledger(stack, "config", "push", "--file", str(pack_file), *tenant)
    assert f"{NAME} v1 in {TENANT} is unchanged" in again.stdout
    pack_file.write_text(PERMISSIVE)
    stale = await govledger(
        stack, "config", "push", "--file", str(pack_file), "--if-match", "0", *tenant
    )
    assert stale.returncode == 1 and "412 precondition_failed" in stale.stderr
    changed = await govledger(stack, "config", "push", "--file", str(pack_file), *tenant)
    assert f"published {NAME} v2" in changed.stdout and "+      policy:" in changed.stdout
    reverted = await govledger(stack, "policy", "revert", NAME, "--to", "1", *tenant)
    assert reverted.returncode == 0, reverted.stderr
    assert f"published {NAME} v3" in reverted.stdout
    history = await govledger(stack, "config", "history", NAME, *tenant)
    assert [line.split("\t")[0] for line in history.stdout.splitlines()] == [
        "version",
        "3",
        "2",
        "1",
    ]
    shown = await govledger(stack, "config", "show", NAME, *tenant)
    assert shown.stdout == BLOCKING

    template = await govledger(
        stack, "config", "apply", "--template", "standard-saas", "--name", "team-alpha", *tenant
    )
    assert template.returncode == 0, template.stderr
    assert "published team-alpha v1" in template.stdout
    tokens = await govledger(stack, "tokens", "list")  # the seed's name for `keys`
    assert tokens.returncode == 0, tokens.stderr


async def test_packs_pushed_for_a_team_and_a_gateway_run_only_there(tmp_path: Path) -> None:
    """`config push --team --gateway`: the pack's steps run for that team's calls through
    the gateway of that name (GOVLEDGER_GATEWAY_NAME), and nowhere else."""
    mail = "Please mail jane.doe@example.com the refund"
    redacting = f"""name: {NAME}
policies:
  chain:
    - name: pii-detector
      policy: {{detect: [email], action: redact}}
"""
    async with running_component(tmp_path, gateway_name="prod-gw-01") as named:
        baseline = await named.admin(  # no org-wide redaction: what redacts is the pack
            "PUT", "/v1/admin/policies/baseline", json={"source_yaml": AUDIT_ONLY_BASELINE}
        )
        assert baseline.status == 201, await baseline.text()
        pack_file = tmp_path / f"{NAME}.yaml"
        pack_file.write_text(redacting)
        for gateway, version in (("staging-gw", 1), ("prod-gw-01", 2)):
            pushed = await govledger(
                named, "config", "push", "--file", str(pack_file), "--tenant", TENANT,
                "--team", "support", "--gateway", gateway,
            )  # fmt: skip
            assert f"published {NAME} v{version}" in pushed.stdout, pushed.stderr
            assert f'+  gateways: ["{gateway}"]' in pushed.stdout
            sdks = [
                await named.sdk_for(team, tenant=TENANT, policy_pack=NAME)
                for team in ("support", "finance")
            ]
            for sdk in sdks:
                await sdk.chat.completions.create(
                    model=ECHO_MODEL, messages=[{"role": "user", "content": mail}]
                )
        seen = [str(r["messages"]) for r in named.upstream.received]
        # On staging-gw's pack neither team is redacted here; on ours only support is.
        assert ["jane.doe@example.com" in s for s in seen] == [True, True, False, True]
