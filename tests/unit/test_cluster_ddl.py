"""Cluster mode of the store (GOVLEDGER_STORE_CLUSTER): every shipped migration has a
cluster form (replicated engine, ON CLUSTER), nothing else is let through, and the store
sends those forms and quorum inserts. chDB runs them as far as it can in
tests/component/test_cluster_store.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from schemas.settings import SettingsError, SinkSettings, load
from sinks.cluster_ddl import (
    REPLICA_NAME,
    REPLICA_PATH,
    ClusterDdlError,
    clustered,
)
from sinks.store import Store, _statements, migrations

STATEMENTS = [s for _, _, sql in migrations() for s in _statements(sql)]
ENGINE = re.compile(r"ENGINE = (\w*)MergeTree\b")
OBJECT = re.compile(r"^(?:CREATE (?:TABLE|MATERIALIZED VIEW) IF NOT EXISTS|ALTER TABLE) (\w+)")


def test_every_table_is_replicated_under_keeper_and_every_change_runs_on_the_cluster() -> None:
    tables = 0
    for statement in STATEMENTS:
        rendered = clustered(statement, "govledger")
        head = " ".join(statement.split()[:2])
        if head == "CREATE TABLE":
            tables += 1
            (engine,) = ENGINE.findall(statement)
            assert f"ENGINE = Replicated{engine}MergeTree('{REPLICA_PATH}', '{REPLICA_NAME}'" in (
                rendered
            )
            assert "{shard}" in REPLICA_PATH and REPLICA_NAME == "{replica}"
            window = re.search(r"non_replicated_deduplication_window = (\d+)", statement)
            if window:  # retried inserts stay deduplicated on the replicated path
                assert f"replicated_deduplication_window = {window.group(1)}," in rendered
        if head == "INSERT INTO":  # a backfill: once, on one replica; replication copies it
            assert rendered == statement
        else:
            named = OBJECT.match(statement)
            assert named is not None, statement[:80]
            assert f"{named.group(1)} ON CLUSTER govledger " in rendered, statement[:80]
    assert tables == sum(s.startswith("CREATE TABLE") for s in STATEMENTS) > 10


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE lineage",
        "CREATE TABLE lineage (a UInt8) ENGINE = MergeTree ORDER BY a",  # no IF NOT EXISTS
        "CREATE TABLE IF NOT EXISTS scratch (a UInt8) ENGINE = Memory",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS v ENGINE = MergeTree ORDER BY a AS SELECT 1 a",
        "INSERT INTO lineage VALUES (1)",
        "RENAME TABLE a TO b",
    ],
)
def test_a_statement_without_a_cluster_form_is_refused(statement: str) -> None:
    with pytest.raises(ClusterDdlError):
        clustered(statement, "govledger")


@pytest.mark.parametrize("name", ["", "a b", "x; DROP TABLE lineage", "1st", "c'", "a" * 64])
def test_a_cluster_name_that_is_no_identifier_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ClusterDdlError):
        clustered("ALTER TABLE lineage ADD COLUMN IF NOT EXISTS x UInt8", name)
    with pytest.raises(SettingsError, match="GOVLEDGER_STORE_CLUSTER"):
        load(
            SinkSettings,
            environ={
                "GOVLEDGER_DATA_DIR": str(tmp_path),
                "GOVLEDGER_STORE_CLUSTER": name or " ",
                "GOVLEDGER_CLICKHOUSE_DSN": "http://clickhouse-1:8123/default",
            },
        )


def test_cluster_mode_needs_a_clickhouse_server(tmp_path: Path) -> None:
    environ = {"GOVLEDGER_DATA_DIR": str(tmp_path), "GOVLEDGER_STORE_CLUSTER": "govledger"}
    with pytest.raises(SettingsError, match="needs a ClickHouse server"):
        load(SinkSettings, environ=environ)  # the embedded chDB has no Keeper
    served = {**environ, "GOVLEDGER_CLICKHOUSE_DSN": "http://clickhouse-1:8123/default"}
    assert load(SinkSettings, environ=served).store_cluster == "govledger"


class RecordingClient:
    """Stands in for clickhouse-connect's client: records what the store sends."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.inserts: list[dict[str, Any]] = []

    def command(self, sql: str, parameters: Any = None) -> None:
        self.commands.append(sql)

    def query(self, sql: str, **_: Any) -> Any:
        return type("Result", (), {"result_rows": []})()

    def insert(self, table: str, rows: Any, column_names: Any) -> None:
        self.inserts.append({"table": table})

    def raw_insert(self, table: str, columns: Any, **kwargs: Any) -> None:
        self.inserts.append({"table": table, **kwargs})

    def close(self) -> None:
        pass


def test_the_store_migrates_in_cluster_form_and_inserts_with_a_quorum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = RecordingClient()
    monkeypatch.setattr(clickhouse_connect, "get_client", lambda **_: client)
    store = Store("http://clickhouse-1:8123/default", cluster="govledger")
    try:
        applied = store.migrate()
        store.insert_avro("lineage", ["event_id"], b"avro", "token-1")
    finally:
        store.close()
    assert len(applied) == len(migrations())
    # The record of applied migrations is replicated too: every sink sees one history.
    assert client.commands[0].startswith("CREATE TABLE IF NOT EXISTS schema_migrations ON CLUSTER")
    assert "ReplicatedMergeTree" in client.commands[0]
    assert client.commands[1:] == [clustered(s, "govledger") for s in STATEMENTS]
    settings = client.inserts[-1]["settings"]
    assert settings["insert_quorum"] == "auto"
    assert settings["insert_deduplication_token"] == "token-1"
