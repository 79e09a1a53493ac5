"""A record whose header key is not UTF-8. Anyone who may write to a topic can send one.
confluent-kafka answers `headers()` for it with SystemError on a cold call site and with
a list holding a NULL item on a hot one (Python 3.11's specialized call skips the check),
which crashed the process at the next loop over it. Before the fix that record stopped a
topic tailer for good (a gateway's views would stop following key revocations) and
crashed the sink on it again at every restart. Every librdkafka reader now refuses that
one record and goes on: the tailers skip it, the sink dead-letters it.

The records are written by aiokafka's pure-Python batch builder, which writes whatever
bytes a header key's `encode` returns, to librdkafka's own mock cluster. Enough good
records come first for the readers' call sites to be specialized."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiokafka.producer.message_accumulator as accumulator
import aiokafka.producer.producer as aiokafka_producer
import confluent_kafka
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.consumer import fetcher
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from schemas import aiokafka_guard
from schemas.kafka import TailedRecord, TopicTailer
from schemas.kafka_security import KafkaSecurity
from schemas.rdkafka import UNDECODABLE_HEADERS
from schemas.records import Event
from sinks.prepare import RecentIds, prepare
from tests.unit import builders

TOPIC = "govledger.control"
# Good records read before the hostile one: more than Python 3.11 needs to specialize a
# call site (its adaptive counters warm up within a few dozen executions).
GOOD_BEFORE = 64


class NotUtf8Key(str):
    """A header key whose bytes on the wire are not UTF-8."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfe-key"


@contextlib.asynccontextmanager
async def mock_cluster_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[str, AIOKafkaProducer]]:
    """A librdkafka mock cluster's bootstrap (the cluster lives as long as this), and a
    started producer that writes a header key's bytes as its `encode` gives them."""
    for module in (accumulator, aiokafka_producer):
        monkeypatch.setattr(module, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy)
    cluster = confluent_kafka.Producer({"test.mock.num.brokers": 1})
    brokers = cluster.list_topics(timeout=5).brokers.values()
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        yield bootstrap, producer
    finally:
        await producer.stop()
        cluster.flush(1)


async def write_at_0(producer: AIOKafkaProducer, topic: str, record: Event | None) -> None:
    """Write to the topic's partition 0 the record signed as its producer signs it, or
    (None) a record b"hostile" whose header key is not UTF-8."""
    if record is None:
        value, headers = b"hostile", [(NotUtf8Key("k"), b"v")]
    else:
        signed = builders.signed_message(topic, record)
        value, headers = signed.value, signed.headers
    await producer.send_and_wait(topic, value, key=b"acme", partition=0, headers=headers)


def committed_offsets(bootstrap: str, group: str, topics: list[str]) -> dict[str, int]:
    """A consumer group's committed offset of each topic's partition 0."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        asked = [confluent_kafka.TopicPartition(topic, 0) for topic in topics]
        return {p.topic: p.offset for p in consumer.committed(asked, timeout=10)}
    finally:
        consumer.close()


@pytest.fixture
async def poisoned(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """A mock cluster's bootstrap whose topic holds, on partition 0: GOOD_BEFORE records
    b"before" (each with a header), the hostile record b"hostile", then b"after"; on
    partition 1, a hostile record alone (the last record a reader has to catch up to)."""
    async with mock_cluster_writer(monkeypatch) as (bootstrap, producer):
        for _ in range(GOOD_BEFORE):
            header = [("govledger-resent", b"1")]
            await producer.send_and_wait(TOPIC, b"before", key=b"acme", partition=0, headers=header)
        hostile = [(NotUtf8Key("k"), b"v")]
        await producer.send_and_wait(TOPIC, b"hostile", key=b"acme", partition=0, headers=hostile)
        await producer.send_and_wait(TOPIC, b"after", key=b"acme", partition=0)
        await producer.send_and_wait(TOPIC, b"hostile", key=b"acme", partition=1, headers=hostile)
        yield bootstrap


async def test_a_tailer_skips_the_record_and_keeps_following(poisoned: str) -> None:
    seen: list[TailedRecord] = []
    tailer = TopicTailer(poisoned, [TOPIC], seen.append, security=KafkaSecurity())
    await tailer.start()
    try:
        # Caught up even where the hostile record is a partition's last: a gateway waits
        # for this before it serves.
        await asyncio.wait_for(tailer.caught_up.wait(), 10)
        assert [r.value for r in seen] == [b"before"] * GOOD_BEFORE + [b"after"]
        assert tailer._task is not None and not tailer._task.done(), "still following"
    finally:
        await tailer.stop()


async def test_the_sink_dead_letters_the_record_with_its_reason(poisoned: str) -> None:
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": poisoned, "group.id": "test", "enable.auto.commit": False}
    )
    consumer.assign([confluent_kafka.TopicPartition(TOPIC, 0, confluent_kafka.OFFSET_BEGINNING)])
    messages: list[confluent_kafka.Message] = []
    try:
        for _ in range(GOOD_BEFORE + 40):  # one message a poll
            message = await asyncio.to_thread(consumer.poll, 0.25)
            if message is not None and message.error() is None:
                messages.append(message)
            if len(messages) == GOOD_BEFORE + 2:
                break
    finally:
        consumer.close()
    assert len(messages) == GOOD_BEFORE + 2

    prepared = prepare({TopicPartition(TOPIC, 0): messages}, RecentIds(100))

    reasons = {offset: reason for _, _, offset, _, reason in prepared.dead_letters}
    values = {offset: value for _, _, offset, value, _ in prepared.dead_letters}
    hostile_offset = GOOD_BEFORE
    assert (values[hostile_offset], reasons[hostile_offset]) == (b"hostile", UNDECODABLE_HEADERS)
    # The records around it are judged on their own (not records of ours: refused too).
    others = [reason for offset, reason in reasons.items() if offset != hostile_offset]
    assert len(others) == GOOD_BEFORE + 1 and UNDECODABLE_HEADERS not in others


async def test_the_workers_aiokafka_readers_skip_the_batch_and_keep_reading(
    poisoned: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Faust's consumer is aiokafka's: without the guard `getmany` raises UnicodeDecodeError
    # for that record at every call, and the worker crash-loops on it.
    monkeypatch.setattr(fetcher.PartitionRecords, "__init__", fetcher.PartitionRecords.__init__)
    monkeypatch.setattr(fetcher.PartitionRecords, aiokafka_guard._PATCHED, False, raising=False)
    aiokafka_guard.skip_batches_with_undecodable_headers()
    consumer = AIOKafkaConsumer(bootstrap_servers=poisoned, enable_auto_commit=False)
    await consumer.start()
    partitions = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    values: list[bytes] = []
    try:
        async with asyncio.timeout(10):
            while await consumer.position(partitions[0]) < GOOD_BEFORE + 2:
                fetched = await consumer.getmany(timeout_ms=200)
                values += [m.value for records in fetched.values() for m in records if m.value]
        assert values == [b"before"] * GOOD_BEFORE + [b"after"]
        # Past both hostile records: where a restart's committed position would be.
        assert await consumer.position(partitions[0]) == GOOD_BEFORE + 2
        assert await consumer.position(partitions[1]) == 1
    finally:
        await consumer.stop()
