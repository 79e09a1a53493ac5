"""Topics into ClickHouse. Order per batch: check, dedupe, insert, then commit offsets.

A batch redelivered after a crash (inserted, offsets not committed) leaves no duplicate
rows: after a partition is (re)assigned, its records are checked against the table by
event_id until one is found missing; inserts are in offset order, so later records of
that partition cannot be present. In-process retries reuse an insert deduplication token.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from schemas import codec
from schemas.codec import SchemaEntry
from schemas.dead_letter import dead_letter
from schemas.ids import now_ms
from schemas.publisher import ChainedPublisher
from schemas.settings import SinkSettings
from schemas.topics import CONTROL, DLQ, LINEAGE, RESTORED_HEADER, WALLET_STATE
from sinks.avro_batch import container_file, event_id_of
from sinks.store import Store
from sinks.tables import TABLE_FOR

log = structlog.get_logger(__name__)

SINK_TOPICS = (LINEAGE.name, CONTROL.name, WALLET_STATE.name, DLQ.name)
CONSUMER_GROUP = "govledger-sink"
INSERT_RETRIES = 5
# Ids per look-up query: keeps each query far under ClickHouse's max_query_size (256 KiB).
DEDUPE_QUERY_IDS = 2_000
# A producer that retries a send with idempotence off can leave the same record twice in
# a partition, close together. The writer remembers this many recent ids per partition.
RECENT_IDS_PER_PARTITION = 100_000


class RecentIds:
    """The last N event ids seen per partition, to drop duplicates written by retries."""

    def __init__(self, capacity: int) -> None:
        assert capacity > 0, "capacity must be positive"
        self.capacity = capacity
        self._seen: dict[TopicPartition, dict[str, None]] = {}

    def first_sighting(self, tp: TopicPartition, event_id: str) -> bool:
        """Remember the id; False if it was seen recently on this partition."""
        seen = self._seen.setdefault(tp, {})
        if event_id in seen:
            return False
        seen[event_id] = None
        if len(seen) > self.capacity:
            del seen[next(iter(seen))]  # dicts keep insertion order: drop the oldest
        return True


@dataclass(slots=True)
class PendingBatch:
    """Records of one schema bound for one table, with their ids and partitions."""

    entry: SchemaEntry
    table: str
    values: list[bytes] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    partitions: list[TopicPartition] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def keep(self, indexes: list[int]) -> PendingBatch:
        """The batch with only the records at these positions."""
        return PendingBatch(
            self.entry,
            self.table,
            [self.values[i] for i in indexes],
            [self.ids[i] for i in indexes],
            [self.partitions[i] for i in indexes],
            [self.offsets[i] for i in indexes],
        )


@dataclass(slots=True)
class SinkStats:
    """Counters the query API exposes."""

    rows_inserted: int = 0
    dead_lettered: int = 0
    last_insert_ms: int = 0
    lag_records: dict[str, int] = field(default_factory=dict)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, writer: SinkWriter) -> None:
        self._writer = writer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Write and commit what is buffered while the partitions are still ours.
        await self._writer.flush()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._writer.reassigned(assigned)


class SinkWriter:
    """Consumes every audit topic and writes its rows, exactly once per event."""

    def __init__(self, settings: SinkSettings, store: Store, dlq: ChainedPublisher) -> None:
        self.settings = settings
        self.store = store
        self.dlq = dlq
        self.stats = SinkStats()
        self._unverified: set[TopicPartition] = set()
        self._recent = RecentIds(RECENT_IDS_PER_PARTITION)
        self._columns_by_schema: dict[bytes, list[str]] = {}
        self._held: dict[TopicPartition, list[Any]] = {}
        self._held_count = 0
        self._held_since: float | None = None
        self._consumer: Any = None

    async def start(self) -> None:
        """Join the sink's consumer group."""
        session_ms = self.settings.kafka_session_timeout_ms
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=CONSUMER_GROUP,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(session_ms // 6, 100),
            fetch_max_wait_ms=min(self.settings.sink_flush_ms, 100),
            max_partition_fetch_bytes=8 * 1024 * 1024,
            client_id="govledger-sink",
        )
        self._consumer.subscribe(list(SINK_TOPICS), listener=_Rebalance(self))
        await self._consumer.start()

    def reassigned(self, assigned: Any) -> None:
        """Partitions (re)assigned: their first records may already be in the store."""
        self._unverified.update(assigned)

    async def run(self) -> None:
        """Consume, write and commit until cancelled."""
        while True:
            await self.step(self.settings.sink_flush_ms)

    async def step(self, timeout_ms: int) -> int:
        """One poll. Records are held until `sink_flush_ms` after the first of them, or
        until `sink_batch_rows` are held: each chDB insert has a fixed cost, so fewer,
        larger inserts keep the sink cheap at low rates. Returns the records polled."""
        loop = asyncio.get_running_loop()
        wait_ms = timeout_ms
        if self._held_since is not None:
            age_ms = (loop.time() - self._held_since) * 1000
            wait_ms = max(0, min(timeout_ms, int(self.settings.sink_flush_ms - age_ms)))
        room = max(self.settings.sink_batch_rows - self._held_count, 1)
        batches = await self._consumer.getmany(timeout_ms=wait_ms, max_records=room)
        polled = 0
        for tp, messages in batches.items():
            self._held.setdefault(tp, []).extend(messages)
            polled += len(messages)
        if polled and self._held_since is None:
            self._held_since = loop.time()
        self._held_count += polled
        if self._held_since is not None and (
            self._held_count >= self.settings.sink_batch_rows
            or (loop.time() - self._held_since) * 1000 >= self.settings.sink_flush_ms
        ):
            await self.flush()
        return polled

    async def flush(self) -> None:
        """Write what is held, then commit its offsets."""
        if not self._held:
            return
        held, self._held = self._held, {}
        self._held_count, self._held_since = 0, None
        await self.write(held)
        await self._consumer.commit({tp: messages[-1].offset + 1 for tp, messages in held.items()})
        self.stats.last_insert_ms = now_ms()

    async def drain(self, idle_ms: int = 1_000, limit_s: float = 30.0) -> None:
        """Write until the topics stay quiet for `idle_ms` (at stop, after the producers)."""
        deadline = asyncio.get_running_loop().time() + limit_s
        while asyncio.get_running_loop().time() < deadline:
            if await self.step(idle_ms) == 0:
                break
        await self.flush()

    async def write(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """Check headers, dead-letter what is not ours, drop duplicates, insert."""
        pending: dict[bytes, PendingBatch] = {}
        for tp, messages in batches.items():
            for message in messages:
                if any(key == RESTORED_HEADER for key, _ in message.headers or ()):
                    continue  # re-published from this store at start: the row exists
                value = message.value or b""
                try:
                    entry = codec.schema_of(value)
                    event_id = event_id_of(value)
                except (codec.DecodeError, UnicodeDecodeError) as exc:
                    await self._dead_letter(
                        message.topic, message.partition, message.offset, value, str(exc)
                    )
                    continue
                if not self._recent.first_sighting(tp, event_id):
                    continue  # a producer retry wrote it twice; keep the first
                batch = pending.get(entry.fingerprint)
                if batch is None:
                    batch = PendingBatch(entry, TABLE_FOR[entry.record_type])
                    pending[entry.fingerprint] = batch
                batch.values.append(value)
                batch.ids.append(event_id)
                batch.partitions.append(tp)
                batch.offsets.append(message.offset)
        for batch in pending.values():
            unwritten = await self._drop_already_written(batch)
            if unwritten.values:
                await self._insert(unwritten)

    async def _drop_already_written(self, batch: PendingBatch) -> PendingBatch:
        checked = [i for i, tp in enumerate(batch.partitions) if tp in self._unverified]
        if not checked:
            return batch
        found: set[str] = set()
        for start in range(0, len(checked), DEDUPE_QUERY_IDS):
            ids = [batch.ids[i] for i in checked[start : start + DEDUPE_QUERY_IDS]]
            rows = await self.store.run(
                self.store.query_rows,
                f"SELECT event_id FROM {batch.table} WHERE event_id IN %(ids)s",  # noqa: S608
                {"ids": ids},
            )
            found.update(str(row[0]) for row in rows)
        for i in checked:
            if batch.ids[i] not in found:
                self._unverified.discard(batch.partitions[i])
        if found:
            log.info("redelivered rows skipped", table=batch.table, rows=len(found))
        return batch.keep([i for i, event_id in enumerate(batch.ids) if event_id not in found])

    def _columns(self, batch: PendingBatch) -> list[str]:
        columns = self._columns_by_schema.get(batch.entry.fingerprint)
        if columns is None:
            present = set(self.store.table_columns(batch.table))
            fields = [f["name"] for f in batch.entry.source["fields"]]
            columns = [name for name in fields if name in present] + ["raw"]
            self._columns_by_schema[batch.entry.fingerprint] = columns
        return columns

    async def _insert(self, batch: PendingBatch) -> None:
        columns = await self.store.run(self._columns, batch)
        for attempt in range(INSERT_RETRIES):
            # The token names the rows themselves, not offsets: a fresh broker reuses
            # offsets, and an offset token would make ClickHouse drop new rows as retries.
            token = hashlib.sha256("|".join([batch.table, *batch.ids]).encode()).hexdigest()
            data = container_file(batch.entry, batch.values)
            try:
                await self.store.run(self.store.insert_avro, batch.table, columns, data, token)
                self.stats.rows_inserted += len(batch.values)
                return
            except Exception as exc:  # bad bodies are dead-lettered; store outages retried
                if attempt == 0:
                    batch = await self._without_undecodable(batch)
                    if not batch.values:
                        return
                if attempt == INSERT_RETRIES - 1:
                    raise
                log.warning("insert failed; retrying", table=batch.table, error=str(exc))
                await asyncio.sleep(0.2 * 2**attempt)

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
        """Leave the group."""
        if self._consumer is not None:
            await self._consumer.stop()
