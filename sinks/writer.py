"""Topics into ClickHouse. Order per batch: check, dedupe, insert, then commit offsets.

Records are not decoded here: the writer checks each header, cuts the event_id, and
hands ClickHouse an Avro container file per schema (see `avro_batch`). A batch
redelivered after a crash (inserted, offsets not committed) leaves no duplicate rows:
after a partition is (re)assigned, its first records are looked up by event_id (see
`_drop_already_written`). Producer retries that wrote a record twice are dropped by a
window of recent ids. In-process insert retries reuse a deduplication token.

No record stops the sink (see `sinks/store_faults.py` for which failure is whose): a
record the store refuses is dead-lettered with the store's reason, alone (its batch is
split until the refused record stands alone, so its batch-mates are stored); a store that
is unwell (refused connection, timeout, full disk) is tried again with backoff, forever,
with no offset committed past the records waiting for it. While it waits the consumer is
paused but keeps polling, so the group keeps the sink's partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import TopicPartition

from schemas import codec
from schemas.dead_letter import dead_letter
from schemas.group_consumer import CommitError, GroupConsumer, client_config
from schemas.ids import now_ms
from schemas.kafka_security import KafkaSecurity
from schemas.publisher import Publisher
from schemas.records import StoredRange
from schemas.settings import SinkSettings
from schemas.topics import (
    ALERTS,
    BREAKER_STATE,
    CHECKPOINTS,
    CONTROL,
    DLQ,
    ESCALATIONS,
    LINEAGE,
    NOTIFICATIONS,
    SLA,
    WALLET_STATE,
)
from sinks.avro_batch import container_file, insert_columns
from sinks.links import DroppedCopy, keep_links, place_of
from sinks.metrics import SinkMetrics
from sinks.prepare import RECENT_IDS_PER_PARTITION, PendingBatch, Prepared, Preparing, RecentIds
from sinks.store import Store
from sinks.store_faults import Backoff, StoreFault, record_fault
from sinks.store_retry import StoreHealth, StoreRetry

log = structlog.get_logger(__name__)

SINK_TOPICS = (
    LINEAGE.name,
    CONTROL.name,
    WALLET_STATE.name,
    ESCALATIONS.name,
    BREAKER_STATE.name,
    SLA.name,
    ALERTS.name,
    CHECKPOINTS.name,
    DLQ.name,
    NOTIFICATIONS.name,
)
CONSUMER_GROUP = "govledger-sink"
# How long a poll waits for a write that holds a full batch before it pauses the
# consumer and polls anyway (an unwell store must not cost the sink its partitions:
# a consumer that does not poll for max_poll_interval_ms leaves the group).
STALLED_WRITE_WAIT_S = 1.0
# Only ids of this shape are looked up: the column is a UUID, so no other id can be
# stored, and one malformed id would make the whole look-up fail.
UUID_TEXT = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}", re.IGNORECASE)
# Poll timeout while a write is in flight and held records are already due.
WRITING_POLL_MS = 10
# Ids per look-up query: keeps each query far under ClickHouse's max_query_size (256 KiB).
DEDUPE_QUERY_IDS = 2_000


@dataclass(slots=True)
class SinkStats:
    """Counters the query API exposes."""

    rows_inserted: int = 0
    dead_lettered: int = 0
    last_insert_ms: int = 0
    # Offset commits the broker refused (the rows were stored; a redelivery is deduped).
    commit_failures: int = 0
    # Duplicates by event_id kept as chain links (sinks.links), and links the store refused.
    links_kept: int = 0
    links_refused: int = 0
    store: StoreHealth = field(default_factory=StoreHealth)


class _Rebalance:
    def __init__(self, writer: SinkWriter) -> None:
        self._writer = writer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Write and commit what is buffered while the partitions are still ours.
        await self._writer.flush()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._writer.reassigned(assigned)


class SinkWriter:
    """Consumes every audit topic and writes its rows, exactly once per event."""

    def __init__(
        self,
        settings: SinkSettings,
        store: Store,
        dlq: Publisher,
        on_committed: Callable[[list[StoredRange]], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        # Told each batch's stored ranges once it is stored and its offsets committed
        # (sinks/stored.py).
        self.on_committed = on_committed
        self.store = store
        self.dlq = dlq
        self.stats = SinkStats()
        self.metrics = SinkMetrics(settings.metrics_enabled)  # docs/metrics.md
        # Partitions (re)assigned recently: offset up to which their records are checked.
        self._unverified: dict[TopicPartition, int | None] = {}
        # How far past its first record after a (re)assignment a partition is checked: a
        # previous owner had at most one write in flight and one batch held, never more.
        self._verify_records = 2 * settings.sink_batch_rows
        self._recent = RecentIds(RECENT_IDS_PER_PARTITION)
        self._retry = StoreRetry(
            store,
            Backoff(settings.sink_store_retry_base_ms, settings.sink_store_retry_max_ms),
            self.stats.store,
        )
        self._columns_by_schema: dict[bytes, list[str]] = {}
        self._held: dict[TopicPartition, list[Any]] = {}
        self._preparing = Preparing()
        self._held_count = 0
        self._held_since: float | None = None
        self._writing: asyncio.Task[None] | None = None
        # The commit of the last batch stored (it waits for the commits before it).
        self._committing: asyncio.Task[None] | None = None
        self._consumer: Any = None
        # Next offset to read per partition, as this process last committed it.
        self._committed: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        """Join the sink's consumer group."""
        config = client_config(
            self.settings.kafka_bootstrap,
            group_id=CONSUMER_GROUP,
            client_id="govledger-sink",
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            fetch_max_wait_ms=min(self.settings.sink_flush_ms, self.settings.sink_fetch_wait_ms),
            security=KafkaSecurity.of(self.settings),
        )
        self._consumer = GroupConsumer(config)
        self._consumer.subscribe(list(SINK_TOPICS), listener=_Rebalance(self))
        await self._consumer.start()

    def reassigned(self, assigned: Any) -> None:
        """Partitions (re)assigned: their first records may already be in the store."""
        self._unverified.update(dict.fromkeys(assigned))

    async def run(self) -> None:
        """Consume, write and commit until cancelled."""
        while True:
            await self.step(self.settings.sink_flush_ms)

    async def step(self, timeout_ms: int) -> int:
        """One poll. Records are held until `sink_flush_ms` after the first of them, or
        until `sink_batch_rows` are held: each chDB insert has a fixed cost, so fewer,
        larger inserts keep the sink cheap at low rates. Returns the records polled."""
        if self._writing is not None and self._writing.done():
            await self._finish_writing()  # surfaces a failed write now, not at the next flush
        if await self._write_stalled():
            return 0
        loop = asyncio.get_running_loop()
        wait_ms = timeout_ms
        if self._held_since is not None:
            age_ms = (loop.time() - self._held_since) * 1000
            wait_ms = max(0, min(timeout_ms, int(self.settings.sink_flush_ms - age_ms)))
            if self._writing is not None and not self._writing.done():
                wait_ms = max(wait_ms, WRITING_POLL_MS)  # no busy loop while the write runs
        room = max(self.settings.sink_batch_rows - self._held_count, 1)
        polled = self._hold(await self._consumer.getmany(timeout_ms=wait_ms, max_records=room))
        # While a write is in flight, keep gathering: under load batches grow towards
        # sink_batch_rows instead of queueing many small inserts behind each other (a
        # full batch waits for the write at the next step: see `_write_stalled`).
        writing = self._writing is not None and not self._writing.done()
        if (
            self._held_since is not None
            and not writing
            and (
                self._held_count >= self.settings.sink_batch_rows
                or (loop.time() - self._held_since) * 1000 >= self.settings.sink_flush_ms
            )
        ):
            await self.flush(wait=False)
        return polled

    def _hold(self, batches: dict[TopicPartition, list[Any]]) -> int:
        """Hold polled records until their flush; returns how many."""
        polled = 0
        for tp, messages in batches.items():
            self._held.setdefault(tp, []).extend(messages)
            polled += len(messages)
        # Checked and encoded now: under a backlog, while the store inserts the last batch.
        self._preparing.add(batches, self._recent)
        if polled and self._held_since is None:
            self._held_since = asyncio.get_running_loop().time()
        self._held_count += polled
        return polled

    async def _write_stalled(self) -> bool:
        """True while a write holding back a full batch waits for the store: the consumer
        is paused (nothing more is fetched) but polled, so it stays in its group."""
        writing = self._writing
        if writing is not None and self._held_count >= self.settings.sink_batch_rows:
            await asyncio.wait({writing}, timeout=STALLED_WRITE_WAIT_S)
            if not writing.done():
                # Partitions assigned since the last pause are paused too; a record fetched
                # before its pause is held like any other, never dropped.
                await self._consumer.pause(*self._consumer.assignment())
                self._hold(await self._consumer.getmany(timeout_ms=0))
                return True
        if self._consumer.paused():
            await self._consumer.resume(*self._consumer.paused())
        return False

    async def flush(self, *, wait: bool = True) -> None:
        """Write what is held, then commit its offsets. With wait=False the write runs
        while the next batch is polled; a later flush waits for it first, so inserts stay
        in order (and commits: each waits for the one before; the next insert does not
        wait for the last commit)."""
        await self._finish_writing()
        if self._held:
            held, self._held = self._held, {}
            preparing, self._preparing = self._preparing, Preparing()
            self._held_count, self._held_since = 0, None
            self._writing = asyncio.create_task(self._write_and_commit(held, preparing))
        if wait:
            await self._finish_writing()
            await self._finish_committing()

    async def _finish_writing(self) -> None:
        writing = self._writing
        if writing is None:
            return
        try:
            # Shielded: a caller cancelled while it waits (a stop) leaves the write in
            # flight and still the writer's, so no later commit passes its records.
            await asyncio.shield(writing)  # a failed write surfaces here and stops the sink
        finally:
            if writing.done():
                self._writing = None
        if self._committing is not None and self._committing.done():
            await self._finish_committing()  # a failed notice surfaces here too

    async def _finish_committing(self) -> None:
        committing = self._committing
        if committing is not None:
            try:
                await asyncio.shield(committing)
            finally:
                if committing.done() and self._committing is committing:
                    self._committing = None

    async def _write_and_commit(
        self, held: dict[TopicPartition, list[Any]], preparing: Preparing
    ) -> None:
        prepared = self._finish(preparing)
        await self.write_prepared(prepared)
        offsets = {tp: messages[-1].offset() + 1 for tp, messages in held.items()}
        # Stored: its offsets are committed after the commit before them, while the next
        # batch is already being inserted.
        self._committing = asyncio.create_task(
            self._commit(self._committing, offsets, prepared.stored.ranges())
        )

    async def _commit(
        self,
        previous: asyncio.Task[None] | None,
        offsets: dict[TopicPartition, int],
        ranges: list[StoredRange],
    ) -> None:
        if previous is not None:
            await previous
        try:
            await self._consumer.commit(offsets)
        except CommitError as exc:
            # Every record is stored: not committing is safe (a redelivery is deduped,
            # see `_drop_already_written`); the next commit covers these offsets.
            self.stats.commit_failures += 1
            log.warning("offset commit failed; rows are stored", error=repr(exc))
        else:
            self._committed.update(offsets)
        self.stats.last_insert_ms = now_ms()
        if self.on_committed is not None:
            await self.on_committed(ranges)

    async def consumer_lag(self) -> dict[str, int]:
        """Records per topic on the broker that the sink has not yet written and committed
        (end offset minus committed offset, summed over this process's partitions)."""
        if self._consumer is None:
            return {}
        assigned = list(self._consumer.assignment())
        if not assigned:
            return {}
        ends = await self._consumer.end_offsets(assigned)
        unknown = [tp for tp in assigned if tp not in self._committed]
        group = await self._consumer.committed(unknown) if unknown else {}
        lag: dict[str, int] = {}
        for tp in assigned:
            committed = self._committed.get(tp, group.get(tp, 0))
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, ends.get(tp, 0) - committed)
        return lag

    async def drain(self, idle_ms: int = 1_000, limit_s: float = 30.0) -> None:
        """Write until the topics stay quiet for `idle_ms` (at stop, after the producers)."""
        deadline = asyncio.get_running_loop().time() + limit_s
        while asyncio.get_running_loop().time() < deadline:
            if await self.step(idle_ms) == 0:
                break
        await self.flush()

    async def write(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """Check headers, dead-letter what is not ours, drop duplicates, insert."""
        await self.write_prepared(self.prepare(batches))

    def prepare(self, batches: dict[TopicPartition, list[Any]]) -> Prepared:
        """What `write` checks without the store: headers and authentication, recent
        duplicates, the records grouped per schema (a consume process runs this part)."""
        preparing = Preparing()
        preparing.add(batches, self._recent)
        return self._finish(preparing)

    def _finish(self, preparing: Preparing) -> Prepared:
        prepared = preparing.finish()
        for batch in prepared.batches:
            self._take_firsts(batch)
        return prepared

    async def write_prepared(self, prepared: Prepared) -> None:
        """Store a prepared batch (a consume process sends it to the store's owner)."""
        await self.store_prepared(prepared)

    async def store_prepared(self, prepared: Prepared) -> None:
        """The store's part of `write`: dead letters, redelivered and resent records
        dropped, inserts, links."""
        for topic, partition, offset, value, reason in prepared.dead_letters:
            await self._dead_letter(topic, partition, offset, value, reason)
        dropped = prepared.dropped
        for batch in prepared.batches:
            unwritten = await self._drop_already_written(batch, dropped)
            if prepared.resent:
                unwritten = await self._drop_resent_written(unwritten, prepared.resent, dropped)
            if unwritten.values:
                await self._insert(unwritten)
        if dropped:
            await self._keep_links(dropped)

    async def _keep_links(self, dropped: list[DroppedCopy]) -> None:
        """Write the links among the dropped copies in the batch's write, before its
        offsets are committed (sinks.links)."""
        kept, refused = await keep_links(self._retry, self.store, dropped)
        self.stats.links_kept += kept
        self.stats.links_refused += refused

    def _take_firsts(self, batch: PendingBatch) -> None:
        """Note the batch's first record of each partition still unverified after a
        (re)assignment, and move each partition's verified limit on."""
        if not self._unverified:
            return  # every partition checked since its assignment: the usual batch
        for i, tp in enumerate(batch.partitions):
            if tp in self._unverified and tp not in batch.firsts:
                batch.firsts[tp] = i
        if not batch.firsts:
            return
        for i, tp in enumerate(batch.partitions):
            limit = self._unverified.get(tp)
            if tp in batch.firsts and limit is None:
                limit = batch.offsets[i] + self._verify_records
                self._unverified[tp] = limit
            if limit is not None and batch.offsets[i] >= limit:
                del self._unverified[tp]

    async def _drop_already_written(
        self, batch: PendingBatch, dropped: list[DroppedCopy]
    ) -> PendingBatch:
        """Drop records a previous owner of the partition inserted but did not commit.

        Each insert holds one schema's records in offset order, so per schema and
        partition what was inserted is a prefix: if the first record is absent, so are
        the rest. Only when a first record is present are all of them looked up.
        """
        firsts = batch.firsts
        if not firsts:
            return batch
        places = await self._stored_places(batch.table, [batch.ids[i] for i in firsts.values()])
        suspects = {tp for tp, i in firsts.items() if batch.ids[i] in places}
        if suspects:
            candidates = [batch.ids[i] for i, tp in enumerate(batch.partitions) if tp in suspects]
            places = await self._stored_places(batch.table, candidates)
            log.info("redelivered rows skipped", table=batch.table, rows=len(places))
        return self._without_stored(batch, places, dropped)

    async def _drop_resent_written(
        self, batch: PendingBatch, resent: set[str], dropped: list[DroppedCopy]
    ) -> PendingBatch:
        """Drop records an outbox sent again that the store already has: a resend can come
        any time after the first send, past every window above."""
        places = await self._stored_places(batch.table, [i for i in batch.ids if i in resent])
        if not places:
            return batch
        log.info("resent rows skipped", table=batch.table, rows=len(places))
        return self._without_stored(batch, places, dropped)

    @staticmethod
    def _without_stored(
        batch: PendingBatch, places: dict[str, set[tuple[str, int]]], dropped: list[DroppedCopy]
    ) -> PendingBatch:
        """The batch without the records whose event id is stored; a dropped record sealed
        at another place than every stored copy (another producer or seq) is a link."""
        kept = []
        for i, event_id in enumerate(batch.ids):
            stored = places.get(event_id)
            if stored is None:
                kept.append(i)
            elif place_of(batch.values[i]) not in stored:
                topic = batch.partitions[i].topic
                dropped.append(DroppedCopy(topic, batch.table, batch.values[i], batch.auths[i]))
        return batch if len(kept) == len(batch.ids) else batch.keep(kept)

    async def _stored_ids(self, table: str, ids: list[str]) -> set[str]:
        return set(await self._stored_places(table, ids))

    async def _stored_places(self, table: str, ids: list[str]) -> dict[str, set[tuple[str, int]]]:
        """(producer_id, seq) of each stored copy, by event id, of those ids."""
        found: dict[str, set[tuple[str, int]]] = {}
        ids = [i for i in ids if UUID_TEXT.fullmatch(i)]
        for start in range(0, len(ids), DEDUPE_QUERY_IDS):
            rows = await self._retry.answer(
                self.store.query_rows,
                f"SELECT toString(event_id), producer_id, seq FROM {table} "  # noqa: S608
                "WHERE event_id IN %(ids)s",
                {"ids": ids[start : start + DEDUPE_QUERY_IDS]},
            )
            for event_id, producer_id, seq in rows:
                found.setdefault(str(event_id), set()).add((str(producer_id), int(seq)))
        return found

    def _columns(self, batch: PendingBatch) -> list[str]:
        columns = self._columns_by_schema.get(batch.entry.fingerprint)
        if columns is None:
            # Then the record's auth header (schemas.authn), after raw.
            columns = [*insert_columns(batch.entry, self.store.table_columns(batch.table)), "auth"]
            self._columns_by_schema[batch.entry.fingerprint] = columns
        return columns

    async def _insert(self, batch: PendingBatch, *, decoded: bool = False) -> None:
        """Store the batch. Records the store refuses are dead-lettered with its reason:
        first those Python cannot decode, then, halving the batch, each one the store
        still refuses once it stands alone; every other record is stored."""
        columns = self._columns_by_schema.get(batch.entry.fingerprint)
        if columns is None:  # the store's columns, asked once per schema
            columns = await self._retry.answer(self._columns, batch)
        refused = await self._insert_once(batch, columns)
        if refused is None:
            return
        # A refused insert can still have written rows (a view fails after its table
        # took the block): those are stored, neither written again nor dead-lettered.
        stored = await self._stored_ids(batch.table, batch.ids)
        if stored:
            log.warning("rows stored by a refused insert", table=batch.table, rows=len(stored))
            batch = batch.keep(
                [i for i, event_id in enumerate(batch.ids) if event_id not in stored]
            )
            if not batch.values:
                return
        if not decoded:
            kept = await self._without_undecodable(batch)
            if len(kept.values) < len(batch.values):
                if kept.values:
                    await self._insert(kept, decoded=True)
                return
            # Every record decodes: the store refused a value; find whose by halving.
        if len(batch.values) == 1:
            tp = batch.partitions[0]
            await self._dead_letter(
                tp.topic,
                tp.partition,
                batch.offsets[0],
                batch.values[0],
                f"store refused the record: {refused.reason}",
            )
            return
        half = len(batch.values) // 2
        for part in (range(half), range(half, len(batch.values))):
            await self._insert(batch.keep(list(part)), decoded=True)

    async def _insert_once(self, batch: PendingBatch, columns: list[str]) -> StoreFault | None:
        """Insert, waiting out an unwell store; None once stored, else why the store (or
        the encoder, before the store saw it) refused the batch's data."""
        # The token names the rows themselves, not offsets: a fresh broker reuses
        # offsets, and an offset token would make ClickHouse drop new rows as retries.
        token = hashlib.sha256("|".join([batch.table, *batch.ids]).encode()).hexdigest()
        try:
            data = batch.container or container_file(batch.entry, batch.values, batch.auths)
        except Exception as exc:  # noqa: BLE001 - our own encoding of a record: its fault
            return record_fault(f"cannot encode the insert: {exc!r}")
        started = self.metrics.clock()
        refused = await self._retry.refused(
            self.store.insert_avro,
            batch.table,
            columns,
            data,
            token,
            table=batch.table,
            rows=len(batch.ids),
        )
        if refused is None:
            self.stats.rows_inserted += len(batch.values)
            self.metrics.inserted(batch.table, len(batch.values), started)
        return refused

    async def _without_undecodable(self, batch: PendingBatch) -> PendingBatch:
        """Decode each record in Python; dead-letter those whose body is broken."""
        good = []
        for i, value in enumerate(batch.values):
            try:
                codec.decode(value)
            except codec.DecodeError as exc:
                tp = batch.partitions[i]
                await self._dead_letter(tp.topic, tp.partition, batch.offsets[i], value, str(exc))
            else:
                good.append(i)
        return batch.keep(good)

    async def _dead_letter(
        self, topic: str, partition: int, offset: int, value: bytes, error: str
    ) -> None:
        self.stats.dead_lettered += 1
        self.metrics.dead_lettered(error)
        log.warning("record dead-lettered", topic=topic, offset=offset, error=error)
        if topic == DLQ.name:
            return  # never dead-letter the dead-letter topic into itself
        record = dead_letter(
            topic=topic,
            partition=partition,
            offset=offset,
            consumer="sink",
            error=error,
            payload=value,
        )
        await self.dlq.publish_and_wait(DLQ.name, topic, record)

    async def stop(self) -> None:
        """Leave the group. A write still waiting for the store is abandoned uncommitted:
        its records are read again from the broker at the next start."""
        if self._writing is not None and not self._writing.done():
            self._writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writing
        if self._committing is not None:
            # Its rows are stored: a commit that fails now only means they are read again
            # at the next start and dropped by event id.
            with contextlib.suppress(Exception):
                await self._committing
        if self._consumer is not None:
            await self._consumer.stop()
