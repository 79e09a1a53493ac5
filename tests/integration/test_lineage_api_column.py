"""Lineage v2's `api` in the store (chDB, as the sink inserts it): a v2 record's api is
its column, a row of a v1 record (written before the field existed) holds
'chat.completions', the value v2 reads it with, and `audit verify`'s column check finds
both clean, and a change to the old row's api. chDB allows one engine per process: the
store lives in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = """
import dataclasses, json, sys
from replay.columns import check_store
from replay.sources import store_reader
from schemas import codec
from schemas.codec import HashChain
from sinks.avro_batch import container_file, insert_columns
from sinks.store import Store
from tests.unit import builders
from tests.unit.test_schemas import _written_with

store = Store(sys.argv[1])
store.migrate()
chain = HashChain("gateway-x")
new = chain.seal(dataclasses.replace(builders.call(seq=0, producer_id=""), api="embeddings"))
old = chain.seal(builders.call(seq=0, producer_id=""))
for value in (codec.encode(new), _written_with(old, "lineage_record.v1.avsc")):
    entry = codec.schema_of(value)
    columns = insert_columns(entry, store.table_columns("lineage"))
    store.insert_avro("lineage", columns, container_file(entry, [value]), entry.fingerprint.hex())
rows = store.query_rows("SELECT toString(event_id), api FROM lineage", {})
checked = check_store(store_reader(store), page_rows=5)
change = f"ALTER TABLE lineage UPDATE api = 'embeddings' WHERE event_id = '{old.event_id}'"
store.client.command(change, settings={"mutations_sync": 2})
tampered = check_store(store_reader(store), page_rows=5)
print(json.dumps({
    "tampered": [[f.kind, f.event_id] for f in tampered.findings],
    "api": {event_id: api for event_id, api in rows},
    "new": new.event_id,
    "old": old.event_id,
    "rows": checked.rows,
    "findings": [f.line() for f in checked.findings],
}))
"""


def test_the_store_holds_the_api_and_old_rows_read_as_chat(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), f"chdb://{tmp_path / 'chdb'}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["api"] == {result["new"]: "embeddings", result["old"]: "chat.completions"}
    assert (result["rows"], result["findings"]) == (2, [])
    # An old row's api is checked too (against the default v2 reads it with).
    assert result["tampered"] == [["column_mismatch", result["old"]]]
