"""Reading the chained rows of the store for verify: every table's `raw` (and the chain
links': duplicates kept as chain evidence, sinks.links), per producer in seq order, a page
at a time (see replay.verify)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sinks.tables import CHAINED_TABLES

PAGE_ROWS = 10_000

Query = Callable[[str], list[list[Any]]]
"""Runs a read-only SQL query; rows as lists of values (strings or numbers)."""


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One stored row of a chain: where it is stored and the bytes the producer sealed."""

    table: str
    producer_id: str
    seq: int
    raw: bytes


def quote(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _union(tables: Iterable[str]) -> str:
    return " UNION ALL ".join(
        f"SELECT producer_id, seq, tenant_id, {quote(t)} AS tbl, raw FROM {t}"  # noqa: S608
        for t in tables
    )


def stored_rows(
    query: Query,
    *,
    tenant_id: str | None = None,
    tables: Iterable[str] = CHAINED_TABLES,
    page_rows: int = PAGE_ROWS,
    producers: Collection[str] | None = None,
) -> Iterator[StoredRow]:
    """Every chained row of every table, in (producer_id, seq) order, a page at a time.
    With a tenant: every row of the producers that wrote at least one of its records.
    With producers: only theirs."""
    union = _union(tables)
    scope = "1"
    if tenant_id is not None:
        scope = (
            f"producer_id IN (SELECT producer_id FROM ({union}) "  # noqa: S608
            f"WHERE tenant_id = {quote(tenant_id)})"
        )
    if producers is not None:
        listed = ", ".join(quote(p) for p in sorted(producers)) or "''"
        scope += f" AND producer_id IN ({listed})"
    select = f"SELECT producer_id, toString(seq), tbl, hex(raw) FROM ({union}) "  # noqa: S608

    def read(where: str, limit: str = "") -> list[StoredRow]:
        return [
            StoredRow(str(t), str(p), int(s), bytes.fromhex(str(h)))
            for p, s, t, h in query(f"{select} WHERE {scope} AND {where} {limit}")
        ]

    after = "1"
    while True:
        page = read(after, f"ORDER BY producer_id, seq LIMIT {page_rows}")
        if len(page) < page_rows:
            yield from page
            return
        top = (page[-1].producer_id, page[-1].seq)
        if (page[0].producer_id, page[0].seq) == top:
            # One (producer, seq) fills the page: read all of its rows at once.
            yield from read(f"producer_id = {quote(top[0])} AND seq = {top[1]}")
            last = top
        else:
            # Rows of the page's last (producer, seq) may go on: read them with the next.
            kept = [r for r in page if (r.producer_id, r.seq) != top]
            yield from kept
            last = (kept[-1].producer_id, kept[-1].seq)
        after = f"(producer_id, seq) > ({quote(last[0])}, {last[1]})"


def rows_at(query: Query) -> Callable[[str, int], list[StoredRow]]:
    """Every stored row of one producer at one seq, from every chained table."""

    def read(producer_id: str, seq: int) -> list[StoredRow]:
        sql = (
            f"SELECT producer_id, toString(seq), tbl, hex(raw) FROM ({_union(CHAINED_TABLES)}) "  # noqa: S608
            f"WHERE producer_id = {quote(producer_id)} AND seq = {int(seq)}"
        )
        return [
            StoredRow(str(t), str(p), int(n), bytes.fromhex(str(h))) for p, n, t, h in query(sql)
        ]

    return read
