"""`govledger policy` against the in-process gateway: lint points at the line and names
the org rule a pack breaks, locally and remotely; push answers the gateway's refusal.
The command runs as a child process (as a user runs it) against the TestServer's port.

Moved from tests/integration/test_governance.py (same assertions)."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from gateway.policy.pack import template_source
from schemas.settings import ENV_PREFIX
from tests.component.support import ADMIN_TOKEN, Component

OWN_TENANT = "initech"


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


def pack(name: str, chain: str) -> str:
    return f"name: {name}\npolicies:\n  chain:\n" + textwrap.indent(
        textwrap.dedent(chain).strip() + "\n", "    "
    )


async def govledger(component: Component, *args: str) -> Done:
    """`python -m govledger ...` pointed at the in-process gateway; awaited without
    blocking the loop that serves it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(
        GOVLEDGER_DATA_DIR=component.settings.data_dir,
        GOVLEDGER_GATEWAY_PORT=str(component.client.port),
        GOVLEDGER_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "govledger",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Done(process.returncode, stdout.decode(), stderr.decode())


async def test_policy_lint_on_the_command_line_points_at_the_line(
    component: Component, tmp_path: Path
) -> None:
    bad = tmp_path / "pack.yaml"
    bad.write_text(pack("x", "- name: rbac\n  policy: {minimum_role: boss}"))
    good = tmp_path / "good.yaml"
    good.write_text(template_source("internal-tools"))
    result = await govledger(component, "policy", "lint", str(good), str(bad))
    assert result.returncode == 1
    assert f"{good}: ok" in result.stdout
    assert f"{bad}:5: minimum_role must be one of" in result.stderr


async def test_policy_lint_and_push_name_the_org_rule_a_pack_breaks(
    component: Component, tmp_path: Path
) -> None:
    weak = tmp_path / "weak.yaml"
    weak.write_text(pack("default", "- name: audit-logger\n  policy: {retention_days: 1}"))

    rule = "org baseline rule retention_floor: retention_days 1 is below the org floor of 30"
    for lint in (
        await govledger(component, "policy", "lint", str(weak)),
        await govledger(component, "policy", "lint", "--remote", str(weak)),
    ):
        assert lint.returncode == 1
        assert f"{weak}:4: {rule}" in lint.stderr, lint.stderr
    push_result = await govledger(component, "policy", "push", str(weak), "--tenant", OWN_TENANT)
    assert push_result.returncode == 1
    assert f"403 org_policy_violation: {rule}" in push_result.stderr, push_result.stderr
    shown = await govledger(component, "policy", "baseline", "show")
    assert shown.returncode == 0 and "role_ceiling: tenant-admin" in shown.stdout
