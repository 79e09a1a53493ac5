"""Runs the cluster-mode migrations on chDB as far as an engine without Keeper can: started
by tests/component/test_cluster_store.py as a process of its own, because chDB reads its
configuration (the cluster's macros and remote_servers) once per process.

argv: a chDB path and its configuration file. Prints one JSON object: per statement, the
error code ClickHouse answered in each form (0: it ran), and the schemas the single-server
migrations and the cluster's (less what needs Keeper) leave.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import chdb

from sinks.cluster_ddl import REPLICA_NAME, REPLICA_PATH, clustered
from sinks.store import _statements, migrations

CLUSTER = "govledger"
ERROR_CODE = re.compile(r"Code: (\d+)")


def local_form(statement: str) -> str:
    """A clustered statement less what needs Keeper: no ON CLUSTER (the DDL queue lives in
    Keeper) and the engine's unreplicated twin; every other word (settings included) kept."""
    text = statement.replace(f" ON CLUSTER {CLUSTER}", "", 1)
    return re.sub(
        rf"ENGINE = Replicated(\w*)MergeTree\('{re.escape(REPLICA_PATH)}', "
        rf"'{re.escape(REPLICA_NAME)}'(?:, ([^)]*))?\)",
        lambda m: f"ENGINE = {m.group(1)}MergeTree" + (f"({m.group(2)})" if m.group(2) else ""),
        text,
    )


def code_of(connection: Any, sql: str) -> int:
    try:
        connection.query(sql)
    except Exception as exc:  # the engine's answer, whatever it is, is what we report
        found = ERROR_CODE.search(str(exc))
        return int(found.group(1)) if found else -1
    return 0


def schema(connection: Any, database: str) -> list[list[str]]:
    rows = connection.query(
        "SELECT t.name, t.engine, t.sorting_key, t.partition_key, "
        "arrayStringConcat(groupArray(concat(c.name, ' ', c.type, ' ', c.default_expression)), "
        "', ') FROM system.tables AS t LEFT JOIN (SELECT * FROM system.columns ORDER BY "
        "position) AS c ON c.database = t.database AND c.table = t.name "
        f"WHERE t.database = '{database}' GROUP BY t.name, t.engine, t.sorting_key, "
        "t.partition_key ORDER BY t.name",
        "JSONCompact",
    )
    data: list[list[str]] = json.loads(rows.bytes())["data"]
    return data


def main(path: str, config: str) -> None:
    connection = chdb.connect(f"{path}?config-file={config}")  # type: ignore[no-untyped-call]
    statements = [s for _, _, sql in migrations() for s in _statements(sql)]
    cluster = [clustered(s, CLUSTER) for s in statements]
    report: dict[str, Any] = {"statements": len(statements)}
    report["explain_ast"] = [code_of(connection, f"EXPLAIN AST {s}") for s in cluster]
    for database in ("single", "cluster_local", "replicated_probe"):
        connection.query(f"CREATE DATABASE {database}")
    connection.query("USE single")
    report["single"] = [code_of(connection, s) for s in statements]
    connection.query("USE cluster_local")
    report["cluster_local"] = [code_of(connection, local_form(s)) for s in cluster]
    # Each statement as the cluster runs it, ON CLUSTER included, then without ON CLUSTER
    # (as Keeper's DDL queue hands it to each replica): how far the engine gets.
    connection.query("USE replicated_probe")
    report["on_cluster"] = [code_of(connection, s) for s in cluster]
    report["on_a_replica"] = [
        code_of(connection, s.replace(f" ON CLUSTER {CLUSTER}", "", 1)) for s in cluster
    ]
    report["kinds"] = [" ".join(s.split()[:2]) for s in statements]
    report["single_schema"] = schema(connection, "single")
    report["cluster_schema"] = schema(connection, "cluster_local")
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
