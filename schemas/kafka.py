"""Kafka client conventions shared by every service: how we produce and how we tail topics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas.kafka_security import KafkaSecurity, client_options
from schemas.topics import CATALOGUE

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES = 8 * 1024 * 1024


def make_producer(
    bootstrap: str,
    *,
    linger_ms: int = 0,
    client_id: str = "govledger",
    security: KafkaSecurity | None = None,
) -> Any:
    """A producer with acks=all, logged in as `security` (default: this process's user).
    Idempotence is off: Tansu has no InitProducerId, and our consumers are idempotent by
    (producer_id, seq) instead."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=linger_ms,
        max_request_size=MAX_REQUEST_BYTES,
        client_id=client_id,
        request_timeout_ms=10_000,
        **client_options(security),
    )


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


class TopicTailer:
    """Reads whole topics from the beginning and follows them, without a consumer group:
    every reader gets the full state (how gateways read the control and state topics)."""

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
        self._task: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()

    async def start(self) -> None:
        """Assign every partition, seek to the beginning and start following."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            fetch_min_bytes=self._fetch_min_bytes,
            auto_offset_reset=self._offset_reset,
            client_id="govledger-tailer",
            **client_options(self._security),
        )
        await self._consumer.start()
        partitions: list[TopicPartition] = []
        for topic in self._topics:
            for attempt in range(50):
                found = self._consumer.partitions_for_topic(topic)
                if found:
                    break
                # aiokafka has no public call to refresh metadata.
                await self._consumer._client.force_metadata_update()
                await asyncio.sleep(0.1 * (attempt + 1))
            else:
                raise RuntimeError(f"topic {topic} does not exist")
            partitions.extend(TopicPartition(topic, p) for p in sorted(found))
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        end_offsets = await self._consumer.end_offsets(partitions)
        self._task = asyncio.create_task(self._run(end_offsets))

    async def _run(self, end_offsets: dict[TopicPartition, int]) -> None:
        pending = {tp: end for tp, end in end_offsets.items() if end > 0}
        if not pending:
            self.caught_up.set()
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5_000)
            for tp, messages in batches.items():
                for message in messages:
                    result = self._handle(message)
                    if result is not None:
                        await result
                if tp in pending and messages[-1].offset + 1 >= pending[tp]:
                    del pending[tp]
            if not pending and not self.caught_up.is_set():
                self.caught_up.set()

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
