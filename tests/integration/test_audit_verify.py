"""`govledger audit verify` on the real stack: a clean ledger exits 0; rows tampered in
the store (modified, deleted, reordered, inserted, a tail truncated past a checkpoint)
are each reported at their producer and seq, and the command exits 1.

One stack per module makes the records of every test (`ledger`): each test's calls go
through a gateway started anew for it, so each has a hash chain of its own from seq 1,
in a tenant of its own. The stack is then stopped, and each test tampers with its own
copy of the stopped stack's data and serves that copy's store again (`running_store`:
the broker and the sink, with the query API verify reads through): one boot and stop
for the module instead of one per test."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from streams.wallets.logic import team_wallet_id
from tests.integration.stack import (
    RunningStack,
    running_stack,
    running_store,
    stack_environ,
    wait_for,
)

pytestmark = pytest.mark.integration

CALLS = 14
EVERY = 5  # a checkpoint after every 5 records of a chain: seqs 6 and 12 of the gateway's


def verify(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "govledger", "audit", "verify", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def in_store(env: dict[str, str], code: str) -> str:
    """Run code against the stopped stack's store in a child process (chDB holds one
    engine per process); `store` is open, `print` answers."""
    script = textwrap.dedent(
        f"""
        import json
        from schemas.settings import RuntimeSettings, load
        from sinks.store import Store
        store = Store(load(RuntimeSettings, {json.dumps(env)!s}).effective_clickhouse_dsn)
        def command(sql):
            store.client.command(sql, settings={{"mutations_sync": 2}})
        """
    ) + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def verify_export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "govledger", "audit", "verify-export", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def events_export(
    stack: RunningStack, folder: Path, tenant: str, fmt: str, kind: str = "events"
) -> tuple[Path, Path]:
    """An export of one tenant's last day made by the running stack: file and manifest."""
    auth = {"Authorization": f"Bearer {stack.token}"}
    created = httpx.post(
        f"{stack.settings.query_url}/v1/exports",
        headers=auth,
        json={"type": kind, "format": fmt, "since": "1d", "tenant": tenant},
        timeout=30,
    )
    assert created.status_code == 202, created.text
    job_url = f"{stack.settings.query_url}/v1/exports/{created.json()['id']}"
    wait_for(
        lambda: httpx.get(job_url, headers=auth, timeout=30).json()["status"] == "succeeded",
        timeout_s=30,
    )
    file = folder / f"{kind}.{fmt}"
    file.write_bytes(httpx.get(f"{job_url}/download", headers=auth, timeout=30).content)
    manifest = folder / f"{kind}.{fmt}.manifest.json"
    manifest.write_bytes(httpx.get(f"{job_url}/manifest", headers=auth, timeout=30).content)
    return file, manifest


# The stack's settings, and the store's again for each test's copy: checkpoints every 5
# records (none by time: the processors' chains are closed only at stop, however slow the
# machine), and no retention run but the tests' own.
SETTINGS = {
    "GOVLEDGER_CHECKPOINT_EVERY_RECORDS": str(EVERY),
    "GOVLEDGER_CHECKPOINT_INTERVAL_S": "600",
    "GOVLEDGER_WORKER_CHECKPOINT_INTERVAL_S": "600",
    "GOVLEDGER_RETENTION_INTERVAL_S": "3600",
    "GOVLEDGER_RESTART_BACKOFF_S": "0.1",
}
# A tenant per test: its calls, its gateway's chain, its exports.
TAMPERED, RETAINED, RESEALED, COLUMNS = "default", "retained", "resealed", "columns"
TEAM = "search"


def calls_through_the_gateway(
    stack: RunningStack, tenant: str, calls: int, *, new_gateway: bool = True
) -> str:
    """A funded team's key in `tenant` makes `calls` calls through a gateway started
    anew (the one before it stops and seals its chain's final checkpoint): one chain of
    its own, from seq 1, with a checkpoint after every 5 records. Its producer id, once
    every call is in the store."""
    if new_gateway:
        before = stack.stack.restarts["gateway"]
        stack.stack.kill("gateway", signal.SIGTERM)
        wait_for(lambda: stack.stack.restarts["gateway"] > before, timeout_s=60, every_s=0.1)
        assert stack.stack.restart_log[-1].startswith("gateway ended with exit code 0")
    key = stack.create_key(TEAM, tenant=tenant)
    stack.fund(TEAM, "5", tenant=tenant)
    client = openai.OpenAI(base_url=stack.base_url, api_key=key["key"], max_retries=0)
    for n in range(calls):
        client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": f"call {n}"}]
        )
    counted = f"SELECT count(), any(producer_id) FROM lineage WHERE tenant_id = '{tenant}'"
    return str(wait_for(lambda: (row := stack.sql(counted)[0])[0] == str(calls) and row[1]))


@dataclass
class Ledger:
    """The stopped stack's data, and what each test saw while it ran."""

    data: Path
    folder: Path  # exports and manifests
    producers: dict[str, str]  # tenant -> its gateway's producer id
    clean: dict[str, subprocess.CompletedProcess[str]]  # tenant -> verify before tampering
    covered: int  # the tampered chain's last checkpoint while running
    exports: dict[tuple[str, str], tuple[Path, Path]]  # (kind, format) -> file, manifest
    funding: str  # the event id of the columns tenant's funding
    state: str  # ... and of one of its wallet's balances
    calls: list[str]  # the columns tenant's calls' event ids, in seq order


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    data = tmp_path_factory.mktemp("govledger-audit") / "data"
    folder = tmp_path_factory.mktemp("audit-exports")
    producers: dict[str, str] = {}
    clean: dict[str, subprocess.CompletedProcess[str]] = {}
    with running_stack(stack_environ(data, **SETTINGS), supervise=True) as stack:
        # Tampered: 14 calls, checkpoints at seqs 6 and 12; the second (covering seq 11)
        # lands in the store before the stop seals the final one (seq 17 covers 16).
        producer = producers[TAMPERED] = calls_through_the_gateway(
            stack, TAMPERED, CALLS, new_gateway=False
        )
        checkpoints = (
            "SELECT count(), max(checkpoint_seq) FROM chain_checkpoints "
            f"WHERE producer_id = '{producer}'"
        )
        covered = int(wait_for(lambda: (r := stack.sql(checkpoints)[0])[0] == "2" and r)[1])
        clean[TAMPERED] = verify(stack.env)
        # Retained: 14 calls, and a pack keeping the tenant's audit rows for 30 days.
        producers[RETAINED] = calls_through_the_gateway(stack, RETAINED, CALLS)
        pack = "name: default\npolicies:\n  chain:\n    - name: audit-logger\n"
        published = stack.admin(
            "POST",
            "/v1/admin/policies",
            json={
                "tenant": RETAINED,
                "source_yaml": pack + "      policy: {retention_days: 30}\n",
            },
        )
        assert published.status_code in (200, 201), published.text
        # Resealed: 8 calls and an export of them (its manifest holds the chain's head).
        producers[RESEALED] = calls_through_the_gateway(stack, RESEALED, 8)
        exports = {("heads", "jsonl"): events_export(stack, folder, RESEALED, "jsonl")}
        # Columns: 5 calls, the balance they leave, and exports of every kind.
        producers[COLUMNS] = calls_through_the_gateway(stack, COLUMNS, 5)
        wallet = team_wallet_id(COLUMNS, TEAM)
        states = (
            "SELECT count(), toString(any(event_id)) FROM wallet_state "
            f"WHERE wallet_id = '{wallet}'"
        )
        state = wait_for(lambda: (row := stack.sql(states)[0])[0] != "0" and row[1])
        clean[COLUMNS] = verify(stack.env)
        calls = [
            row[0]
            for row in stack.sql(
                f"SELECT toString(event_id) FROM lineage WHERE tenant_id = '{COLUMNS}' ORDER BY seq"
            )
        ]
        columns_folder = folder / COLUMNS
        columns_folder.mkdir()
        for kind, fmt in (
            ("events", "csv"),
            ("events", "jsonl"),
            ("events", "parquet"),
            ("wallets", "parquet"),
        ):
            exports[kind, fmt] = events_export(stack, columns_folder, COLUMNS, fmt, kind)
        (funding,) = stack.sql(
            "SELECT toString(event_id) FROM control_events "
            f"WHERE event_type = 'wallet.funded' AND wallet_id = '{wallet}'"
        )[0]
    return Ledger(data, folder, producers, clean, covered, exports, funding, state, calls)


def stopped_copy(ledger: Ledger, tmp_path: Path) -> dict[str, str]:
    """This test's copy of the stopped stack's data (about 1 s): the environment of a
    stack over it, on ports of its own."""
    shutil.copytree(ledger.data, tmp_path / "data", symlinks=True)
    return stack_environ(tmp_path / "data", **SETTINGS)


def test_verify_finds_each_kind_of_tampering(ledger: Ledger, tmp_path: Path) -> None:
    clean = ledger.clean[TAMPERED]
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.startswith("OK: ") and " 0 findings" in clean.stdout
    producer = ledger.producers[TAMPERED]
    assert ledger.covered == 11
    env = stopped_copy(ledger, tmp_path)
    # Stopped: the gateway sealed a final checkpoint (seq 17 covers 16). Now tamper.
    in_store(
        env,
        f"""
        p = {producer!r}
        where = f"producer_id = '{{p}}'"
        (raw,) = store.query_rows(f"SELECT hex(raw) FROM lineage WHERE {{where}} AND seq = 2")[0]
        data = bytearray(bytes.fromhex(raw))
        data[-3] ^= 1
        command(f"ALTER TABLE lineage UPDATE raw = unhex('{{data.hex()}}') "
                f"WHERE {{where}} AND seq = 2")
        command(f"ALTER TABLE lineage DELETE WHERE {{where}} AND seq = 4")
        command(f"ALTER TABLE lineage DELETE WHERE {{where}} AND seq IN (10, 11)")
        command(f"ALTER TABLE lineage UPDATE seq = if(seq = 13, 14, 13) "
                f"WHERE {{where}} AND seq IN (13, 14)")
        from schemas import codec
        from schemas.codec import HashChain
        import dataclasses
        (raw,) = store.query_rows(f"SELECT hex(raw) FROM lineage WHERE {{where}} AND seq = 14")[0]
        fourteen = codec.decode(bytes.fromhex(raw))
        (raw,) = store.query_rows(f"SELECT hex(raw) FROM lineage WHERE {{where}} AND seq = 15")[0]
        fifteen = codec.decode(bytes.fromhex(raw))
        forger = HashChain(p)
        forger.seq, forger.head = 14, fourteen.record_hash
        forged = forger.seal(dataclasses.replace(
            fifteen, event_id="0193b000-0000-7000-8000-000000000001", cost_nanousd=1))
        command(f"INSERT INTO lineage SELECT * REPLACE("
                f"toUUID('{{forged.event_id}}') AS event_id, "
                f"unhex('{{codec.encode(forged).hex()}}') AS raw) "
                f"FROM lineage WHERE {{where}} AND seq = 15")
        """,
    )
    with running_store(env) as stack:
        tampered = verify(stack.env)
        tenant = verify(stack.env, "--tenant", "default")
        other = verify(stack.env, "--tenant", "nobody")
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    found = [
        (line.split()[0], line.split()[1].removeprefix("producer="), line.split()[2])
        for line in tampered.stdout.splitlines()[:-1]
    ]
    # Changed bytes no longer match the auth header the sink stored with them: the
    # modified and the inserted record are also not their producer's (forged).
    assert found == [
        ("modified", producer, "seq=2"),
        # The flipped bit lands in a typed field: its column no longer says what raw says.
        ("column_mismatch", producer, "seq=2"),
        ("forged", producer, "seq=2"),
        ("deleted", producer, "seq=4"),
        ("truncated", producer, "seq=10"),
        ("reordered", producer, "seq=13"),
        ("reordered", producer, "seq=14"),
        ("inserted", producer, "seq=15"),
        # The inserted row kept seq 15's columns under its forged bytes.
        ("column_mismatch", producer, "seq=15"),
        ("forged", producer, "seq=15"),
    ], tampered.stdout
    assert tampered.stdout.splitlines()[-1].startswith("TAMPERED: ")
    assert " at=20" in tampered.stdout.splitlines()[0]  # ISO time of the record
    assert (
        tenant.returncode == 1
        and tenant.stdout.splitlines()[:-1] == (tampered.stdout.splitlines()[:-1])
    )
    assert other.returncode == 0 and other.stdout.startswith("OK: 0 producers"), other.stdout


def test_gaps_that_retention_made_are_accounted_and_others_still_reported(
    ledger: Ledger, tmp_path: Path
) -> None:
    producer = ledger.producers[RETAINED]
    env = stopped_copy(ledger, tmp_path)
    # Stopped: seqs 2-5 of the gateway's chain (calls; seq 6 is a checkpoint) are stored
    # as 40 days old, past the tenant's pack's 30 days (the org baseline's default floor;
    # less is refused at push) (the typed column only: the bytes, and so the chain, stay
    # as sealed), and seq 9 is deleted behind retention's back.
    in_store(
        env,
        f"""
        where = "producer_id = '{producer}'"
        command("INSERT INTO lineage SELECT * REPLACE(occurred_at - INTERVAL 40 DAY AS "
                f"occurred_at) FROM lineage WHERE {{where}} AND seq BETWEEN 2 AND 5")
        command("DELETE FROM lineage WHERE " + where + " AND seq BETWEEN 2 AND 5 "
                "AND occurred_at > now64() - INTERVAL 1 DAY")
        command(f"DELETE FROM lineage WHERE {{where}} AND seq = 9")
        """,
    )
    with running_store(env) as stack:

        def run_retention() -> dict[str, Any] | None:
            response = httpx.post(
                f"{stack.settings.query_url}/v1/retention/run",
                headers={"Authorization": f"Bearer {stack.token}"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            body = dict(response.json())
            return body if body["retention_days"] else None  # the sink read the packs

        assert wait_for(run_retention, timeout_s=20)["deleted"]["lineage"] == 4
        cut = stack.sql("SELECT producer_id, rows, seqs FROM retention_cuts")
        assert cut == [[producer, "4", "[2,3,4,5]"]]
        # The stack's processors closed their chains at stop: balances, SLA windows.
        closed = stack.sql(
            "SELECT DISTINCT splitByChar('-', producer_id)[2] FROM chain_checkpoints "
            "WHERE producer_id LIKE 'streams-%' AND reason = 'stop' ORDER BY 1"
        )
        assert ["sla"] in closed and len(closed) >= 2, closed
        after = verify(stack.env)
    assert after.returncode == 1, after.stdout + after.stderr
    assert [line.split()[:3] for line in after.stdout.splitlines()[:-1]] == [
        ["deleted", f"producer={producer}", "seq=9"]
    ], after.stdout
    assert "4 records deleted by retention" in after.stdout.splitlines()[-1]


def test_an_exports_chain_heads_catch_a_chain_re_sealed_after_it(
    ledger: Ledger, tmp_path: Path
) -> None:
    producer = ledger.producers[RESEALED]
    _, manifest = ledger.exports["heads", "jsonl"]
    # 8 calls: seqs 1-5 and 7-9 (6 is a checkpoint); the export's head is the last.
    (head,) = json.loads(manifest.read_text())["chain_heads"]
    assert (head["producer_id"], head["last_seq"], head["rows"]) == (producer, 9, 8)
    env = stopped_copy(ledger, tmp_path)
    # Stopped: a forger who knows the format lowers the cost in seq 3 and re-seals every
    # record after it, checkpoints included, so that every link holds again.
    in_store(
        env,
        f"""
        import dataclasses
        from schemas import codec
        from schemas.codec import HashChain
        from schemas.records import ChainCheckpoint
        p = {producer!r}
        rows = store.query_rows(
            "SELECT seq, tbl, hex(raw) FROM (SELECT seq, 'lineage' AS tbl, raw, producer_id "
            "FROM lineage UNION ALL SELECT seq, 'chain_checkpoints', raw, producer_id "
            f"FROM chain_checkpoints) WHERE producer_id = '{{p}}' ORDER BY seq")
        records = [(tbl, codec.decode(bytes.fromhex(raw))) for _, tbl, raw in rows]
        chain = HashChain(p)
        chain.seq, chain.head = 2, records[1][1].record_hash
        for tbl, record in records[2:]:
            # The forger keeps the typed columns in step with the bytes it re-seals.
            columns = ""
            if isinstance(record, ChainCheckpoint):
                record = dataclasses.replace(
                    record, checkpoint_seq=chain.seq, checkpoint_hash=chain.head)
                columns = (f", checkpoint_seq = {{record.checkpoint_seq}}, "
                           f"checkpoint_hash = '{{record.checkpoint_hash}}'")
            elif record.seq == 3:
                record = dataclasses.replace(record, cost_nanousd=1)
                columns = ", cost_nanousd = 1"
            sealed = chain.seal(record)
            command(f"ALTER TABLE {{tbl}} UPDATE raw = unhex('{{codec.encode(sealed).hex()}}'), "
                    f"prev_hash = '{{sealed.prev_hash}}', record_hash = '{{sealed.record_hash}}'"
                    f"{{columns}} WHERE producer_id = '{{p}}' AND seq = {{sealed.seq}}")
        """,
    )
    with running_store(env) as stack:
        walk_only = verify(stack.env)
        with_heads = verify(stack.env, "--heads", str(manifest))
    # The walk alone sees consistent links; the re-sealed records' auth headers (stored by
    # the sink, made with the producer's key the forger lacks) no longer verify.
    assert walk_only.returncode == 1, walk_only.stdout + walk_only.stderr
    resealed = walk_only.stdout.splitlines()[:-1]
    assert all(line.split()[:2] == ["forged", f"producer={producer}"] for line in resealed)
    assert [line.split()[2] for line in resealed][:2] == ["seq=3", "seq=4"], walk_only.stdout
    assert with_heads.returncode == 1, with_heads.stdout + with_heads.stderr
    (line,) = [x for x in with_heads.stdout.splitlines()[:-1] if x.startswith("modified")]
    assert line.split()[:3] == ["modified", f"producer={producer}", "seq=9"], line
    assert "re-sealed" in line and str(manifest) in line


def test_verify_names_each_typed_column_changed_behind_raw(ledger: Ledger, tmp_path: Path) -> None:
    """Typed columns that SQL, reports and exports read, changed in the store with `raw`
    untouched (the chains still hold): each row is reported by event and column."""
    clean = ledger.clean[COLUMNS]
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "rows' typed columns checked against raw" in clean.stdout
    calls, funding, state = ledger.calls, ledger.funding, ledger.state
    assert len(calls) == 5
    export, manifest = ledger.exports["events", "csv"]
    others = [
        ledger.exports[kind, fmt]
        for kind, fmt in (("events", "jsonl"), ("events", "parquet"), ("wallets", "parquet"))
    ]
    env = stopped_copy(ledger, tmp_path)
    changes = {
        ("lineage", calls[0]): "model_requested = 'cheap-model', cost_nanousd = 1",
        ("lineage", calls[1]): "team_id = 'other-team'",
        ("lineage", calls[2]): "user_id = 'someone-else'",
        ("lineage", calls[3]): "guardrails_triggered = [('pii-detector', 'block')]",
        ("control_events", funding): "amount_nanousd = 1000000000000000",
        ("wallet_state", state): "balance_nanousd = balance_nanousd + 1",
    }
    in_store(
        env,
        "".join(
            f"command(\"ALTER TABLE {table} UPDATE {change} WHERE event_id = '{event}'\")\n"
            for (table, event), change in changes.items()
        ),
    )
    with running_store(env) as stack:
        tampered = verify(stack.env)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    lines = tampered.stdout.splitlines()
    assert lines[-1].startswith("TAMPERED: ") and "6 column_mismatch" in lines[-1], lines[-1]
    assert all(line.startswith("column_mismatch ") for line in lines[:-1]), tampered.stdout
    for (table, event), change in changes.items():
        (line,) = [line for line in lines if f" {table} event {event}: " in line]
        named = re.findall(r"(?:^|, )(\w+) = ", change)
        assert line.split(": ", 1)[1].startswith(
            f"column{'s' if len(named) > 1 else ''} {', '.join(named)} differ"
        ), line
    assert "model_requested: stored 'cheap-model'" in tampered.stdout
    # The export taken before, as the store's rows were then, checks clean on its own;
    # a cell changed in it (its raw_base64 untouched) is named like a stored column.
    exported = verify_export(str(export), "--manifest", str(manifest))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert exported.stdout.startswith("OK: 5 rows checked"), exported.stdout
    for other, other_manifest in others:
        clean = verify_export(str(other), "--manifest", str(other_manifest))
        assert clean.returncode == 0, (other.name, clean.stdout + clean.stderr)
    text = export.read_text()
    assert text.count(',"sim-small",') >= 5  # the first is the first row's model_requested
    export.write_text(text.replace(',"sim-small",', ',"cheap-model",', 1))
    changed = verify_export(str(export))
    assert changed.returncode == 1, changed.stdout + changed.stderr
    (line,) = changed.stdout.splitlines()[:-1]
    assert line.startswith("column_mismatch ") and "column model_requested differs" in line, line
    assert f" event {calls[0]}: " in line, line  # the first row: the first call
