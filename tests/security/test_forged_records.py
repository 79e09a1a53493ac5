"""Forged records produced straight to the broker change nothing (issue 11, "Forged
records"): anyone who reaches the broker sends a KeyIssued with role org-admin, a
WalletFunded of 1,000 USD, a lineage record charging another tenant 5 USD, and a record
under a running gateway's producer id without its key. None changes a key, a balance or
an audit figure, before or after a restart; each lands in the dead-letter table with its
reason; `govledger audit verify` exits 1 naming each as forged; `govledger audit
reconcile` leaves them out and says so. The legitimate traffic around them keeps
working."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from pathlib import Path

import httpx
import openai
import pytest
from aiokafka import AIOKafkaProducer

from schemas import authn, codec
from schemas.ids import uuid7
from schemas.topics import CONTROL, LINEAGE
from streams.wallets.logic import team_wallet_id
from tests.integration.stack import RunningStack, govledger, running_stack, stack_environ, wait_for
from tests.unit import builders

# Boots real stacks: run with the other integration modules (tests/conftest.py).
pytestmark = pytest.mark.integration

FORGED_SECRET = "gk_forged_" + "a" * 32
USD = 1_000_000_000


def forged_header(root_id: str, role: str, value: bytes) -> list[tuple[str, bytes]]:
    """A well-formed header made without the org root: a MAC under a key of our own."""
    mac = hmac.digest(os.urandom(32), value, "sha256").hex()
    return [(authn.HEADER, f"v1.{root_id}.{role}.{mac}".encode())]


def produce(bootstrap: str, records: list[tuple[str, bytes, list[tuple[str, bytes]]]]) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for topic, value, headers in records:
                await producer.send_and_wait(topic, value, key=b"default", headers=headers)
        finally:
            await producer.stop()

    asyncio.run(send())


def refused(stack: RunningStack) -> dict[bytes, dict[str, str]]:
    """Reason per consumer, per refused payload."""
    rows = stack.sql(
        "SELECT hex(payload), consumer, error FROM dead_letters "
        "WHERE startsWith(error, 'forged:') OR startsWith(error, 'unauthenticated:')"
    )
    found: dict[bytes, dict[str, str]] = {}
    for payload, consumer, error in rows:
        found.setdefault(bytes.fromhex(payload), {})[consumer] = error
    return found


def test_forged_records_change_nothing_and_are_named(tmp_path: Path) -> None:
    env = stack_environ(tmp_path / "data")
    with running_stack(env) as stack:
        keyring = authn.installed()
        assert keyring is not None
        key = stack.create_key("alpha")
        stack.fund("alpha", "10")
        stack.create_key("beta", tenant="victim")
        stack.fund("beta", "10", tenant="victim")
        client = openai.OpenAI(base_url=stack.base_url, api_key=key["key"], max_retries=0)
        client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "hi"}]
        )
        wait_for(lambda: stack.sql("SELECT count() FROM lineage") == [["1"]], 30)
        wait_for(lambda: stack.balance_nanousd("alpha") < 10 * USD, 30)
        clean = govledger(env, "audit", "verify")
        assert clean.returncode == 0 and " 0 findings" in clean.stdout, clean.stdout
        (gateway_id,) = stack.sql("SELECT any(producer_id) FROM lineage")[0]
        alpha_before = stack.balance_nanousd("alpha")
        victim_before = stack.balance_nanousd("beta", tenant="victim")

        key_issued = codec.encode(
            builders.key_issued(
                tenant_id="default", producer_id="admin-forger", event_id=uuid7(),
                key_id="key_forged", key_prefix=FORGED_SECRET[:10], role="org-admin",
                key_sha256=hashlib.sha256(FORGED_SECRET.encode()).hexdigest(),
                team_id="alpha", wallet_id=team_wallet_id("default", "alpha"), expires_at=None,
            )
        )  # fmt: skip
        funded = codec.encode(
            builders.funding(
                tenant_id="default", producer_id="admin-forger2", event_id=uuid7(),
                team_id="alpha", wallet_id=team_wallet_id("default", "alpha"),
                amount_nanousd=1_000 * USD,
            )
        )  # fmt: skip
        charge = codec.encode(
            builders.call(
                tenant_id="victim", producer_id="gateway-forger", event_id=uuid7(),
                team_id="beta", wallet_id=team_wallet_id("victim", "beta"), key_id="key_x",
                cost_nanousd=5 * USD,
            )
        )  # fmt: skip
        impostor = codec.encode(
            builders.call(
                tenant_id="default", producer_id=gateway_id, seq=1_000, event_id=uuid7(),
                team_id="alpha", wallet_id=team_wallet_id("default", "alpha"),
                key_id=key["key_id"], cost_nanousd=1 * USD,
            )
        )  # fmt: skip
        expected = {
            key_issued: "unauthenticated: no auth header",
            funded: "forged: role gateway may not write control",
            charge: "forged: unknown root",
            impostor: "forged: bad mac",
        }
        produce(
            stack.stack.bootstrap,
            [
                (CONTROL.name, key_issued, []),
                (CONTROL.name, funded, forged_header(keyring.signing_id, "gateway", funded)),
                (LINEAGE.name, charge, forged_header("00112233aabbccdd", "gateway", charge)),
                (LINEAGE.name, impostor, forged_header(keyring.signing_id, "gateway", impostor)),
            ],
        )

        # Each lands in the dead-letter table with its reason, from the sink and from the
        # worker's intake (other agents reading the control topic refuse it too).
        def all_refused() -> dict[bytes, dict[str, str]] | None:
            found = refused(stack)
            done = all({"sink", "streams"} <= set(found.get(v, {})) for v in expected)
            return found if done else None

        found = wait_for(all_refused, 30)
        for value, reason in expected.items():
            assert set(found[value].values()) == {reason}, (reason, found[value])

        # No key: the forged secret opens neither the admin API nor the SQL endpoint.
        forged_auth = {"Authorization": f"Bearer {FORGED_SECRET}"}
        admin = httpx.get(f"{stack.settings.gateway_url}/v1/admin/keys", headers=forged_auth)
        assert admin.status_code == 401, admin.text
        query = httpx.post(f"{stack.settings.query_url}/", content=b"SELECT 1", headers=forged_auth)
        assert query.status_code in (401, 403), query.text
        # No balance: a later real call settles against the unchanged balance.
        client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "again"}]
        )
        wait_for(lambda: stack.sql("SELECT count() FROM lineage") == [["2"]], 30)
        (cost,) = stack.sql("SELECT cost_nanousd FROM lineage ORDER BY occurred_at DESC LIMIT 1")
        wait_for(lambda: stack.balance_nanousd("alpha") == alpha_before - int(cost[0]), 30)
        assert stack.balance_nanousd("beta", tenant="victim") == victim_before == 10 * USD
        # No audit figure: none of them is stored.
        assert stack.sql("SELECT count() FROM control_events WHERE key_id = 'key_forged'") == [
            ["0"]
        ]
        assert stack.sql("SELECT count() FROM lineage WHERE tenant_id = 'victim'") == [["0"]]

        verified = govledger(env, "audit", "verify")
        assert verified.returncode == 1, verified.stdout + verified.stderr
        lines = verified.stdout.splitlines()[:-1]
        assert all(line.startswith("forged ") for line in lines), verified.stdout
        named = {(line.split()[1], line.split(": ", 1)[1].split(" (")[0]) for line in lines}
        assert named == {
            ("producer=admin-forger", "unauthenticated: no auth header"),
            ("producer=admin-forger2", "forged: role gateway may not write control"),
            ("producer=gateway-forger", "forged: unknown root"),
            (f"producer={gateway_id}", "forged: bad mac"),
        }, verified.stdout
        assert "4 forged" in verified.stdout.splitlines()[-1]

        reconciled = govledger(env, "audit", "reconcile")
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
        assert "4 forged records" in reconciled.stdout and "left out" in reconciled.stdout
        assert "wallets reconcile" in reconciled.stdout
        balances = (stack.balance_nanousd("alpha"), victim_before)

    # Restarted: the broker comes back empty and the sink restores it from the store, which
    # never held a forged record. Still no key, and the same balances.
    with running_stack(env) as stack:
        admin = httpx.get(f"{stack.settings.gateway_url}/v1/admin/keys", headers=forged_auth)
        assert admin.status_code == 401, admin.text
        assert (
            stack.balance_nanousd("alpha"),
            stack.balance_nanousd("beta", tenant="victim"),
        ) == balances
