"""The migrations in cluster mode (GOVLEDGER_STORE_CLUSTER): each statement of the
single-server schema rewritten for a ClickHouse cluster with Keeper, so one schema is
written once and the cluster's is derived from it (compose/cluster.yml).

- `CREATE TABLE`, `CREATE MATERIALIZED VIEW` and `ALTER TABLE` run `ON CLUSTER`: on every
  replica, whichever replica the sink reached.
- `...MergeTree` engines become `Replicated...MergeTree` under one Keeper path per shard
  and table (`{shard}`, `{replica}` are each server's macros; `{database}`, `{table}` are
  ClickHouse's own): every replica holds every row.
- Tables deduplicating retried inserts (`non_replicated_deduplication_window`) keep the
  same window on the replicated path, where the block ids live in Keeper: an insert a sink
  retries against another replica is still dropped as a repeat.
- `INSERT ... SELECT` (backfills) runs once, on one replica; replication copies its rows.
  Two sinks migrating at once could both run one, so compose/cluster.yml starts the other
  sinks only once the first is up (and migrated).

Pure text in, text out, over our own migration files only (never user input); any other
kind of statement is refused, so a new migration cannot slip past the cluster unchanged.
"""

from __future__ import annotations

import re

from schemas.settings import CLUSTER_NAME

# One Keeper path per shard and table; each server's macros fill {shard} and {replica}.
REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
REPLICA_NAME = "{replica}"
# The same window as the single server's non_replicated_deduplication_window, and long
# enough in time that a sink retrying after a store outage of days is still deduplicated.
REPLICATED_DEDUPLICATION_WINDOW_SECONDS = 7 * 24 * 3600

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_CREATE_TABLE = re.compile(rf"^(CREATE TABLE IF NOT EXISTS {_NAME})(\s)")
_CREATE_VIEW = re.compile(rf"^(CREATE MATERIALIZED VIEW IF NOT EXISTS {_NAME})(\s)")
_ALTER_TABLE = re.compile(rf"^(ALTER TABLE {_NAME})(\s)")
_INSERT_SELECT = re.compile(rf"^INSERT INTO {_NAME}\s+SELECT\s", re.DOTALL)
_ENGINE = re.compile(r"ENGINE = (Replacing|Summing|Aggregating|Collapsing)?MergeTree(\(([^)]*)\))?")
_DEDUPLICATION = re.compile(r"non_replicated_deduplication_window = (\d+)")


class ClusterDdlError(ValueError):
    """A statement or cluster name the cluster mode does not know how to render."""


def check_cluster_name(name: str) -> str:
    """The name, if it is one ClickHouse's remote_servers could declare."""
    if not CLUSTER_NAME.match(name):
        raise ClusterDdlError(f"not a cluster name: {name!r}")
    return name


def _engine(match: re.Match[str]) -> str:
    kind = match.group(1) or ""
    arguments = [f"'{REPLICA_PATH}'", f"'{REPLICA_NAME}'"]
    if match.group(3):
        arguments.append(match.group(3))
    return f"ENGINE = Replicated{kind}MergeTree({', '.join(arguments)})"


def _deduplication(match: re.Match[str]) -> str:
    window = match.group(1)
    return (
        f"{match.group(0)}, replicated_deduplication_window = {window}, "
        f"replicated_deduplication_window_seconds = {REPLICATED_DEDUPLICATION_WINDOW_SECONDS}"
    )


def clustered(statement: str, cluster: str) -> str:
    """One migration statement as it runs on the cluster named `cluster`."""
    on_cluster = rf"\1 ON CLUSTER {check_cluster_name(cluster)}\2"
    text = statement.strip()
    if _CREATE_TABLE.match(text):
        text = _CREATE_TABLE.sub(on_cluster, text, count=1)
        text, engines = _ENGINE.subn(_engine, text)
        if engines != 1:
            raise ClusterDdlError(f"a table without one MergeTree engine: {text[:80]}")
        return _DEDUPLICATION.sub(_deduplication, text)
    if _CREATE_VIEW.match(text):
        if " TO " not in text:  # a view with an inner table would keep it unreplicated
            raise ClusterDdlError(f"a materialized view without TO: {text[:80]}")
        return _CREATE_VIEW.sub(on_cluster, text, count=1)
    if _ALTER_TABLE.match(text):
        return _ALTER_TABLE.sub(on_cluster, text, count=1)
    if _INSERT_SELECT.match(text):
        return text
    raise ClusterDdlError(f"no cluster form for: {text[:80]}")
