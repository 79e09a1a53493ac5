"""A team coming from the seed (Keeptrusts) brings its pack as written: `govledger policy
lint` passes it, `govledger policy push` publishes it under its file's name, and through
the gateway a call of the team it targets has its e-mail redacted before the provider
sees it, a call of another team does not, and the seed's `minimum_role: member` refuses
a viewer key. The command runs as a child process against the in-process gateway."""

from __future__ import annotations

import shutil
from pathlib import Path

import openai
import pytest

from schemas.records import PolicyPackPublished
from tests.component.support import ECHO_MODEL, Component
from tests.component.test_governance import traced, triggered_of
from tests.component.test_policy_cli import govledger

SEED_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "keeptrusts-enterprise.yaml"
TENANT = "acme"
PACK = "keeptrusts-enterprise"
# The org baseline of this test: no org-wide redaction, so what redacts is the pack.
AUDIT_ONLY_BASELINE = (
    "name: audit-only\nrole_ceiling: tenant-admin\npolicies:\n  chain:\n"
    "    - name: audit-logger\n      policy: {retention_days: 30}\n"
)
MAIL = "Please mail jane.doe@example.com the refund"


async def test_the_seed_s_pack_lints_pushes_and_redacts_for_the_team_it_targets(
    component: Component, tmp_path: Path
) -> None:
    baseline = await component.admin(
        "PUT", "/v1/admin/policies/baseline", json={"source_yaml": AUDIT_ONLY_BASELINE}
    )
    assert baseline.status == 201, await baseline.text()
    pack_file = tmp_path / f"{PACK}.yaml"
    shutil.copyfile(SEED_FILE, pack_file)

    linted = await govledger(component, "policy", "lint", "--remote", str(pack_file))
    assert (linted.returncode, linted.stdout) == (0, f"{pack_file}: ok\n"), linted.stderr
    pushed = await govledger(component, "policy", "push", str(pack_file), "--tenant", TENANT)
    assert pushed.returncode == 0, pushed.stderr
    assert f"published {PACK} v1 in {TENANT}" in pushed.stdout
    [record] = component.control.of_type(PolicyPackPublished)
    assert (record.pack_name, record.source_yaml) == (PACK, SEED_FILE.read_text())

    support = await component.sdk_for("support", tenant=TENANT, policy_pack=PACK)
    finance = await component.sdk_for("finance", tenant=TENANT, policy_pack=PACK)
    for client, trace_id in ((support, "c1" * 16), (finance, "c2" * 16)):
        await client.chat.completions.create(
            model=ECHO_MODEL,
            messages=[{"role": "user", "content": MAIL}],
            user="agent-7",
            **traced(trace_id),
        )
    support_seen, finance_seen = (str(r["messages"]) for r in component.upstream.received)
    assert "jane.doe@example.com" not in support_seen and "[REDACTED:EMAIL]" in support_seen
    assert "jane.doe@example.com" in finance_seen
    assert triggered_of(component, "c1" * 16) == [("pii-detector", "redact")]
    assert triggered_of(component, "c2" * 16) == []

    viewer = await component.sdk_for("support", tenant=TENANT, policy_pack=PACK, role="viewer")
    with pytest.raises(openai.PermissionDeniedError) as low_role:
        await viewer.chat.completions.create(
            model=ECHO_MODEL, messages=[{"role": "user", "content": "hi"}], user="agent-8"
        )
    assert low_role.value.code == "role_insufficient"
    assert "below the required 'developer'" in str(low_role.value.message)


@pytest.mark.parametrize("name", ["../etc", "Bad Name", "", "x" * 65, 7])
async def test_the_admin_api_refuses_a_hostile_name_for_a_nameless_pack(
    component: Component, name: object
) -> None:
    refused = await component.admin(
        "POST",
        "/v1/admin/policies",
        json={"tenant": TENANT, "source_yaml": SEED_FILE.read_text(), "name": name},
    )
    assert refused.status == 400
    assert (await refused.json())["error"]["code"] == "invalid_request"
    assert component.control.of_type(PolicyPackPublished) == []


async def test_a_nameless_pack_pushed_without_a_name_is_a_lint_error(
    component: Component,
) -> None:
    refused = await component.admin(
        "POST", "/v1/admin/policies", json={"tenant": TENANT, "source_yaml": SEED_FILE.read_text()}
    )
    assert refused.status == 400
    error = (await refused.json())["error"]
    assert error["code"] == "policy_invalid"
    assert error["lines"] == [
        {
            "line": 4,
            "message": "the pack needs a name (name:, pack.name, or a file name that gives one)",
        }
    ]
