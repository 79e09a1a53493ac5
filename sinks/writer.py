"""Topics into ClickHouse. Order per batch: decode, dedupe, insert, then commit offsets.

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
from schemas.dead_letter import dead_letter
from schemas.ids import now_ms
from schemas.publisher import ChainedPublisher
from schemas.settings import SinkSettings
from schemas.topics import CONTROL, DLQ, LINEAGE, RESTORED_HEADER, WALLET_STATE
from sinks.rows import BY_RECORD_TYPE, TableMapping
from sinks.store import Store

log = structlog.get_logger(__name__)

SINK_TOPICS = (LINEAGE.name, CONTROL.name, WALLET_STATE.name, DLQ.name)
CONSUMER_GROUP = "govledger-sink"
INSERT_RETRIES = 5
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
class PendingRows:
    """Rows for one table, with the event ids per partition still to be checked."""

    mapping: TableMapping
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    partitions: list[TopicPartition] = field(default_factory=list)


@dataclass(slots=True)
class SinkStats:
    """Counters the query API exposes."""

    rows_inserted: int = 0
    dead_lettered: int = 0
    last_insert_ms: int = 0
    lag_records: dict[str, int] = field(default_factory=dict)


class _Reassigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, unverified: set[TopicPartition]) -> None:
        self._unverified = unverified

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._unverified.update(assigned)


class SinkWriter:
    """Consumes every audit topic and writes its rows, exactly once per event."""

    def __init__(self, settings: SinkSettings, store: Store, dlq: ChainedPublisher) -> None:
        self.settings = settings
        self.store = store
        self.dlq = dlq
        self.stats = SinkStats()
        self._unverified: set[TopicPartition] = set()
        self._recent = RecentIds(RECENT_IDS_PER_PARTITION)
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
        self._consumer.subscribe(list(SINK_TOPICS), listener=_Reassigned(self._unverified))
        await self._consumer.start()

    async def run(self) -> None:
        """Consume, write and commit until cancelled."""
        while True:
            await self.step(self.settings.sink_flush_ms)

    async def step(self, timeout_ms: int) -> int:
        """One poll: write what came and commit it; returns the records polled."""
        batches = await self._consumer.getmany(
            timeout_ms=timeout_ms, max_records=self.settings.sink_batch_rows
        )
        if batches:
            await self.write(batches)
            await self._consumer.commit(
                {tp: messages[-1].offset + 1 for tp, messages in batches.items()}
            )
            self.stats.last_insert_ms = now_ms()
        return sum(len(messages) for messages in batches.values())

    async def drain(self, idle_ms: int = 1_000, limit_s: float = 30.0) -> None:
        """Write until the topics stay quiet for `idle_ms` (at stop, after the producers)."""
        deadline = asyncio.get_running_loop().time() + limit_s
        while asyncio.get_running_loop().time() < deadline:
            if await self.step(idle_ms) == 0:
                return

    async def write(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """Decode, dead-letter what does not decode, dedupe, insert."""
        pending: dict[str, PendingRows] = {}
        for tp, messages in batches.items():
            for message in messages:
                if any(key == RESTORED_HEADER for key, _ in message.headers or ()):
                    continue  # re-published from this store at start: the row exists
                try:
                    record = codec.decode(message.value)
                except codec.DecodeError as exc:
                    await self._dead_letter(message, str(exc))
                    continue
                if not self._recent.first_sighting(tp, record.event_id):
                    continue  # a producer retry wrote it twice; keep the first
                mapping = BY_RECORD_TYPE[type(record)]
                table = pending.setdefault(mapping.table, PendingRows(mapping))
                table.rows.append(mapping.row(record, message.value))
                table.ids.append(record.event_id)
                table.partitions.append(tp)
        for table in pending.values():
            rows, ids = await self._drop_already_written(table)
            if rows:
                await self._insert(table.mapping, rows, ids)
                self.stats.rows_inserted += len(rows)

    async def _drop_already_written(
        self, table: PendingRows
    ) -> tuple[list[tuple[Any, ...]], list[str]]:
        checked = [i for i, tp in enumerate(table.partitions) if tp in self._unverified]
        if not checked:
            return table.rows, table.ids
        ids = [table.ids[i] for i in checked]
        found = {
            str(row[0])
            for row in await self.store.run(
                self.store.query_rows,
                f"SELECT event_id FROM {table.mapping.table} WHERE event_id IN %(ids)s",  # noqa: S608
                {"ids": ids},
            )
        }
        for i in checked:
            if table.ids[i] not in found:
                self._unverified.discard(table.partitions[i])
        if found:
            log.info("redelivered rows skipped", table=table.mapping.table, rows=len(found))
        kept = [i for i, event_id in enumerate(table.ids) if event_id not in found]
        return [table.rows[i] for i in kept], [table.ids[i] for i in kept]

    async def _insert(
        self, mapping: TableMapping, rows: list[tuple[Any, ...]], ids: list[str]
    ) -> None:
        # The token names the rows themselves, not offsets: a fresh broker reuses offsets,
        # and an offset-based token would make ClickHouse drop new rows as "retries".
        token = hashlib.sha256("|".join([mapping.table, *ids]).encode()).hexdigest()
        for attempt in range(INSERT_RETRIES):
            try:
                await self.store.run(self.store.insert, mapping.table, rows, mapping.columns, token)
                return
            except Exception as exc:  # store outages are retried, then surface as a crash
                if attempt == INSERT_RETRIES - 1:
                    raise
                log.warning("insert failed; retrying", table=mapping.table, error=str(exc))
                await asyncio.sleep(0.2 * 2**attempt)

    async def _dead_letter(self, message: Any, error: str) -> None:
        self.stats.dead_lettered += 1
        log.warning("record dead-lettered", topic=message.topic, offset=message.offset, error=error)
        if message.topic == DLQ.name:
            return  # never dead-letter the dead-letter topic into itself
        record = dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            consumer="sink",
            error=error,
            payload=message.value,
        )
        await self.dlq.publish_and_wait(DLQ.name, message.topic, record)

    async def stop(self) -> None:
        """Leave the group."""
        if self._consumer is not None:
            await self._consumer.stop()
