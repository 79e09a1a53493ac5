"""Reading recorded events back from the store, exactly as they crossed the wire."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator

from schemas import codec
from schemas.records import Event
from sinks.store import Store

PAGE_ROWS = 50_000


def read_events(store: Store, table: str, where: str = "1") -> Iterator[Event]:
    """Decoded events of a table, in (producer_id, seq) order: each producer's records in
    the order it made them, which is what the idempotent folds need."""
    last: tuple[str, int] = ("", 0)
    while True:
        rows = store.query_rows(
            f"SELECT producer_id, seq, hex(raw) FROM {table} "  # noqa: S608
            f"WHERE ({where}) AND (producer_id, seq) > (%(producer)s, %(seq)s) "
            f"ORDER BY producer_id, seq LIMIT {PAGE_ROWS}",
            {"producer": last[0], "seq": last[1]},
        )
        for producer_id, seq, raw_hex in rows:
            yield codec.decode(bytes.fromhex(raw_hex))
            last = (producer_id, seq)
        if len(rows) < PAGE_ROWS:
            return


def read_in_time_order(store: Store, table: str, where: str = "1") -> list[Event]:
    """Decoded events of a table in the order they happened (for logs whose meaning
    spans producers, like a key issued by one admin process and revoked by another)."""
    rows = store.query_rows(
        f"SELECT hex(raw) FROM {table} WHERE {where} "  # noqa: S608
        "ORDER BY occurred_at, producer_id, seq"
    )
    return [codec.decode(bytes.fromhex(raw_hex)) for (raw_hex,) in rows]


def merged_by_producer(events: Iterable[Event]) -> Iterator[Event]:
    """Events read in (producer_id, seq) order, merged into one stream that keeps each
    producer's seq order and otherwise goes by occurred_at: the order a tenant's partition
    held them in, as near as the store can tell (two producers writing one tenant within
    their clocks' skew may come out swapped; one producer's records never do)."""
    streams = [list(group) for _, group in itertools.groupby(events, key=lambda e: e.producer_id)]
    return heapq.merge(*streams, key=lambda e: e.occurred_at)
