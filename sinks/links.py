"""Chain links: duplicates by event_id kept as chain evidence, not data (migration 010).

A processor that re-derives a record after a restart (a threshold alert, a breaker state:
deterministic event ids) seals it again in its new chain. The sink stores the event once,
by event id, and drops the copy; without its bytes the new chain would show a gap that
`audit verify` cannot tell from a deletion. So a dropped copy that sits at another place
in a chain than the stored record (another producer, or another seq) is written to
`chain_links` with its sealed bytes and auth header; a byte-identical resend of the same
producer and seq (a redelivery, an outbox resend) is the stored record itself and needs
nothing. Writing a link is idempotent: links already stored (same producer, seq and hash)
are not written again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from schemas import codec
from schemas.avro_writer import ENVELOPE_FIELDS
from sinks.store import Store
from sinks.store_retry import StoreRetry
from sinks.tables import LINKS_TABLE

log = structlog.get_logger(__name__)
# Event ids per look-up query (as the writer's own look-ups).
LOOKUP_IDS = 2_000

LINK_COLUMNS = (
    *ENVELOPE_FIELDS,
    "topic",
    "table_name",
    "raw",
    "auth",
)
LinkKey = tuple[str, int, str]
"""(producer_id, seq, record_hash) of a link: what makes two links the same."""


@dataclass(frozen=True, slots=True)
class DroppedCopy:
    """A record the sink dropped as a duplicate by event id, with where it came from."""

    topic: str
    table: str
    value: bytes
    auth: bytes

    @property
    def event_id(self) -> str:
        """The copy's event id when it is a UUID (the only kind a table stores), else ''."""
        try:
            return str(uuid.UUID(codec.event_id_of(self.value)))
        except (codec.DecodeError, UnicodeDecodeError, ValueError):
            return ""


def place_of(value: bytes) -> tuple[str, int] | None:
    """(producer_id, seq) the bytes were sealed at; None when they are no record of ours."""
    try:
        envelope = codec.read_envelope(value)
    except (codec.DecodeError, UnicodeDecodeError):
        return None
    return envelope.producer_id, envelope.seq


def link_row(copy: DroppedCopy) -> tuple[LinkKey, tuple[Any, ...]] | None:
    """The link's key and its row in LINK_COLUMNS' order; None when the bytes are no
    record of ours with a UUID event id (nothing a chain could hold)."""
    try:
        e = codec.read_envelope(copy.value)
        event_id = uuid.UUID(e.event_id)
    except (codec.DecodeError, UnicodeDecodeError, ValueError):
        return None
    row = (
        event_id,
        e.event_type,
        datetime.fromtimestamp(e.occurred_at / 1000, tz=UTC),
        e.tenant_id,
        e.producer_id,
        e.seq,
        e.prev_hash,
        e.record_hash,
        copy.topic,
        copy.table,
        copy.value,
        copy.auth,
    )
    return (e.producer_id, e.seq, e.record_hash), row


def new_link_rows(copies: Iterable[DroppedCopy], stored: set[LinkKey]) -> list[tuple[Any, ...]]:
    """Rows of the links not yet stored, each once."""
    seen = set(stored)
    rows = []
    for copy in copies:
        built = link_row(copy)
        if built is None or built[0] in seen:
            continue
        seen.add(built[0])
        rows.append(built[1])
    return rows


async def keep_links(
    retry: StoreRetry, store: Store, dropped: list[DroppedCopy]
) -> tuple[int, int]:
    """Write the links among dropped copies that are not stored yet, waiting out an unwell
    store; (links written, links the store refused)."""
    ids = list({copy.event_id for copy in dropped if copy.event_id})
    stored: set[LinkKey] = set()
    for start in range(0, len(ids), LOOKUP_IDS):
        rows = await retry.answer(
            store.query_rows,
            f"SELECT producer_id, seq, record_hash FROM {LINKS_TABLE} "  # noqa: S608
            "WHERE event_id IN %(ids)s",
            {"ids": ids[start : start + LOOKUP_IDS]},
        )
        stored.update((str(p), int(s), str(h)) for p, s, h in rows)
    rows = new_link_rows(dropped, stored)
    if not rows:
        return 0, 0
    refused = await retry.refused(
        store.insert_rows, LINKS_TABLE, rows, LINK_COLUMNS, table=LINKS_TABLE, rows=len(rows)
    )
    if refused is not None:  # the data is stored; only the evidence of its copy is not
        log.warning("chain links refused", rows=len(rows), reason=refused.reason)
        return 0, len(rows)
    log.info("duplicates kept as chain links", rows=len(rows))
    return len(rows), 0
