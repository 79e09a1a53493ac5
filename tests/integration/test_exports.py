"""Exports on the running stack (Tansu + chDB): calls from two tenants through the gateway,
exported as CSV, JSON Lines and Parquet; rows, SHA-256 and chain heads checked against the
store; tenant isolation of jobs and files; a FOCUS export that sums back to the ledger to
the nano-dollar; and `govledger export create` end to end."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from sinks.exports.focus_spec import FOCUS_VERSION, column_problems, row_problems
from tests.integration.stack import (
    RunningStack,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.integration
FUNDED_NANOUSD = 5 * 10**9  # each tenant's team wallet


@pytest.fixture(scope="module")
def stack(shared_stack: RunningStack) -> RunningStack:
    # The shared stack (tests/conftest.py): tenants of this run's own, counts scoped to them.
    return shared_stack


@dataclass
class World:
    a: str
    b: str
    a_admin: str
    b_admin: str
    escalation: str


def _call(stack: RunningStack, key: str) -> None:
    sdk = openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)
    sdk.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "hi"}])


@pytest.fixture(scope="module")
def world(stack: RunningStack) -> World:
    a, b = f"xa-{secrets.token_hex(3)}", f"xb-{secrets.token_hex(3)}"
    stack.fund("alpha", str(FUNDED_NANOUSD // 10**9), tenant=a)
    stack.fund("beta", str(FUNDED_NANOUSD // 10**9), tenant=b)
    a_dev = stack.create_key("alpha", tenant=a)["key"]
    b_dev = stack.create_key("beta", tenant=b)["key"]
    wait_for(lambda: stack.balance_nanousd("alpha", tenant=a) > 0)
    wait_for(lambda: stack.balance_nanousd("beta", tenant=b) > 0)
    for _ in range(3):
        _call(stack, a_dev)
    for _ in range(2):
        _call(stack, b_dev)
    # One call in A that a pack sends to human review: an escalation to export.
    pack = (
        "name: review-all\npolicies:\n  chain:\n"
        "    - name: human-oversight\n"
        "      policy: {mode: refuse, priority: P2, category: fraud}\n"
    )
    published = stack.admin("POST", "/v1/admin/policies", json={"tenant": a, "source_yaml": pack})
    assert published.status_code in (200, 201), published.text
    reviewed = stack.create_key("alpha", tenant=a, policy_pack="review-all")["key"]
    with pytest.raises(openai.PermissionDeniedError) as refused:
        _call(stack, reviewed)
    world = World(
        a=a,
        b=b,
        a_admin=stack.create_key("ops", tenant=a, role="tenant-admin")["key"],
        b_admin=stack.create_key("ops", tenant=b, role="tenant-admin")["key"],
        escalation=refused.value.response.headers["X-Govledger-Escalation"],
    )
    wait_for(
        lambda: (
            stack.sql(
                f"SELECT (SELECT count() FROM lineage WHERE tenant_id IN ('{a}', '{b}')) = 6 "
                f"AND (SELECT count() FROM escalation_events WHERE tenant_id = '{a}') = 1 "
                f"AND (SELECT count() FROM wallet_state WHERE tenant_id = '{b}') > 0"
            )
            == [["1"]]
        ),
        timeout_s=20,
    )
    # The sink learns keys from the control topic: wait until it knows the new ones.
    for key in (world.a_admin, world.b_admin):
        wait_for(lambda: request(stack, "GET", "/v1/exports", key).status_code == 200)  # noqa: B023 - wait_for calls it in this iteration
    return world


def request(stack: RunningStack, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method,
        f"{stack.settings.query_url}{path}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        **kwargs,
    )


def export(stack: RunningStack, key: str, **body: Any) -> dict[str, Any]:
    """Ask for an export and wait until it is done."""
    created = request(stack, "POST", "/v1/exports", key, json=body)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]

    def finished() -> dict[str, Any] | None:
        job = request(stack, "GET", f"/v1/exports/{job_id}", key).json()
        return job if job["status"] in ("succeeded", "failed") else None

    job: dict[str, Any] = wait_for(finished, timeout_s=30, every_s=0.1)
    assert job["status"] == "succeeded", job
    return job


def _window(job: dict[str, Any], tenant: str) -> str:
    return (
        f"tenant_id = '{tenant}' "
        f"AND occurred_at >= fromUnixTimestamp64Milli({job['since_ms']}, 'UTC') "
        f"AND occurred_at < fromUnixTimestamp64Milli({job['until_ms']}, 'UTC')"
    )


def _rows_of(content: bytes, fmt: str) -> list[dict[str, Any]]:
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(content.decode())))
    if fmt == "jsonl":
        return [json.loads(line) for line in content.decode().splitlines()]
    return list(pq.read_table(io.BytesIO(content)).to_pylist())


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_tenant_admins_export_matches_the_store(
    stack: RunningStack, world: World, fmt: str
) -> None:
    job = export(stack, world.a_admin, type="events", format=fmt, since="1d", description=fmt)
    manifest = job["manifest"]
    assert job["tenant"] == world.a and manifest["tenant"] == world.a
    where = _window(job, world.a)
    ((count,),) = stack.sql(f"SELECT count() FROM lineage WHERE {where}")
    assert manifest["rows"] == job["rows_done"] == job["rows_total"] == int(count) == 4

    content = request(stack, "GET", job["download_url"], world.a_admin).content
    assert hashlib.sha256(content).hexdigest() == manifest["file"]["sha256"]
    assert len(content) == manifest["file"]["bytes"]
    rows = _rows_of(content, fmt)
    assert len(rows) == manifest["rows"]
    assert {r["tenant_id"] for r in rows} == {world.a}
    ids = {line[0] for line in stack.sql(f"SELECT toString(event_id) FROM lineage WHERE {where}")}
    assert {str(r["event_id"]) for r in rows} == ids
    costs = {str(r["event_id"]): int(r["cost_nanousd"]) for r in rows}
    stored = stack.sql(f"SELECT toString(event_id), cost_nanousd FROM lineage WHERE {where}")
    assert costs == {event_id: int(cost) for event_id, cost in stored}

    heads = stack.sql(
        "SELECT producer_id, min(seq), max(seq), argMax(record_hash, seq), count() "
        f"FROM lineage WHERE {where} GROUP BY producer_id ORDER BY producer_id"
    )
    assert [
        [
            h["producer_id"],
            str(h["first_seq"]),
            str(h["last_seq"]),
            h["record_hash"],
            str(h["rows"]),
        ]
        for h in manifest["chain_heads"]
    ] == heads
    ((first, last),) = stack.sql(
        "SELECT toUnixTimestamp64Milli(min(occurred_at)), toUnixTimestamp64Milli(max(occurred_at)) "
        f"FROM lineage WHERE {where}"
    )
    assert manifest["time_range"] == {"first_ms": int(first), "last_ms": int(last)}
    served = request(stack, "GET", job["manifest_url"], world.a_admin).json()
    assert served == manifest


def test_the_org_exports_every_tenant_or_the_one_it_names(
    stack: RunningStack, world: World
) -> None:
    every = export(stack, stack.token, type="events", format="jsonl", since="1d")
    content = request(stack, "GET", every["download_url"], stack.token).content
    assert {world.a, world.b} <= {r["tenant_id"] for r in _rows_of(content, "jsonl")}
    assert every["tenant"] is None

    wallets = export(
        stack, stack.token, type="wallets", format="parquet", since="1d", tenant=world.b
    )
    ((count,),) = stack.sql(f"SELECT count() FROM wallet_state WHERE {_window(wallets, world.b)}")
    assert wallets["manifest"]["rows"] == int(count) > 0
    rows = _rows_of(request(stack, "GET", wallets["download_url"], stack.token).content, "parquet")
    assert {r["tenant_id"] for r in rows} == {world.b}
    assert all(isinstance(r["balance_nanousd"], int) for r in rows)


def test_escalations_export_with_their_status(stack: RunningStack, world: World) -> None:
    job = export(stack, world.a_admin, type="escalations", format="csv", since="1d")
    rows = _rows_of(request(stack, "GET", job["download_url"], world.a_admin).content, "csv")
    assert [(r["escalation_id"], r["status"], r["tenant_id"]) for r in rows] == [
        (world.escalation, "open", world.a)
    ]


def test_one_tenant_cannot_see_export_or_fetch_anothers(stack: RunningStack, world: World) -> None:
    job = export(stack, world.a_admin, type="events", format="csv", since="1d")
    for path in ("", "/download", "/manifest"):
        response = request(stack, "GET", f"/v1/exports/{job['id']}{path}", world.b_admin)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "export_not_found"
    listed = request(stack, "GET", "/v1/exports", world.b_admin).json()["exports"]
    assert job["id"] not in {j["id"] for j in listed}
    assert all(j["tenant"] == world.b for j in listed)
    assert job["id"] in {
        j["id"] for j in request(stack, "GET", "/v1/exports", stack.token).json()["exports"]
    }

    crossing = request(
        stack, "POST", "/v1/exports", world.a_admin,
        json={"type": "events", "format": "csv", "since": "1d", "tenant": world.b},
    )  # fmt: skip
    assert crossing.status_code == 403
    for body, code in [
        ({"type": "everything", "format": "csv"}, "invalid_export_type"),
        ({"type": "events", "format": "xls"}, "invalid_export_format"),
        ({"type": "events", "format": "csv", "since": "ever"}, "invalid_since"),
        ({"type": "events", "format": "csv", "description": "d" * 501}, "invalid_description"),
    ]:
        response = request(stack, "POST", "/v1/exports", world.a_admin, json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == code


def _focus_rows(content: bytes, fmt: str) -> list[dict[str, Any]]:
    """The rows as written: in CSV every value as its text, a null (unquoted, empty) told
    apart from an empty string (quoted)."""
    if fmt != "csv":
        return _rows_of(content, fmt)
    header = next(csv.reader(io.StringIO(content.decode())))
    table = pa_csv.read_csv(
        io.BytesIO(content),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    return list(table.to_pylist())


def _parquet_type(definition: dict[str, Any], written: pa.DataType) -> pa.DataType | None:
    """The Parquet type a FOCUS metadata column definition promises."""
    kind = definition["DataType"]
    if kind == "DECIMAL":
        return pa.decimal128(definition["NumericPrecision"], definition["NumberScale"])
    if kind == "DATETIME":
        return pa.timestamp("ms", tz="UTC")  # Parquet keeps milliseconds at the least
    if kind == "INTEGER":
        return written if pa.types.is_integer(written) else None
    return pa.string()  # STRING, and JSON as text


def test_a_focus_export_sums_back_to_the_ledger_to_the_nanodollar(
    stack: RunningStack, world: World
) -> None:
    """Tenant A's calls (three answered, one refused at $0) and a refund of part of one, as
    FOCUS 1.2 rows: the columns and every value are valid for the specification, one row
    per call and one Credit row for the refund (none for tenant B's refund), and BilledCost
    read as written (CSV text, Parquet decimals) sums to what the team's wallet was charged
    net, to the nano-dollar."""
    where = _window({"since_ms": 0, "until_ms": 2**62}, world.a)
    calls = {
        event_id: int(cost)
        for event_id, cost in stack.sql(
            f"SELECT toString(event_id), cost_nanousd FROM lineage WHERE {where}"
        )
    }
    assert len(calls) == 4
    refunded_call = max(calls, key=lambda event_id: calls[event_id])
    refund_nanousd = calls[refunded_call] // 3  # digits down to the nano-dollar

    def refund(tenant: str, team: str, call: str, nanousd: int) -> str:
        done = stack.admin(
            "POST",
            "/v1/admin/wallets/refund",
            json={
                "tenant": tenant,
                "team": team,
                "call_event_id": call,
                "usd": format(Decimal(nanousd).scaleb(-9), "f"),
                "reason": "FOCUS test",
            },
        )
        assert done.status_code == 201, done.text
        return str(done.json()["event_id"])

    charges = {**calls, refund(world.a, "alpha", refunded_call, refund_nanousd): -refund_nanousd}
    # Another tenant's refund: none of its rows may reach A's export.
    refund(world.b, "beta", refunded_call, 1)

    # The ledger: what the team's wallet was charged net, once the wallets folded it all.
    def charged() -> int | None:
        net = FUNDED_NANOUSD - stack.balance_nanousd("alpha", tenant=world.a)
        return net if net == sum(charges.values()) else None

    net = wait_for(charged, timeout_s=20)
    refunds = f"tenant_id = '{world.a}' AND event_type = 'wallet.refunded'"
    stored = f"tenant_id IN ('{world.a}', '{world.b}') AND event_type = 'wallet.refunded'"
    wait_for(lambda: stack.sql(f"SELECT count() FROM control_events WHERE {stored}") == [["2"]])
    for fmt in ("csv", "parquet"):
        job = export(stack, world.a_admin, type="focus", format=fmt, since="1d")
        manifest = job["manifest"]
        assert manifest["standard"] == f"FOCUS {FOCUS_VERSION}" and manifest["rows"] == 5
        content = request(stack, "GET", job["download_url"], world.a_admin).content
        assert hashlib.sha256(content).hexdigest() == manifest["file"]["sha256"]
        rows = _focus_rows(content, fmt)
        assert column_problems(manifest["columns"]) == [] and list(rows[0]) == manifest["columns"]
        assert [p for row in rows for p in row_problems(row)] == []
        assert {r["x_EventId"] for r in rows} == set(charges)
        for row in rows:
            billed = Decimal(row["BilledCost"])
            assert billed * 10**9 == int(row["x_CostNanoUsd"]) == charges[row["x_EventId"]]
            assert row["EffectiveCost"] == row["BilledCost"] == row["ListCost"]
            tags = json.loads(row["Tags"])
            assert (tags["govledger:tenant"], tags["govledger:team"]) == (world.a, "alpha")
            assert tags["govledger:key"] == row["ResourceId"]
        (credit,) = [r for r in rows if r["ChargeCategory"] == "Credit"]
        assert credit["x_RelatedEventId"] == refunded_call and credit["ConsumedQuantity"] is None
        assert sum(Decimal(r["BilledCost"]) for r in rows) * 10**9 == net
        assert sum(Decimal(r["EffectiveCost"]) for r in rows) * 10**9 == net
        refused = [
            r for r in rows if r["x_HttpStatus"] is not None and int(r["x_HttpStatus"]) == 403
        ]
        assert len(refused) == 1 and Decimal(refused[0]["BilledCost"]) == 0
        # The FOCUS metadata in the manifest describes the file's columns, types as written.
        schema_metadata = manifest["standard_metadata"]["Schema"]
        definitions = {d["ColumnName"]: d for d in schema_metadata["ColumnDefinition"]}
        assert list(definitions) == manifest["columns"]
        assert schema_metadata["FocusVersion"] == FOCUS_VERSION
        if fmt == "parquet":
            schema = pq.read_schema(io.BytesIO(content))
            for name, definition in definitions.items():
                written = schema.field(name).type
                assert _parquet_type(definition, written) == written, name
        window = _window(job, world.a)
        heads = stack.sql(
            "SELECT producer_id, max(seq), argMax(record_hash, seq) FROM ("
            f"SELECT producer_id, seq, record_hash FROM lineage WHERE {window} UNION ALL "
            f"SELECT producer_id, seq, record_hash FROM control_events WHERE {window} "
            f"AND {refunds}) GROUP BY producer_id ORDER BY producer_id"
        )
        assert [
            [h["producer_id"], str(h["last_seq"]), h["record_hash"]]
            for h in manifest["chain_heads"]
        ] == heads


def _cli(
    stack: RunningStack, cwd: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "govledger", "export", *args],
        env={**stack.env, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_line_exports_downloads_and_verifies(
    stack: RunningStack, world: World, tmp_path: Path
) -> None:
    done = _cli(
        stack, tmp_path, "create", "--type", "events", "--format", "parquet", "--since", "90d",
        "--tenant", world.b, "--description", "Q2 audit for beta",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout
    (data,) = tmp_path.glob("govledger-export-*.parquet")
    (manifest_path,) = tmp_path.glob("govledger-export-*.manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert hashlib.sha256(data.read_bytes()).hexdigest() == manifest["file"]["sha256"]
    assert manifest["description"] == "Q2 audit for beta"
    table = pq.read_table(data)
    assert table.num_rows == manifest["rows"] == 2
    assert set(table.column("tenant_id").to_pylist()) == {world.b}

    listed = _cli(stack, tmp_path, "list")
    assert listed.returncode == 0 and manifest["export_id"] in listed.stdout
    queued = _cli(stack, tmp_path, "create", "--type", "focus", "--since", "1d", "--no-wait")
    assert queued.returncode == 0, queued.stderr
    status = _cli(stack, tmp_path, "status", queued.stdout.strip())
    assert status.returncode == 0 and json.loads(status.stdout)["type"] == "focus"
    unreachable = _cli(stack, tmp_path, "list", GOVLEDGER_QUERY_PORT=str(free_port()))
    assert unreachable.returncode == 2, unreachable.stderr


def test_a_tenant_admins_verification_covers_its_chains_only(
    stack: RunningStack, world: World
) -> None:
    """`POST /v1/audit/verify` on the real sink (chains, authentication with the org
    keyring, columns): a tenant admin's job is of its tenant, checks the chains carrying
    its records, and is another tenant's to neither read nor start."""
    created = request(stack, "POST", "/v1/audit/verify", world.a_admin)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert request(stack, "GET", f"/v1/audit/verify/{job_id}", world.b_admin).status_code == 404
    refused = request(stack, "POST", f"/v1/audit/verify?tenant={world.a}", world.b_admin)
    assert refused.status_code == 403

    def finished() -> dict[str, Any] | None:
        job = request(stack, "GET", f"/v1/audit/verify/{job_id}", world.a_admin).json()
        return job if job["status"] in ("succeeded", "failed") else None

    job: dict[str, Any] = wait_for(finished, timeout_s=60, every_s=0.1)
    assert job["status"] == "succeeded", job
    assert job["tenant"] == world.a
    result = job["result"]
    own = int(stack.sql(f"SELECT count() FROM lineage WHERE tenant_id = '{world.a}'")[0][0])
    # Its calls' chains, checked whole (other tenants' records of the gateway's chain too).
    assert result["producers"] >= 1 and result["records"] >= own == 4
    assert result["columns_rows"] >= own
    # The total is counted as the job starts: records stored since may be walked too.
    assert job["records_checked"] == result["records"] and job["records_total"] > 0
    assert world.b not in str(job)
    latest = request(stack, "GET", "/v1/audit/verify/latest", world.a_admin).json()
    assert latest["id"] == job_id
