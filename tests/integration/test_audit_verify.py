"""`govledger audit verify` on the real stack: a clean ledger exits 0; rows tampered in
the store (modified, deleted, reordered, inserted, a tail truncated past a checkpoint)
are each reported at their producer and seq, and the command exits 1. The whole stack
makes the records; after the tampering only the store's owner (broker and sink, with the
query API verify reads through) is started again."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

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
    stack: RunningStack, folder: Path, fmt: str, kind: str = "events"
) -> tuple[Path, Path]:
    """An export of the last day made by the running stack: its file and manifest."""
    auth = {"Authorization": f"Bearer {stack.token}"}
    created = httpx.post(
        f"{stack.settings.query_url}/v1/exports",
        headers=auth,
        json={"type": kind, "format": fmt, "since": "1d"},
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


def calls_through_the_gateway(stack: RunningStack, calls: int) -> None:
    """A funded team's key makes `calls` calls: one gateway chain of that many records."""
    key = stack.create_key("search")
    stack.fund("search", "5")
    client = openai.OpenAI(base_url=stack.base_url, api_key=key["key"], max_retries=0)
    for n in range(calls):
        client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": f"call {n}"}]
        )


def gateway_chain(stack: RunningStack) -> tuple[str, int]:
    rows = stack.sql(
        "SELECT producer_id, max(checkpoint_seq) FROM chain_checkpoints "
        "WHERE producer_id LIKE 'gateway-%' GROUP BY producer_id"
    )
    return rows[0][0], int(rows[0][1])


def test_verify_finds_each_kind_of_tampering(tmp_path: Path) -> None:
    env = stack_environ(
        tmp_path / "data",
        GOVLEDGER_CHECKPOINT_EVERY_RECORDS=str(EVERY),
        GOVLEDGER_CHECKPOINT_INTERVAL_S="600",
    )
    with running_stack(env) as stack:
        calls_through_the_gateway(stack, CALLS)
        # The gateway's second checkpoint (seq 12, covering seq 11) lands in the store.
        wait_for(
            lambda: (
                stack.sql(
                    "SELECT count() FROM chain_checkpoints WHERE producer_id LIKE 'gateway-%'"
                )
                == [["2"]]
            ),
            timeout_s=20,
        )
        wait_for(lambda: stack.sql("SELECT count() FROM lineage") == [[str(CALLS)]], timeout_s=20)
        clean = verify(stack.env)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert clean.stdout.startswith("OK: ") and " 0 findings" in clean.stdout
        producer, covered = gateway_chain(stack)
        assert covered == 11
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
    tmp_path: Path,
) -> None:
    env = stack_environ(tmp_path / "data", GOVLEDGER_RETENTION_INTERVAL_S="3600")
    with running_stack(env) as stack:
        calls_through_the_gateway(stack, CALLS)
        wait_for(lambda: stack.sql("SELECT count() FROM lineage") == [[str(CALLS)]], timeout_s=20)
        pack = "name: default\npolicies:\n  chain:\n    - name: audit-logger\n"
        published = stack.admin(
            "POST",
            "/v1/admin/policies",
            json={
                "tenant": "default",
                "source_yaml": pack + "      policy: {retention_days: 30}\n",
            },
        )
        assert published.status_code in (200, 201), published.text
        producer = stack.sql("SELECT any(producer_id) FROM lineage")[0][0]
    # Stopped: seqs 3-6 of the gateway's chain are stored as 40 days old, past the pack's
    # 30 days (the org baseline's default floor; less is refused at push) (the typed
    # column only: the bytes, and so the chain, stay as sealed), and seq 9 is deleted
    # behind retention's back.
    in_store(
        env,
        f"""
        where = "producer_id = '{producer}'"
        command("INSERT INTO lineage SELECT * REPLACE(occurred_at - INTERVAL 40 DAY AS "
                f"occurred_at) FROM lineage WHERE {{where}} AND seq BETWEEN 3 AND 6")
        command("DELETE FROM lineage WHERE " + where + " AND seq BETWEEN 3 AND 6 "
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
        assert cut == [[producer, "4", "[3,4,5,6]"]]
        # The first run's processors closed their chains at stop: balances, SLA windows.
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


def test_an_exports_chain_heads_catch_a_chain_re_sealed_after_it(tmp_path: Path) -> None:
    env = stack_environ(tmp_path / "data")
    with running_stack(env) as stack:
        calls_through_the_gateway(stack, 8)
        wait_for(lambda: stack.sql("SELECT count() FROM lineage") == [["8"]], timeout_s=20)
        auth = {"Authorization": f"Bearer {stack.token}"}
        created = httpx.post(
            f"{stack.settings.query_url}/v1/exports",
            headers=auth,
            json={"type": "events", "format": "jsonl", "since": "1d"},
            timeout=30,
        )
        assert created.status_code == 202, created.text
        job_url = f"{stack.settings.query_url}/v1/exports/{created.json()['id']}"
        wait_for(
            lambda: httpx.get(job_url, headers=auth, timeout=30).json()["status"] == "succeeded",
            timeout_s=30,
        )
        manifest = tmp_path / "manifest.json"
        manifest.write_bytes(httpx.get(f"{job_url}/manifest", headers=auth, timeout=30).content)
        producer = stack.sql("SELECT any(producer_id) FROM lineage")[0][0]
        assert json.loads(manifest.read_text())["chain_heads"][0]["last_seq"] == 8
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
    assert line.split()[:3] == ["modified", f"producer={producer}", "seq=8"], line
    assert "re-sealed" in line and str(manifest) in line


def test_verify_names_each_typed_column_changed_behind_raw(tmp_path: Path) -> None:
    """Typed columns that SQL, reports and exports read, changed in the store with `raw`
    untouched (the chains still hold): each row is reported by event and column."""
    env = stack_environ(tmp_path / "data")
    with running_stack(env) as stack:
        calls_through_the_gateway(stack, 5)
        wait_for(lambda: stack.sql("SELECT count() FROM lineage") == [["5"]], timeout_s=20)
        wait_for(lambda: stack.sql("SELECT count() > 0 FROM wallet_state") == [["1"]], timeout_s=20)
        clean = verify(stack.env)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "rows' typed columns checked against raw" in clean.stdout
        calls = [row[0] for row in stack.sql("SELECT toString(event_id) FROM lineage ORDER BY seq")]
        export, manifest = events_export(stack, tmp_path, "csv")
        others = [
            events_export(stack, tmp_path, fmt, kind)
            for kind, fmt in (("events", "jsonl"), ("events", "parquet"), ("wallets", "parquet"))
        ]
        (funding,) = stack.sql(
            "SELECT toString(event_id) FROM control_events WHERE event_type = 'wallet.funded'"
        )[0]
        (state,) = stack.sql("SELECT toString(any(event_id)) FROM wallet_state")[0]
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
