"""Lineage v3's token kinds and published prices in the store (chDB, as the sink inserts
them): a v3 record's counts are its columns, a v2 row reads 0, a PricePublished is a
control_events row with its rates, `audit verify`'s column check finds every row clean,
and `audit reprice` over the store finds exactly the call charged off its price. chDB
allows one engine per process: the store lives in a child process."""

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
from replay.prices import reprice_store
from replay.sources import store_reader
from schemas import codec
from schemas.codec import HashChain
from schemas.ids import uuid7
from sinks.avro_batch import container_file, insert_columns
from sinks.store import Store
from sinks.tables import TABLE_FOR
from tests.unit import builders
from tests.unit.test_schemas import _written_with

store = Store(sys.argv[1])
store.migrate()
gateway, admin = HashChain("gateway-x"), HashChain("admin-x")
price = admin.seal(builders.price_published(seq=0, producer_id=""))
def call(**fields):
    base = builders.call(seq=0, producer_id="", model_selected="gpt-4o",
                         occurred_at=builders.T0 + 5, prompt_tokens=1000, completion_tokens=10)
    return gateway.seal(dataclasses.replace(base, event_id=uuid7(), **fields))
# $2 in, $1 cached, $10 out per M from T0 (builders.price_published)
priced = call(cached_prompt_tokens=800, reasoning_tokens=4,
              cost_nanousd=200 * 2_000 + 800 * 1_000 + 10 * 10_000)
overcharged = call(cost_nanousd=1_000 * 2_500 + 10 * 10_000)
old = call(cost_nanousd=1_000 * 2_000 + 10 * 10_000)
values = [codec.encode(price), codec.encode(priced), codec.encode(overcharged),
          _written_with(old, "lineage_record.v2.avsc")]
for i, value in enumerate(values):
    entry = codec.schema_of(value)
    table = TABLE_FOR[entry.record_type]
    columns = insert_columns(entry, store.table_columns(table))
    store.insert_avro(table, columns, container_file(entry, [value]), f"batch-{i}")
counts = store.query_rows(
    "SELECT toString(event_id), cached_prompt_tokens, reasoning_tokens FROM lineage", {})
prices = store.query_rows(
    "SELECT provider, model, input_nanousd_per_mtok, cached_input_nanousd_per_mtok, "
    "cache_write_nanousd_per_mtok FROM control_events", {})
checked = check_store(store_reader(store), page_rows=5)
report = reprice_store(store_reader(store), page_rows=2)
print(json.dumps({
    "counts": {e: [c, r] for e, c, r in counts},
    "prices": prices,
    "ids": [priced.event_id, overcharged.event_id, old.event_id],
    "rows": checked.rows,
    "findings": [f.line() for f in checked.findings],
    "repriced": [report.checked, report.unpriced, report.mismatched],
    "mismatches": [[m.event_id, m.recorded_nanousd, m.repriced_nanousd]
                   for m in report.mismatches],
}))
"""


def test_token_kinds_and_prices_are_stored_and_replay_reprices_from_the_store(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), f"chdb://{tmp_path / 'chdb'}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    priced, overcharged, old = result["ids"]
    assert result["counts"] == {priced: [800, 4], overcharged: [0, 0], old: [0, 0]}
    assert result["prices"] == [["openai", "gpt-4o", 2_000_000_000, 1_000_000_000, None]]
    assert (result["rows"], result["findings"]) == (4, [])
    assert result["repriced"] == [3, 0, 1]
    assert result["mismatches"] == [[overcharged, 2_600_000, 2_100_000]]
