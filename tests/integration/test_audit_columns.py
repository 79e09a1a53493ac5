"""The column check of `audit verify` against the real ClickHouse engine (chDB): a record
of every type, inserted the way the sink inserts it (Avro container files, ClickHouse
mapping fields to columns), reads back with no finding, every row read exactly once in
small pages even where many rows share one sort key; then a column of each table,
changed in the store with its raw untouched, is reported at its event and column, alike
when pages are checked in worker processes.

chDB allows one engine per process: the store lives in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

COPIES = 12  # one call stored this many times: more rows under one sort key than a page

SCRIPT = """
import json, sys
from replay.columns import check_store
from replay.sources import store_reader
from schemas import codec
from schemas.codec import HashChain
from sinks.avro_batch import container_file, insert_columns
from sinks.store import Store
from sinks.tables import TABLE_FOR
from tests.unit import builders

store = Store(sys.argv[1])
store.migrate()
# RecordsStored notices are not stored (sinks/stored.py): no table to check.
records = [r for r in builders.one_of_each() if type(r) in TABLE_FOR] + [
    builders.call(ttft_ms=120.5, stream=True, user_id=None, error_code="upstream_error"),
    builders.rejected_call(),
]
chains, values = {}, []
for record in records:
    chain = chains.setdefault(record.producer_id, HashChain(record.producer_id))
    values.append(codec.encode(chain.seal(record)))
by_schema = {}
for value in values:
    by_schema.setdefault(codec.schema_of(value).fingerprint, []).append(value)
for group in by_schema.values():
    entry = codec.schema_of(group[0])
    table = TABLE_FOR[entry.record_type]
    columns = insert_columns(entry, store.table_columns(table))
    store.insert_avro(table, columns, container_file(entry, group), entry.fingerprint.hex())
first_call = values[0]
entry = codec.schema_of(first_call)
for copy in range(COPIES - 1):
    store.insert_avro("lineage", insert_columns(entry, store.table_columns("lineage")),
                      container_file(entry, [first_call]), f"copy-{copy}")
read = store_reader(store)
from replay.columns import NOT_FROM_RAW, UNKNOWN, table_columns, zero_of
from schemas.codec import ALL_RECORD_TYPES as RECORD_TYPES
types = {t.schema_name.rsplit(".", 1)[1]: t for t in RECORD_TYPES}
unjudged = set()
for source in codec.load_schema_sources().values():
    if types[source["name"]] not in TABLE_FOR:
        continue
    table = TABLE_FOR[types[source["name"]]]
    fields = {f["name"] for f in source["fields"]}
    unjudged.update(f"{table}.{c.name} DEFAULT {c.default!r} ({source['namespace']})"
                    for c in table_columns(read, table)
                    if c.name not in NOT_FROM_RAW | fields and zero_of(c) is UNKNOWN)
unjudged = sorted(unjudged)
from sinks.tables import ALL_TABLES, SORT_KEYS
declared_keys = {t: ", ".join(SORT_KEYS[t]) for t in ALL_TABLES}
engine_keys = {t: store.query_rows("SELECT sorting_key FROM system.tables WHERE database = "
                                   "currentDatabase() AND name = %(t)s", {"t": t})[0][0]
               for t in ALL_TABLES}
clean = check_store(read, page_rows=5)

def event(record_type):
    return next(codec.decode(v).event_id for v in values
                if isinstance(codec.decode(v), record_type))

from schemas import records as r
changes = [
    ("lineage", event(r.LineageRecord), "decision = 'denied'"),
    ("control_events", event(r.KeyIssued), "role = 'org-admin'"),
    ("control_events", event(r.KeyRevoked), "amount_nanousd = 5"),
    ("wallet_state", event(r.WalletBalance), "applied_seqs = map('gateway-x', 1)"),
    ("breaker_state", event(r.BreakerState), "state = 'closed'"),
    ("alerts", event(r.QuotaThresholdCrossed), "threshold_percent = 10"),
    ("sla_windows", event(r.SlaWindow), "ttft_ms = gateway_overhead_ms"),
    ("escalation_events", event(r.EscalationOpened), "reason = 'nothing to see'"),
    ("dead_letters", event(r.DeadLetter), "error = ''"),
    ("chain_checkpoints", event(r.ChainCheckpoint), "checkpoint_seq = 1"),
]
for table, event_id, change in changes:
    store.client.command(f"ALTER TABLE {table} UPDATE {change} WHERE event_id = '{event_id}'",
                         settings={"mutations_sync": 2})
tampered = check_store(read, page_rows=5)
in_workers = check_store(read, page_rows=5, jobs=2)
print(json.dumps({
    "stored": len(values) + COPIES - 1,
    "clean_rows": clean.rows,
    "clean": [f.line() for f in clean.findings],
    "unjudged": unjudged,
    "declared_keys": declared_keys,
    "engine_keys": engine_keys,
    "changes": changes,
    "found": [[f.kind, f.table, f.event_id, f.detail] for f in tampered.findings],
    "in_workers": [[f.kind, f.table, f.event_id, f.detail] for f in in_workers.findings],
    "rows_in_workers": in_workers.rows,
}))
"""


def test_every_record_type_reads_back_clean_and_each_table_s_change_is_named(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"COPIES = {COPIES}\n" + textwrap.dedent(SCRIPT),
            f"chdb://{tmp_path / 'chdb'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["clean"] == []
    # Every column a record may leave out has a default the check knows (its type's zero).
    assert result["unjudged"] == []
    # The sort keys verify pages by (sinks.tables.SORT_KEYS) are the tables' own.
    assert result["declared_keys"] == result["engine_keys"]
    assert result["clean_rows"] == result["stored"]  # every row once, ties included
    found = {(table, event): detail for kind, table, event, detail in result["found"]}
    call = result["changes"][0][1]
    assert sum(event == call for _, _, event, _ in result["found"]) == COPIES
    assert all(kind == "column_mismatch" for kind, *_ in result["found"])
    for table, event, change in result["changes"]:
        column = change.split(" = ")[0]
        detail = found.pop((table, event))
        assert detail.startswith(f"column {column} differs from raw"), (table, detail)
    # The changed call is stored COPIES times: every copy is reported, nothing else is.
    assert list(found) == [], found
    # Checked in two worker processes (--jobs 2): the same rows, the same findings.
    assert result["rows_in_workers"] == result["stored"]
    assert sorted(result["in_workers"]) == sorted(result["found"])
