"""A consumer-group member on librdkafka (confluent-kafka): the sink's, the worker
intake's and the notifier's.

The sink is CPU-bound under a backlog, and Python's share of a row decides its pace:
librdkafka fetches, checks and unpacks record batches in C on threads of its own, where
aiokafka did it per record in Python on the event loop (about 4.5 µs of the loop's CPU a
row against 1.5 µs; see docs/performance.md). And a record aiokafka cannot unpack (a
header key that is not UTF-8) made its poll raise, for good; here it is one record whose
headers `schemas.rdkafka.headers_of` refuses. The member keeps aiokafka's shape of a
consumer (`getmany`, `pause`, `commit`, a rebalance listener), so this module is the only
place that knows the client.

librdkafka's calls block, so each runs on a thread: `consume` (and the rebalance
callbacks librdkafka makes inside it) on the consumer's own thread, commits and offset
look-ups on another, so a flush a revocation waits for can still commit. The listener's
coroutines run on the event loop; the consumer thread waits for them, as aiokafka waits
for its listener before it rejoins.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from typing import Any, Protocol

import structlog
from aiokafka import TopicPartition
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaPartition

from schemas.kafka_security import KafkaSecurity
from schemas.rdkafka import base_config

log = structlog.get_logger(__name__)

# Most records one poll returns.
POLL_RECORDS = 5_000
# Longest a blocking look-up (committed offsets, end offsets) or a commit may take.
REQUEST_TIMEOUT_S = 10.0
# Longest the consumer thread waits for the listener: the sink's revocation flushes the
# held batch, which waits out an unwell store. The group waits as long for a member's
# rejoin (max.poll.interval.ms, librdkafka's default, as aiokafka's max_poll_interval_ms
# was), then moves on without it; past it the poll raises and the member's owner restarts.
LISTENER_TIMEOUT_S = 300.0


class CommitError(Exception):
    """The broker did not take an offset commit (what it covers is done all the same: the
    records come again, to owners that skip what is done)."""


class RebalanceListener(Protocol):
    """What the consumer tells of partitions given and taken (aiokafka's listener)."""

    async def on_partitions_revoked(self, revoked: Any) -> None: ...

    async def on_partitions_assigned(self, assigned: Any) -> None: ...


def client_config(
    bootstrap: str,
    *,
    group_id: str,
    client_id: str,
    session_timeout_ms: int,
    fetch_max_wait_ms: int,
    security: KafkaSecurity,
) -> dict[str, Any]:
    """librdkafka's settings for a group member: offsets committed by its owner alone
    (the sink's writer once its rows are stored, the intake once its batch is folded, the
    notifier once its deliveries are written down)."""
    assert session_timeout_ms > 0 and fetch_max_wait_ms >= 0
    return {
        **base_config(bootstrap, client_id=client_id, security=security),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(session_timeout_ms // 6, 100),
        "fetch.wait.max.ms": fetch_max_wait_ms,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        # Off by default in librdkafka: the headers that decide whether a record is stored
        # (resent, restored) are not under its MAC, so a corrupted batch must be refused.
        "check.crcs": True,
    }


class GroupConsumer:
    """A consumer-group member with the async shape of aiokafka's consumer (what the sink's
    writer, the worker's intake and the notifier use). Its threads are named after the
    client id."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._consumer: Consumer | None = None
        self._listener: RebalanceListener | None = None
        self._topics: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # One thread owns `consume` (and so the rebalance callbacks); one runs the rest.
        name = str(config.get("client.id", "govledger"))
        self._polling = concurrent.futures.ThreadPoolExecutor(1, f"{name}-consume")
        self._requests = concurrent.futures.ThreadPoolExecutor(1, f"{name}-commit")
        self._paused: set[TopicPartition] = set()
        self._assigned: set[TopicPartition] = set()
        # What a rebalance callback raised: librdkafka cannot carry it out of `consume`
        # (it would surface as a SystemError), so the next poll raises it.
        self._failure: BaseException | None = None
        self._closing = False

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener | None = None) -> None:
        """The topics to follow, and who hears of partitions given and taken (if anyone)."""
        self._topics, self._listener = list(topics), listener

    async def start(self) -> None:
        """Make the client and subscribe; the group is joined by the first polls."""
        self._loop = asyncio.get_running_loop()
        self._consumer = Consumer(self._config)
        self._consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None, *, at_hand: bool = False
    ) -> dict[TopicPartition, list[Any]]:
        """Records polled within `timeout_ms` (librdkafka's `Message`s), per partition,
        in offset order. `at_hand`: as soon as there is one, with what else is queued
        (aiokafka's way), instead of waiting out the timeout for `max_records`."""
        consumer = self._live()
        # librdkafka's consume waits for `count` records or the timeout: a poll takes what
        # is at hand, a chunk at a time, so a backlog is checked while the last is stored.
        count = min(max_records or POLL_RECORDS, POLL_RECORDS)
        read = _at_hand if at_hand else _waiting
        messages = await self._on(self._polling, read, consumer, count, max(timeout_ms, 0) / 1000)
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        batches: dict[TopicPartition, list[Any]] = {}
        keys: dict[tuple[Any, Any], TopicPartition] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer error", error=str(error))
                continue
            where = (message.topic(), message.partition())
            tp = keys.get(where)
            if tp is None:
                tp = keys[where] = TopicPartition(*where)
                batches[tp] = []
            batches[tp].append(message)
        return batches

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member holds now (as the rebalance callbacks said: asking
        librdkafka from the event loop while a callback waits for it could deadlock)."""
        return set(self._assigned)

    async def pause(self, *partitions: TopicPartition) -> None:
        """Fetch nothing more for these partitions (records polled before stay held)."""
        consumer = self._live()
        asked = [KafkaPartition(tp.topic, tp.partition) for tp in partitions]
        await self._on(self._polling, consumer.pause, asked)
        self._paused.update(partitions)

    async def resume(self, *partitions: TopicPartition) -> None:
        """Fetch again for these partitions."""
        consumer = self._live()
        asked = [KafkaPartition(tp.topic, tp.partition) for tp in partitions]
        await self._on(self._polling, consumer.resume, asked)
        self._paused.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        """The partitions paused and still held."""
        self._paused &= self._assigned
        return set(self._paused)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit each partition's next offset to read; CommitError if the broker did not
        take it."""
        consumer = self._live()
        partitions = [KafkaPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()]
        try:
            answered = await self._on(self._requests, consumer.commit, None, partitions, False)
        except KafkaException as exc:
            raise CommitError(str(exc)) from exc
        refused = [p for p in answered or () if p.error is not None]
        if refused:
            raise CommitError(f"{refused[0].topic}[{refused[0].partition}]: {refused[0].error}")

    async def committed(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offsets of these partitions (those it has), in one
        request."""
        consumer = self._live()
        asked = [KafkaPartition(tp.topic, tp.partition) for tp in partitions]
        found = await self._on(self._requests, consumer.committed, asked, REQUEST_TIMEOUT_S)
        return {
            TopicPartition(p.topic, p.partition): int(p.offset)
            for p in found
            if p.offset != OFFSET_INVALID and p.offset >= 0
        }

    async def partitions_of(self, topic: str) -> list[TopicPartition]:
        """A topic's partitions, as the broker's metadata names them."""
        consumer = self._live()
        found = await self._on(self._requests, consumer.list_topics, topic, REQUEST_TIMEOUT_S)
        known = found.topics.get(topic)
        return [TopicPartition(topic, p) for p in sorted(known.partitions if known else ())]

    def highwater(self, tp: TopicPartition) -> int | None:
        """A partition's end offset as of the last fetch (no request), None before one."""
        asked = KafkaPartition(tp.topic, tp.partition)
        high = int(self._live().get_watermark_offsets(asked, cached=True)[1])
        return None if high < 0 else high

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's end offset (the next record's) as of the last fetch, asked of
        the broker only for a partition not fetched yet."""
        consumer = self._live()
        ends: dict[TopicPartition, int] = {}
        for tp in partitions:
            high = self.highwater(tp)
            if high is None:
                asked = KafkaPartition(tp.topic, tp.partition)
                low_high = await self._on(
                    self._requests, consumer.get_watermark_offsets, asked, REQUEST_TIMEOUT_S
                )
                high = int(low_high[1])
            ends[tp] = high
        return ends

    async def stop(self) -> None:
        """Leave the group (its owner has written or abandoned what it held)."""
        consumer, self._consumer = self._consumer, None
        self._closing = True
        try:
            if consumer is not None:
                await self._on(self._polling, consumer.close)
        finally:
            self._polling.shutdown(wait=False)
            self._requests.shutdown(wait=False)

    # --- on the consumer thread, inside `consume` ---------------------------------------

    def _on_assign(self, _: Consumer, partitions: list[KafkaPartition]) -> None:
        self._tell("on_partitions_assigned", partitions)

    def _on_revoke(self, _: Consumer, partitions: list[KafkaPartition]) -> None:
        self._tell("on_partitions_revoked", partitions)

    def _tell(self, event: str, partitions: list[KafkaPartition]) -> None:
        given = {TopicPartition(p.topic, p.partition) for p in partitions}
        if event == "on_partitions_assigned":
            self._assigned |= given
        listener, loop = self._listener, self._loop
        try:
            if listener is not None and loop is not None and not self._closing:
                # (At close the owner has already flushed or abandoned its batch.)
                call = getattr(listener, event)(given)
                asyncio.run_coroutine_threadsafe(call, loop).result(LISTENER_TIMEOUT_S)
        except BaseException as exc:  # noqa: BLE001 - raised by the next poll, on the loop
            self._failure = self._failure or exc
        finally:
            if event == "on_partitions_revoked":
                self._assigned -= given

    # --- helpers --------------------------------------------------------------------------

    def _live(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("the consumer is not started")
        return self._consumer

    async def _on(
        self, executor: concurrent.futures.ThreadPoolExecutor, function: Any, *args: Any
    ) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, function, *args)


def _waiting(consumer: Consumer, count: int, timeout_s: float) -> list[Any]:
    """On the consumer thread: `count` records, or what came within the timeout."""
    return list(consumer.consume(count, timeout_s))


def _at_hand(consumer: Consumer, count: int, timeout_s: float) -> list[Any]:
    """On the consumer thread: the first record within the timeout, with what else is
    queued (a balance waits for no fetch wait of ours)."""
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(count - 1, 0)] if count > 1 else [first]
