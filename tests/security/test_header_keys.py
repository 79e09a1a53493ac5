"""A record whose header key is not UTF-8. Anyone who may write to a topic can send one,
and confluent-kafka raises SystemError when such a message's headers are read. That once
stopped a topic tailer for good (a gateway's views would stop following key revocations)
and would have crash-looped the sink on the same record. Every librdkafka reader now
refuses that one record and goes on: the tailers skip it, the sink dead-letters it.

The records are written by aiokafka's pure-Python batch builder, which writes whatever
bytes a header key's `encode` returns, to librdkafka's own mock cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiokafka.producer.message_accumulator as accumulator
import aiokafka.producer.producer as aiokafka_producer
import confluent_kafka
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from schemas.kafka import TailedRecord, TopicTailer
from schemas.kafka_security import KafkaSecurity
from schemas.rdkafka import UNDECODABLE_HEADERS
from sinks.prepare import RecentIds, prepare

TOPIC = "govledger.control"


class NotUtf8Key(str):
    """A header key whose bytes on the wire are not UTF-8."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfe-key"


@pytest.fixture
async def poisoned(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """A mock cluster's bootstrap whose topic holds, on one partition: b"before", the
    hostile record b"hostile", b"after"."""
    for module in (accumulator, aiokafka_producer):
        monkeypatch.setattr(module, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy)
    cluster = confluent_kafka.Producer({"test.mock.num.brokers": 1})  # lives as long as this
    brokers = cluster.list_topics(timeout=5).brokers.values()
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, b"before", key=b"acme", partition=0)
        hostile = [(NotUtf8Key("k"), b"v")]
        await producer.send_and_wait(TOPIC, b"hostile", key=b"acme", partition=0, headers=hostile)
        await producer.send_and_wait(TOPIC, b"after", key=b"acme", partition=0)
    finally:
        await producer.stop()
    yield bootstrap
    cluster.flush(1)


async def test_a_tailer_skips_the_record_and_keeps_following(poisoned: str) -> None:
    seen: list[TailedRecord] = []
    tailer = TopicTailer(poisoned, [TOPIC], seen.append, security=KafkaSecurity())
    await tailer.start()
    try:
        await asyncio.wait_for(tailer.caught_up.wait(), 10)
        assert [r.value for r in seen] == [b"before", b"after"]
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
        for _ in range(40):
            message = await asyncio.to_thread(consumer.poll, 0.25)
            if message is not None and message.error() is None:
                messages.append(message)
            if len(messages) == 3:
                break
    finally:
        consumer.close()
    assert len(messages) == 3

    prepared = prepare({TopicPartition(TOPIC, 0): messages}, RecentIds(100))

    reasons = {offset: reason for _, _, offset, _, reason in prepared.dead_letters}
    assert reasons[1] == UNDECODABLE_HEADERS
    assert [value for *_, value, _ in prepared.dead_letters][1] == b"hostile"
    # The records around it are judged on their own (not records of ours: refused too).
    assert UNDECODABLE_HEADERS not in (reasons[0], reasons[2])
