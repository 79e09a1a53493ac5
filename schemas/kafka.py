"""Kafka client conventions shared by every service: how we produce and how we tail topics."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import confluent_kafka
import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas.kafka_producer import AsyncProducer, producer_config
from schemas.kafka_security import KafkaSecurity, client_options
from schemas.rdkafka import UNDECODABLE_HEADERS, base_config, headers_of
from schemas.topics import CATALOGUE

log = structlog.get_logger(__name__)


def make_producer(
    bootstrap: str,
    *,
    linger_ms: int = 0,
    client_id: str = "govledger",
    security: KafkaSecurity | None = None,
) -> AsyncProducer:
    """A producer with acks=all, logged in as `security` (default: this process's user),
    on librdkafka (schemas/kafka_producer.py says why). Idempotence is off: Tansu has no
    InitProducerId, and our consumers are idempotent by (producer_id, seq) instead."""
    config = producer_config(
        bootstrap,
        client_id=client_id,
        linger_ms=linger_ms,
        security=security or KafkaSecurity.of_process(),
    )
    return AsyncProducer(config)


async def ensure_topics(
    bootstrap: str, partitions: int, *, security: KafkaSecurity | None = None
) -> None:
    """Create every catalogue topic that does not exist; state topics are compacted. (On a
    broker with ACLs the topics exist already: compose/kafka-init.sh creates them.)"""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="govledger-admin", **client_options(security)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                topic.name,
                partitions,
                1,
                topic_configs={"cleanup.policy": "compact" if topic.compacted else "delete"},
            )
            for topic in CATALOGUE
            if topic.name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
            log.info("topics created", topics=[t.name for t in missing])
    finally:
        await admin.close()


Handler = Callable[[Any], Awaitable[None] | None]

# Most records one poll hands to the handler.
TAIL_POLL_RECORDS = 5_000
# Longest the tailer's thread waits in one poll (and so what `stop` may wait for it).
TAIL_POLL_WAIT_S = 0.5
# Longest a metadata or end-offset request at start may take.
TAIL_REQUEST_TIMEOUT_S = 10.0
# Most batches the tailer's thread hands the event loop before the loop has handled them.
TAIL_BATCHES_AHEAD = 4


class TailedRecord(NamedTuple):
    """One record a tailer read, in the attribute names aiokafka's records have (what the
    handlers and `authn.decode_message` read)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp: int


def record_of(message: Any, headers: list[tuple[str, bytes | None]]) -> TailedRecord:
    """A consumed librdkafka message as a `TailedRecord`, with its headers as read by
    `schemas.rdkafka.headers_of` (never asked of the message again: see there)."""
    return TailedRecord(
        message.topic(),
        message.partition(),
        message.offset(),
        message.key(),
        message.value(),
        headers,
        message.timestamp()[1],
    )


def tailer_config(
    bootstrap: str,
    *,
    security: KafkaSecurity,
    fetch_max_wait_ms: int,
    fetch_min_bytes: int,
    offset_reset: str,
) -> dict[str, Any]:
    """librdkafka's settings for a tailer: partitions assigned by us, nothing committed
    (a group id is required by the client but no group is ever joined)."""
    assert fetch_max_wait_ms >= 0 and fetch_min_bytes >= 1
    assert offset_reset in ("earliest", "latest")
    return {
        **base_config(bootstrap, client_id="govledger-tailer", security=security),
        "group.id": "govledger-tailer",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": offset_reset,
        "fetch.wait.max.ms": fetch_max_wait_ms,
        "fetch.min.bytes": fetch_min_bytes,
        "check.crcs": True,
    }


class TopicTailer:
    """Reads whole topics from the beginning and follows them, without a consumer group:
    every reader gets the full state (how gateways read the control and state topics).

    On librdkafka: fetching and unpacking run in C on the client's threads, and the event
    loop wakes only when records came (aiokafka's fetcher ran in Python on the loop, every
    fetch wait, records or not: most of an idle gateway's CPU). The client's blocking
    calls run on one thread of the tailer's own, which follows the topics on its own:
    it polls and hands each batch to the loop, up to TAIL_BATCHES_AHEAD of them not yet
    handled (so a batch wakes the loop once, and an empty poll wakes nothing)."""

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        handle: Handler,
        *,
        security: KafkaSecurity | None = None,
        earliest_on_reset: bool = False,
        fetch_max_wait_ms: int = 100,
        fetch_min_bytes: int = 1,
    ) -> None:
        self._bootstrap = bootstrap
        # The broker answers a fetch once it has fetch_min_bytes or after fetch_max_wait_ms:
        # a reader that can wait that long batches its wake-ups (see gateway/server.py).
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._fetch_min_bytes = fetch_min_bytes
        # A broker that came back empty answers the old position with out-of-range: from
        # its first record again, instead of its end (what the outbox feed needs).
        self._offset_reset = "earliest" if earliest_on_reset else "latest"
        self._security = security
        self._topics = list(topics)
        self._handle = handle
        self._consumer: Any = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "kafka-tailer")
        self._task: asyncio.Task[None] | None = None
        # Batches (or the exception that stopped the thread) handed to the loop; a slot of
        # `_ahead` is taken for each and given back once the loop has handled it; `_stopping`
        # ends the thread.
        self._batches: asyncio.Queue[list[Any] | BaseException] = asyncio.Queue()
        self._ahead = threading.BoundedSemaphore(TAIL_BATCHES_AHEAD)
        self._stopping = threading.Event()
        self.caught_up = asyncio.Event()
        # Next offset to read per (topic, partition): past every record handled or skipped.
        self.positions: dict[tuple[str, int], int] = {}

    async def start(self) -> None:
        """Assign every partition from its first record and start following."""
        config = tailer_config(
            self._bootstrap,
            security=self._security or KafkaSecurity.of_process(),
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            fetch_min_bytes=self._fetch_min_bytes,
            offset_reset=self._offset_reset,
        )
        self._consumer = confluent_kafka.Consumer(config)
        try:
            end_offsets = await self._on_thread(self._assign_all)
        except BaseException:
            await self._on_thread(self._consumer.close)
            self._consumer = None
            self._thread.shutdown(wait=False)
            raise
        self._thread.submit(self._follow, asyncio.get_running_loop())
        self._task = asyncio.create_task(self._run(end_offsets))

    def _assign_all(self) -> dict[tuple[str, int], int]:
        """On the tailer's thread: every partition of the topics, from the beginning; each
        partition's end offset now (what `caught_up` waits for)."""
        partitions: list[confluent_kafka.TopicPartition] = []
        for topic in self._topics:
            for attempt in range(50):
                found = self._consumer.list_topics(topic, TAIL_REQUEST_TIMEOUT_S).topics.get(topic)
                if found is not None and found.error is None and found.partitions:
                    break
                time.sleep(0.1 * (attempt + 1))
            else:
                raise RuntimeError(f"topic {topic} does not exist")
            partitions.extend(
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in sorted(found.partitions)
            )
        self._consumer.assign(partitions)
        ends: dict[tuple[str, int], int] = {}
        for tp in partitions:
            _, high = self._consumer.get_watermark_offsets(tp, TAIL_REQUEST_TIMEOUT_S)
            ends[(tp.topic, tp.partition)] = int(high)
        return ends

    def _poll(self) -> list[Any]:
        """On the tailer's thread: what is at hand, waiting up to TAIL_POLL_WAIT_S for the
        first record (librdkafka's batch call would wait for a full batch)."""
        first = self._consumer.poll(TAIL_POLL_WAIT_S)
        if first is None:
            return []
        return [first, *self._consumer.consume(TAIL_POLL_RECORDS - 1, 0)]

    def _follow(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the tailer's thread until `stop`: poll; hand each batch to the loop, in order,
        while fewer than TAIL_BATCHES_AHEAD wait there (a slow handler holds the thread
        back instead of letting batches pile up)."""
        try:
            while not self._stopping.is_set():
                batch = self._poll()
                if not batch:
                    continue
                while not self._ahead.acquire(timeout=TAIL_POLL_WAIT_S):
                    if self._stopping.is_set():
                        return
                loop.call_soon_threadsafe(self._batches.put_nowait, batch)
        except BaseException as exc:  # noqa: BLE001 - the loop's reader raises it
            if not self._stopping.is_set():
                loop.call_soon_threadsafe(self._batches.put_nowait, exc)

    async def _next_batch(self) -> list[Any]:
        batch = await self._batches.get()
        if isinstance(batch, BaseException):
            raise batch
        return batch

    async def _run(self, end_offsets: dict[tuple[str, int], int]) -> None:
        pending = {where: end for where, end in end_offsets.items() if end > 0}
        if not pending:
            self.caught_up.set()
        while True:
            for message in await self._next_batch():
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise confluent_kafka.KafkaException(error)
                    log.warning("tailer error", error=str(error))
                    continue
                where, offset = (message.topic(), message.partition()), message.offset()
                headers = headers_of(message)
                if headers is None:
                    # A hostile record must not stop the reader (the sink dead-letters it);
                    # it still counts as read, or a reader would never catch up past it.
                    log.warning(
                        "record skipped", at=where, offset=offset, reason=UNDECODABLE_HEADERS
                    )
                else:
                    result = self._handle(record_of(message, headers))
                    if result is not None:
                        await result
                self.positions[where] = offset + 1
                if where in pending and offset + 1 >= pending[where]:
                    del pending[where]
            self._ahead.release()
            if not pending and not self.caught_up.is_set():
                self.caught_up.set()

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._stopping.set()  # the thread sees it within TAIL_POLL_WAIT_S
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await self._on_thread(consumer.close)  # after the thread's last poll returns
        self._thread.shutdown(wait=False)

    async def _on_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)
