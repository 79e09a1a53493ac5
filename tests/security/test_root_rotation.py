"""Rotating the org root on a real stack: `govledger root rotate`, then a restart. The
admin log restored from the store still carries the old root's headers and still counts
(a key issued before the rotation keeps working); producers sign under the new root from
their start; `govledger audit verify` accepts records and checkpoints of both roots; and
`govledger audit pubkey` lists both org public keys, the newest signing; with those alone
an outside auditor checks every checkpoint's signature."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.integration.stack import govledger, running_stack, stack_environ, wait_for

# Boots real stacks: run with the other integration modules (tests/conftest.py).
pytestmark = pytest.mark.integration


def call(base_url: str, secret: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key=secret, max_retries=0)
    client.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "hi"}])


def test_a_rotated_root_signs_new_records_and_old_ones_still_verify(tmp_path: Path) -> None:
    env = stack_environ(
        tmp_path / "data",
        GOVLEDGER_CHECKPOINT_INTERVAL_S="1",
        GOVLEDGER_WORKER_CHECKPOINT_INTERVAL_S="1",
    )
    with running_stack(env) as stack:
        key = stack.create_key("alpha")
        stack.fund("alpha", "10")
        call(stack.base_url, key["key"])
        wait_for(lambda: stack.sql("SELECT count() FROM lineage") == [["1"]], 30)
    listed = govledger(env, "root", "list").stdout.splitlines()
    (old_root,) = [line.split("\t")[0] for line in listed]
    rotated = govledger(env, "root", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new_root = rotated.stdout.split()[0]
    assert new_root != old_root

    with running_stack(env) as stack:
        # The key was issued under the old root; the restored admin log still counts.
        call(stack.base_url, key["key"])
        wait_for(lambda: stack.sql("SELECT count() FROM lineage") == [["2"]], 30)
        roots = stack.sql(
            "SELECT splitByChar('.', auth)[2] AS root, count() FROM lineage GROUP BY root "
            "ORDER BY root"
        )
        assert sorted(r[0] for r in roots) == sorted([old_root, new_root]), roots

        def signers() -> list[str] | None:
            found = stack.sql("SELECT DISTINCT signer_root_id FROM chain_checkpoints")
            roots = sorted(row[0] for row in found)
            return roots if roots == sorted([old_root, new_root]) else None

        wait_for(signers, 30)  # checkpoints of this run, signed under the new root
        verified = govledger(env, "audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert " 0 findings" in verified.stdout
        # An outside auditor, given only the org public keys, checks every checkpoint's
        # signature; another org's keys certify none of them.
        org_keys = tmp_path / "org.keys"
        org_keys.write_text(govledger(env, "audit", "pubkey").stdout)
        outside = govledger(env, "audit", "verify", "--org-keys", str(org_keys))
        assert outside.returncode == 0 and " 0 findings" in outside.stdout, outside.stdout
        foreign = tmp_path / "foreign.keys"
        foreign.write_text(f"{old_root}\ted25519:{'11' * 32}\tsigning\n")
        impostor = govledger(env, "audit", "verify", "--org-keys", str(foreign))
        assert impostor.returncode == 1, impostor.stdout + impostor.stderr
        problems = {line.split(": ", 1)[1] for line in impostor.stdout.splitlines()[:-1]}
        assert problems == {
            "checkpoint's producer key is not certified by the org",
            f"checkpoint signed under unknown root {new_root!r}",
        }, impostor.stdout
    pubkeys = govledger(env, "audit", "pubkey").stdout.splitlines()
    assert [line.split("\t")[0] for line in pubkeys] == [old_root, new_root]
    assert [line.split("\t")[2] for line in pubkeys] == ["verify-only", "signing"]
    assert all(line.split("\t")[1].startswith("ed25519:") for line in pubkeys)
