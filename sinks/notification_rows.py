"""The sink's own notification attempts (a scheduled export's run, notified by the sink:
govledger/export_notices.py), stored in the `notifications` table as the writer stores the
notifier's: each `NotificationAttempted` sealed into a hash chain of the sink's own
(producer `sink-…`, role sink, authenticated with the org root like every record, so that
`audit verify` walks its chain and checks its authentication), its wire bytes in `raw`, its
auth header in `auth`, one insert per record whose deduplication token is its event id.

Why not publish them to govledger.notifications for the writer to consume: the sink's
broker user and record role may write only dead letters, checkpoints and stored notices
(govledger/broker_acls.py, schemas.authn.ROLES_BY_TOPIC). The sink owns the store, so it
writes the rows where the writer would have.

Records are queued (bounded) and written one at a time by one task. A record is sealed
only when its insert begins, and that insert is tried until the store takes it (an unwell
store is waited out, as the writer waits), so the chain has no gap: a record dropped
because the queue was full was never sealed. What is still queued at stop is logged and
not stored."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import structlog

from schemas import authn, codec
from schemas.authn import Keyring, SignedChain
from schemas.notify_records import NotificationAttempted
from sinks.avro_batch import container_file, insert_columns
from sinks.store_faults import Backoff
from sinks.store_retry import StoreHealth, StoreRetry
from sinks.tables import TABLE_FOR

log = structlog.get_logger(__name__)

TABLE = TABLE_FOR[NotificationAttempted]


class RowStore(Protocol):
    """What of the store the rows need (sinks.store.Store)."""

    async def run(self, function: Any, *args: Any) -> Any:
        """Run a store call off the event loop."""

    def table_columns(self, table: str) -> list[str]:
        """Column names of a table."""
        ...

    def insert_avro(self, table: str, columns: list[str], data: bytes, token: str) -> None:
        """Insert an Avro container file."""


class AttemptRows:
    """Writes the sink's notification attempts, sealed, into the notifications table."""

    def __init__(
        self,
        store: RowStore,
        producer_id: str,
        max_queued: int,
        backoff: Backoff,
        *,
        keyring: Keyring | None = None,
    ) -> None:
        assert max_queued > 0, "the queue is bounded"
        self.store = store
        self.chain = SignedChain(producer_id, "sink", keyring)
        self.health = StoreHealth()
        self._retry = StoreRetry(store, backoff, self.health)
        self._queue: asyncio.Queue[NotificationAttempted] = asyncio.Queue(max_queued)
        self._columns: list[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self.stored = 0
        self.dropped = 0

    async def start(self) -> None:
        """Start writing what is queued."""
        self._task = asyncio.create_task(self._run(), name="notification-rows")

    async def stop(self) -> None:
        """Stop writing; what is still queued is logged, not stored."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not self._queue.empty():
            log.warning("notification attempts not stored at stop", count=self._queue.qsize())

    async def record(self, attempt: NotificationAttempted) -> None:
        """Queue one attempt (never waits: a full queue drops it, logged)."""
        try:
            self._queue.put_nowait(attempt)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning(
                "notification attempt not stored: the queue is full",
                route_id=attempt.route_id,
                source_event_id=attempt.source_event_id,
                status=attempt.status,
            )

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or refused)."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            attempt = await self._queue.get()
            try:
                await self._write(attempt)
            except Exception:  # a bug here must not end the writing for good
                log.exception("notification attempt not stored", route_id=attempt.route_id)
            finally:
                self._queue.task_done()

    def _columns_of(self) -> list[str]:
        entry = codec.schema_for(NotificationAttempted)
        return [*insert_columns(entry, self.store.table_columns(TABLE)), "auth"]

    async def _write(self, attempt: NotificationAttempted) -> None:
        if self._columns is None:
            self._columns = await self._retry.answer(self._columns_of)
        sealed, value = self.chain.seal_encoded(attempt)
        auth = authn.header_of(self.chain.headers(value)) or b""
        data = container_file(codec.schema_of(value), [value], [auth])
        refused = await self._retry.refused(
            self.store.insert_avro, TABLE, self._columns, data, sealed.event_id, table=TABLE, rows=1
        )
        if refused is not None:  # our own record: a bug, and a gap in this chain
            log.error("store refused a notification attempt", error=refused.reason, seq=sealed.seq)
            return
        self.stored += 1
