"""The store beyond one machine, on the embedded ClickHouse engine (chDB).

Cluster-mode migrations (sinks/cluster_ddl.py) run as far as an engine without Keeper
can: every statement parses; the whole schema, less ON CLUSTER and the replicated engines,
runs and equals the single server's; every replicated table passes every check of its
CREATE (engine, Keeper path, macros, columns, keys, settings) up to the Keeper connection.
What cannot run here: ON CLUSTER itself (chDB refuses distributed DDL, code 392) and a
replicated table (no Keeper, code 225), hence the ALTERs, views and backfills after them.

Two sinks over one store: a partition moves from one to the other mid-batch (the first's
insert landed, its offset commit was refused by the rebalance), both keep writing, and each
record lands exactly once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from confluent_kafka import Message

from schemas.codec import event_id_of
from schemas.ids import uuid7
from schemas.settings import SinkSettings, load
from schemas.topics import CONTROL, LINEAGE
from sinks.store import Store
from sinks.writer import SinkWriter
from tests.unit.builders import call, funding, signed_message

ROOT = Path(__file__).resolve().parents[2]
# The macros and cluster every ClickHouse server of compose/cluster.yml declares
# (compose/clickhouse/cluster/cluster.xml), without Keeper.
CHDB_CONFIG = """<clickhouse>
<macros><shard>01</shard><replica>clickhouse-1</replica></macros>
<remote_servers><govledger><shard><replica><host>localhost</host><port>9000</port>
</replica></shard></govledger></remote_servers>
</clickhouse>
"""
QUERY_IS_PROHIBITED = 392  # chDB: "Replicated DDL queries are disabled"
NO_ZOOKEEPER = 225


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The cluster migrations on chDB, in a process of its own (chDB reads its config
    once per process; see tests/component/cluster_migrations_probe.py)."""
    folder = tmp_path_factory.mktemp("cluster-chdb")
    config = folder / "config.xml"
    config.write_text(CHDB_CONFIG)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.component.cluster_migrations_probe",
            str(folder / "chdb"),
            str(config),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def test_every_cluster_migration_statement_parses(probe: dict[str, Any]) -> None:
    assert probe["statements"] > 50
    assert probe["explain_ast"] == [0] * probe["statements"]


def test_the_cluster_schema_less_keeper_runs_and_is_the_single_servers(
    probe: dict[str, Any],
) -> None:
    assert probe["single"] == [0] * probe["statements"]
    # Every statement with ON CLUSTER dropped and each engine's unreplicated twin, the
    # replicated deduplication settings kept: ClickHouse runs them all...
    assert probe["cluster_local"] == [0] * probe["statements"]
    # ...and they leave the same tables, engines, keys, columns and defaults.
    assert probe["cluster_schema"] == probe["single_schema"]
    assert len(probe["single_schema"]) >= 16


def test_each_replicated_table_passes_every_check_but_keeper(probe: dict[str, Any]) -> None:
    creates = [i for i, kind in enumerate(probe["kinds"]) if kind == "CREATE TABLE"]
    # A wrong engine name, argument, macro, column, key or setting fails before Keeper
    # with another code (UNKNOWN_STORAGE, BAD_ARGUMENTS, NO_ELEMENTS_IN_CONFIG, ...).
    assert [probe["on_a_replica"][i] for i in creates] == [NO_ZOOKEEPER] * len(creates)
    # The distributed DDL queue lives in Keeper: chDB refuses ON CLUSTER outright.
    assert {probe["on_cluster"][i] for i in creates} == {QUERY_IS_PROHIBITED}


# --- two sinks, one store -----------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(f"chdb://{tmp_path_factory.mktemp('two-sinks') / 'chdb'}")
    store.migrate()
    yield store
    store.close()


class Partition:
    """One partition's log: records at offsets, and the group's committed offset."""

    def __init__(self, tp: TopicPartition, records: list[Any]) -> None:
        self.tp = tp
        self.messages = [
            Message(tp.topic, tp.partition, offset, None, m.value, m.headers)
            for offset, m in enumerate(records)
        ]
        self.committed = 0

    def read(self, start: int, end: int) -> list[Any]:
        return self.messages[start:end]


def sink(store: Store) -> SinkWriter:
    settings = load(SinkSettings, environ={}, kafka_bootstrap="127.0.0.1:1", sink_batch_rows=100)
    return SinkWriter(settings, store, dlq=None)  # type: ignore[arg-type]  # no dead letters


def lineage_records(tenant: str, producer: str, count: int) -> list[Any]:
    return [
        signed_message(
            LINEAGE.name,
            call(tenant_id=tenant, producer_id=producer, seq=seq, event_id=uuid7()),
        )
        for seq in range(1, count + 1)
    ]


def control_records(tenant: str, count: int) -> list[Any]:
    return [
        signed_message(
            CONTROL.name,
            funding(tenant_id=tenant, seq=seq, event_id=uuid7(), amount_nanousd=seq),
        )
        for seq in range(1, count + 1)
    ]


def stored(store: Store, table: str, tenant: str) -> dict[str, int]:
    rows = store.query_rows(
        f"SELECT toString(event_id), count() FROM {table} "
        "WHERE tenant_id = %(tenant)s GROUP BY event_id",
        {"tenant": tenant},
    )
    return {str(event_id): int(copies) for event_id, copies in rows}


def ids_of(partition: Partition) -> set[str]:
    return {event_id_of(m.value() or b"") for m in partition.messages}


async def test_a_partition_moving_between_sinks_mid_batch_lands_each_record_once(
    store: Store,
) -> None:
    tenant = f"moving-{uuid7()[-8:]}"
    moving = Partition(TopicPartition(LINEAGE.name, 0), lineage_records(tenant, "gateway-a1", 250))
    staying = Partition(TopicPartition(LINEAGE.name, 1), lineage_records(tenant, "gateway-b2", 120))
    control = Partition(TopicPartition(CONTROL.name, 0), control_records(tenant, 40))
    first, second = sink(store), sink(store)
    # The first sink owns all three partitions and writes its first batch; the group
    # commits what it acknowledged.
    first.reassigned([moving.tp, staying.tp, control.tp])
    await first.write(
        {
            moving.tp: moving.read(0, 80),
            staying.tp: staying.read(0, 50),
            control.tp: control.read(0, 10),
        }
    )
    moving.committed, staying.committed, control.committed = 80, 50, 10
    # Its next batch is inserted, but the group rebalanced meanwhile: the commit is refused
    # (CommitFailedError). `moving` now belongs to the second sink, the first keeps
    # `staying` and `control`; each sink reads its partitions again from their last
    # committed offsets, past what the first had inserted.
    await first.write(
        {
            moving.tp: moving.read(80, 200),
            staying.tp: staying.read(50, 90),
            control.tp: control.read(10, 25),
        }
    )
    first.reassigned([staying.tp, control.tp])
    second.reassigned([moving.tp])
    # Both sinks write at once into the one store (its calls run one at a time).
    await asyncio.gather(
        second.write({moving.tp: moving.read(moving.committed, 250)}),
        first.write(
            {
                staying.tp: staying.read(staying.committed, 120),
                control.tp: control.read(control.committed, 40),
            }
        ),
    )
    # A record written twice by a producer retry on the moved partition, read by the
    # second sink in a later batch, is dropped too.
    await second.write({moving.tp: [moving.messages[249]]})

    lineage = stored(store, "lineage", tenant)
    assert set(lineage) == ids_of(moving) | ids_of(staying)
    assert set(lineage.values()) == {1}  # each record exactly once
    control_rows = stored(store, "control_events", tenant)
    assert set(control_rows) == ids_of(control) and set(control_rows.values()) == {1}
    assert first.stats.rows_inserted + second.stats.rows_inserted == 250 + 120 + 40
    # What the first had inserted uncommitted was skipped by whichever sink read it again.
    assert second.stats.rows_inserted == 250 - 200
    assert first.stats.rows_inserted == 200 + 120 + 40
