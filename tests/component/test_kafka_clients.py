"""Our librdkafka clients, the publishers' producer (schemas/kafka_producer.py) and the
topic tailer (schemas/kafka.py), against librdkafka's own mock cluster
(`test.mock.num.brokers`): real clients speaking the Kafka protocol over the loopback to
brokers a producer runs in-process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import KafkaException

from schemas import kafka_producer
from schemas.group_consumer import GroupConsumer, client_config
from schemas.kafka import TailedRecord, TopicTailer
from schemas.kafka_producer import AsyncProducer, Delivered, producer_config
from schemas.kafka_security import KafkaSecurity


def mock_config(**overrides: Any) -> dict[str, Any]:
    config = producer_config("unused:9092", client_id="test", linger_ms=0, security=KafkaSecurity())
    del config["bootstrap.servers"]  # the mock cluster is the bootstrap
    return {**config, "test.mock.num.brokers": 1, **overrides}


async def started(**overrides: Any) -> AsyncProducer:
    producer = AsyncProducer(mock_config(**overrides))
    await producer.start()
    return producer


async def test_a_keyed_record_lands_where_aiokafka_and_java_clients_put_it() -> None:
    producer = await started()
    try:
        keys = [f"tenant-{n}".encode() for n in range(64)]
        futures = [await producer.send("lineage", b"v", key=key) for key in keys]
        delivered = await asyncio.gather(*futures)
        partitions = sorted({d.partition for d in delivered})
        assert len(partitions) > 1, "the mock topic has several partitions"
        everything = list(range(max(partitions) + 1))
        pick = DefaultPartitioner()
        expected = [pick(key, everything, everything) for key in keys]
        assert [d.partition for d in delivered] == expected
    finally:
        await producer.stop()


async def test_each_partition_keeps_the_order_records_were_sent_in() -> None:
    producer = await started()
    try:
        futures = [
            await producer.send("lineage", str(n).encode(), key=b"k%d" % (n % 3))
            for n in range(300)
        ]
        delivered = await asyncio.gather(*futures)
        by_partition: dict[int, list[int]] = {}
        for d in delivered:
            by_partition.setdefault(d.partition, []).append(d.offset)
        for offsets in by_partition.values():
            assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        assert all(isinstance(d, Delivered) and d.topic == "lineage" for d in delivered)
    finally:
        await producer.stop()


async def test_flush_waits_for_every_ack_and_stop_leaves_nothing_outstanding() -> None:
    producer = await started(**{"linger.ms": 200})
    futures = [await producer.send("lineage", b"v", key=b"k") for _ in range(20)]
    assert not any(f.done() for f in futures), "lingering: nothing sent yet"
    await producer.flush()
    assert all(f.done() and f.exception() is None for f in futures)
    await producer.stop()
    with pytest.raises(RuntimeError, match="not started"):
        await producer.send("lineage", b"v")


async def test_a_record_the_broker_does_not_ack_in_time_fails_its_future() -> None:
    # Every broker answer takes 400 ms; a record has 100: the publisher's recovery must
    # hear of the failure rather than wait for ever.
    producer = await started(**{"test.mock.broker.rtt": 400, "message.timeout.ms": 100})
    try:
        future = await producer.send("lineage", b"v", key=b"k")
        began = time.monotonic()
        with pytest.raises(KafkaException):
            await asyncio.wait_for(future, 5)
        assert time.monotonic() - began < 2
    finally:
        await producer.stop()


async def test_start_fails_when_no_broker_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_producer, "START_TIMEOUT_S", 0.5)
    config = producer_config("127.0.0.1:9", client_id="test", linger_ms=0, security=KafkaSecurity())
    with pytest.raises(ConnectionError, match=r"cannot reach the broker at 127\.0\.0\.1:9\b"):
        await AsyncProducer(config).start()


def test_the_settings_keep_order_acks_and_the_java_partitioner() -> None:
    config = producer_config("kafka:9092", client_id="gw", linger_ms=0, security=KafkaSecurity())
    assert config["acks"] == "all"
    assert config["max.in.flight.requests.per.connection"] == 1
    assert config["partitioner"] == "murmur2_random"
    assert config["linger.ms"] == 0
    assert config["message.timeout.ms"] == kafka_producer.DELIVERY_TIMEOUT_MS


async def test_a_tailer_reads_from_the_first_record_then_follows_the_topic() -> None:
    producer = await started()
    try:
        # The mock brokers listen on the loopback; the tailer bootstraps from them.
        brokers = producer._live().list_topics(timeout=5).brokers.values()
        bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers)
        before = [await producer.send("state", b"old-%d" % n, key=b"k%d" % n) for n in range(5)]
        await asyncio.gather(*before)
        seen: list[TailedRecord] = []
        tailer = TopicTailer(bootstrap, ["state"], seen.append, security=KafkaSecurity())
        await tailer.start()
        try:
            await asyncio.wait_for(tailer.caught_up.wait(), 10)
            assert sorted(r.value for r in seen if r.value) == [b"old-%d" % n for n in range(5)]
            sent_at = time.monotonic()
            future = await producer.send(
                "state", b"new", key=b"k0", headers=[("govledger-resent", b"1")]
            )
            await future
            while not any(r.value == b"new" for r in seen):
                assert time.monotonic() - sent_at < 2, "a new record reaches the handler"
                await asyncio.sleep(0.01)
            new = next(r for r in seen if r.value == b"new")
            assert (new.topic, new.key, new.headers) == (
                "state",
                b"k0",
                [("govledger-resent", b"1")],
            )
            assert new.offset == (await future).offset
        finally:
            began = time.monotonic()
            await tailer.stop()
            assert time.monotonic() - began < 2, "stop waits at most for one poll"
    finally:
        await producer.stop()


async def test_a_tailer_refuses_a_topic_that_does_not_exist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = await started(**{"allow.auto.create.topics": False})
    try:
        brokers = producer._live().list_topics(timeout=5).brokers.values()
        bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers)
        monkeypatch.setattr("time.sleep", lambda _: None)  # its 50 looks, without waits
        tailer = TopicTailer(bootstrap, ["missing"], lambda _: None, security=KafkaSecurity())
        with pytest.raises(RuntimeError, match="topic missing does not exist"):
            await tailer.start()
        await tailer.stop()
    finally:
        await producer.stop()


async def test_a_group_member_reading_at_hand_answers_once_a_record_is_there() -> None:
    # The worker's intake and the notifier read so: a balance or a notice waits for no
    # fetch wait of ours (librdkafka's batch call would wait out the whole timeout).
    producer = await started()
    try:
        brokers = producer._live().list_topics(timeout=5).brokers.values()
        bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers)
        await (await producer.send("lineage", b"v", key=b"k"))
        config = client_config(
            bootstrap,
            group_id="at-hand",
            client_id="test",
            session_timeout_ms=6_000,
            fetch_max_wait_ms=10,
            security=KafkaSecurity(),
        )
        consumer = GroupConsumer(config)
        consumer.subscribe(["lineage"])
        await consumer.start()
        try:
            began = time.monotonic()
            fetched = await consumer.getmany(timeout_ms=30_000, max_records=100, at_hand=True)
            assert [m.value() for ms in fetched.values() for m in ms] == [b"v"]
            assert time.monotonic() - began < 15, "not the 30 s timeout"
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
