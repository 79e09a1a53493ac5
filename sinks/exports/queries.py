"""What an export reads: each export type's table, columns and keyset, and the SQL of its
count and of one page (keyset pagination on the table's sort key, so each page is a range
read of the primary index)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from sinks.exports import focus

# Rows per page read from the store. A lineage row with its wire bytes (base64) is about
# 1-2 KB, so a page is some tens of MB in Arrow; the cap keeps a misconfigured page size
# from turning one read into a giant query on the shared store thread.
PAGE_ROWS = 20_000
MAX_PAGE_ROWS = 50_000


@dataclass(frozen=True, slots=True)
class Key:
    """One column of the keyset: the table column (`expr`), its name in a page, and how
    its last value is passed back as a query parameter."""

    expr: str
    column: str
    kind: Literal["str", "ms", "int", "uuid"]


@dataclass(frozen=True, slots=True)
class ExportType:
    """An export type: the table counted, what a page selects and from where, and the keyset
    (the table's sort key, so each page is a range read of the primary index)."""

    name: str
    table: str
    source: str
    columns: tuple[str, ...]
    keys: tuple[Key, ...]
    time_column: str = "occurred_at"
    # The columns the manifest reads each producer's hash-chain head from.
    chain_columns: tuple[str, str, str] = ("producer_id", "seq", "record_hash")
    # The published format the rows follow, when there is one, and its metadata of the
    # file (the manifest carries both).
    standard: str | None = None
    standard_metadata: Mapping[str, Any] | None = field(default=None, hash=False)
    # When the rows come from several tables: one `SELECT … WHERE …` per table, each with
    # the columns and the scope and key columns under the same names (`source` unused).
    branches: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        """The exported columns' names, in order."""
        return [c.rsplit(" AS ", 1)[-1] for c in self.columns]


# Every row carries the envelope (event_id … record_hash) and the record's wire bytes
# (`raw_base64`): with them a recipient can re-verify the hash chains without us.
ENVELOPE = (
    "toString(t.event_id) AS event_id",
    "t.event_type AS event_type",
    "t.occurred_at AS occurred_at",
    "t.tenant_id AS tenant_id",
    "t.producer_id AS producer_id",
    "t.seq AS seq",
    "t.prev_hash AS prev_hash",
    "t.record_hash AS record_hash",
)
RAW = "base64Encode(t.raw) AS raw_base64"
TIME_KEYS = (
    Key("t.tenant_id", "tenant_id", "str"),
    Key("t.occurred_at", "occurred_at", "ms"),
    Key("t.event_id", "event_id", "uuid"),
)


def _fields(names: str) -> tuple[str, ...]:
    """`t.x AS x` for each space-separated name."""
    return tuple(f"t.{name} AS {name}" for name in names.split())


# The first resolution of each escalation (as the escalations report reads it), as of the
# job's snapshot; resolutions are one per escalation, so this stays small next to a page.
RESOLUTIONS = (
    "SELECT escalation_id, argMin(decision, occurred_at) AS decision, "
    "argMin(resolved_by, occurred_at) AS resolved_by, min(occurred_at) AS resolved_at "
    "FROM control_events WHERE event_type = 'escalation.resolved' "
    "AND ({all:Bool} OR tenant_id = {tenant:String}) "
    "AND ingested_at <= fromUnixTimestamp64Milli({as_of_ms:Int64}, 'UTC') "
    "GROUP BY escalation_id"
)

EXPORT_TYPES: dict[str, ExportType] = {
    "events": ExportType(
        name="events",
        table="lineage",
        source="lineage AS t",
        columns=(
            *ENVELOPE,
            *_fields(
                "trace_id span_id parent_span_id team_id user_id key_id wallet_id region "
                "model_requested model_selected provider selection_reason attempts "
                "policies_applied guardrails_triggered decision prompt_tokens completion_tokens "
                "usage_source cost_nanousd reserved_nanousd latency_ms ttft_ms "
                "gateway_overhead_ms http_status error_code stream request_sha256 "
                "response_sha256 api cached_prompt_tokens cache_write_tokens "
                "audio_prompt_tokens image_prompt_tokens reasoning_tokens "
                "audio_completion_tokens"
            ),
            RAW,
        ),
        keys=TIME_KEYS,
    ),
    "escalations": ExportType(
        name="escalations",
        table="escalation_events",
        source=f"escalation_events AS t LEFT JOIN ({RESOLUTIONS}) AS r "
        "ON r.escalation_id = t.escalation_id",
        columns=(
            *ENVELOPE,
            *_fields(
                "escalation_id trace_id team_id key_id policy_pack category priority mode "
                "reason model_requested request_sha256"
            ),
            "if(r.decision = '', 'open', 'resolved') AS status",
            "nullIf(r.decision, '') AS decision",
            "nullIf(r.resolved_by, '') AS resolved_by",
            "if(r.decision = '', NULL, r.resolved_at) AS resolved_at",
            RAW,
        ),
        keys=TIME_KEYS,
    ),
    "wallets": ExportType(
        name="wallets",
        table="wallet_state",
        source="wallet_state AS t",
        columns=(
            *ENVELOPE,
            *_fields(
                "wallet_id team_id balance_nanousd funded_nanousd spent_nanousd entry_count "
                "last_event_id last_occurred_at period_start_at period_spent_nanousd "
                "allocated_in_nanousd allocated_out_nanousd refunded_nanousd corrected_nanousd "
                "overdraft_limit_nanousd rejected_count last_decided_event_id last_decision "
                "revision"
            ),
            RAW,
        ),
        keys=(
            Key("t.tenant_id", "tenant_id", "str"),
            Key("t.wallet_id", "wallet_id", "str"),
            Key("t.entry_count", "entry_count", "int"),
            Key("t.event_id", "event_id", "uuid"),
        ),
    ),
    "focus": ExportType(
        name="focus",
        table="lineage+control_events",
        source="",
        branches=focus.BRANCHES,
        columns=focus.FOCUS_COLUMNS,
        keys=(
            Key("t.tenant_id", "x_TenantId", "str"),
            Key("t.occurred_at", focus.TIME_COLUMN, "ms"),
            Key("t.event_id", "x_EventId", "uuid"),
        ),
        time_column=focus.TIME_COLUMN,
        chain_columns=focus.CHAIN_COLUMNS,
        standard=focus.STANDARD,
        standard_metadata=focus.metadata(),
    ),
}

SCOPE = (
    "({all:Bool} OR t.tenant_id = {tenant:String}) "
    "AND t.occurred_at >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC') "
    "AND t.occurred_at < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')"
)


def count_sql(spec: ExportType) -> str:
    """Rows in the window and the store's clock now (the job's snapshot: rows ingested
    later are left out of every page, so the count is what the pages will hold)."""
    return "SELECT count(), toUnixTimestamp64Milli(now64(3)) " + _rows_where(
        spec, f"{spec.table} AS t", f"{SCOPE} AND t.ingested_at <= now64(3)"
    )


def _rows_where(spec: ExportType, source: str, where: str, page: str = "") -> str:
    """`FROM source WHERE where`; for rows from several tables, the condition (and the
    page's order and limit) goes into each branch instead, where the engine reads its table
    in sort-key order and stops at the page, rather than sorting every remaining row of the
    union for each page."""
    if not spec.branches:
        return f"FROM {source} WHERE {where}"
    parts = " UNION ALL ".join(f"({branch} AND {where}{page})" for branch in spec.branches)
    return f"FROM ({parts}) AS t"


def _key_param(key: Key, index: int) -> str:
    name = f"k{index}"
    return {
        "str": f"{{{name}:String}}",
        "ms": f"fromUnixTimestamp64Milli({{{name}:Int64}}, 'UTC')",
        "int": f"{{{name}:Int64}}",
        "uuid": f"toUUID({{{name}:String}})",
    }[key.kind]


def page_sql(spec: ExportType, rows: int, *, after: bool) -> str:
    """One page: rows of the window after the last key (parameters `k0…`), in key order.
    A record stored twice (same key) comes twice, side by side: the job drops the second
    (`distinct_keys`), as the strict `>` drops it across pages. (Not `LIMIT 1 BY` the key
    here: with it the engine reads every row after the key for each page, so an export
    took time quadratic in its rows; bench/growth.py measured it.)"""
    assert 0 < rows <= MAX_PAGE_ROWS, rows
    keys = ", ".join(k.expr for k in spec.keys)
    where = f"{SCOPE} AND t.ingested_at <= fromUnixTimestamp64Milli({{as_of_ms:Int64}}, 'UTC')"
    if after:
        values = ", ".join(_key_param(k, i) for i, k in enumerate(spec.keys))
        where += f" AND ({keys}) > ({values})"
    page = f" ORDER BY {keys} LIMIT {int(rows)}"
    return f"SELECT {', '.join(spec.columns)} {_rows_where(spec, spec.source, where, page)}{page}"


def ms_values(column: pa.ChunkedArray | pa.Array) -> pa.Array | pa.ChunkedArray:
    """A timestamp column as epoch milliseconds (int64)."""
    return column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())


def distinct_keys(page: pa.Table, spec: ExportType) -> pa.Table:
    """The page without each row whose key equals the row before it (a record stored
    twice; the page is in key order, so copies are side by side)."""
    if page.num_rows < 2:
        return page
    changed = None
    for key in spec.keys:
        column = page.column(key.column)
        differs = pc.fill_null(
            pc.not_equal(column.slice(1), column.slice(0, page.num_rows - 1)), True
        )
        changed = differs if changed is None else pc.or_(changed, differs)
    assert changed is not None, "every export type has a key"
    if pc.all(changed).as_py():
        return page
    return page.filter(pa.concat_arrays([pa.array([True]), *changed.chunks]))


def last_key(page: pa.Table, spec: ExportType) -> dict[str, Any]:
    """The parameters `k0…` of the next page: the last row's key."""
    assert page.num_rows > 0
    at = page.num_rows - 1
    found: dict[str, Any] = {}
    for index, key in enumerate(spec.keys):
        column = page.column(key.column)
        if key.kind == "ms":
            found[f"k{index}"] = int(ms_values(column.slice(at, 1))[0].as_py())
        elif key.kind == "int":
            found[f"k{index}"] = int(column[at].as_py())
        else:
            found[f"k{index}"] = str(column[at].as_py())
    return found


# --- writing pages ------------------------------------------------------------------------
