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
    # hear of the failure rather than wait for ever, whether or not the sender awaits it
    # (one nobody awaits is failed at the report thread's next sweep).
    producer = await started(**{"test.mock.broker.rtt": 400, "message.timeout.ms": 100})
    try:
        future = await producer.send("lineage", b"v", key=b"k")
        not_awaited = await producer.send("lineage", b"w", key=b"k", prompt=False)
        began = time.monotonic()
        for failing in (future, not_awaited):
            with pytest.raises(KafkaException):
                await asyncio.wait_for(failing, 5)
        assert time.monotonic() - began < 2
    finally:
        await producer.stop()


async def wait_for_report(producer: AsyncProducer) -> None:
    """Until librdkafka has made a report the event loop has not settled (polled here, on
    the loop's thread, as `send` polls)."""
    deadline = time.monotonic() + 5
    while not producer._reports:
        assert time.monotonic() < deadline, "no delivery report in 5 s"
        producer._live().poll(0)
        await asyncio.sleep(0.005)


async def test_an_ack_nobody_awaits_waits_for_the_next_send_or_a_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway's lineage ack wakes neither the event loop nor the report thread: the
    next send settles it, in order, or a flush does; a prompt record's ack is handed over
    at once (with the sweep a minute away, only the prompt path settles it in time)."""
    monkeypatch.setattr(kafka_producer, "LAZY_REPORT_S", 60.0)
    producer = await started()
    try:
        await asyncio.sleep(0.3)  # the report thread asleep until its sweep
        first = await producer.send("lineage", b"1", key=b"k", prompt=False)
        await wait_for_report(producer)
        await asyncio.sleep(0.05)
        assert not first.done(), "acked, and the loop was not woken for it"
        second = await producer.send("lineage", b"2", key=b"k", prompt=False)
        assert first.done() and first.result().offset >= 0, "settled by the next send"
        await asyncio.wait_for(producer.flush(), 5)
        assert second.result().offset == first.result().offset + 1
        prompt = await producer.send("lineage", b"3", key=b"k")
        assert (await asyncio.wait_for(prompt, 5)).offset == second.result().offset + 1
    finally:
        await producer.stop()


async def test_acks_are_settled_in_the_order_each_partition_made_them() -> None:
    """The loop (in `send`) and the report thread both poll for reports; the publishers
    read an offset going back as a broker that lost its data, so acks of one partition
    must be settled in offset order whichever thread polled them."""
    producer = await started()
    settled: list[Delivered] = []
    try:
        futures = []
        for n in range(1500):
            future = await producer.send("lineage", b"v", key=b"k", prompt=n % 7 == 0)
            future.add_done_callback(lambda done: settled.append(done.result()))
            futures.append(future)
            if n % 50 == 0:
                await asyncio.sleep(0)  # let acks and hand-overs interleave with sends
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        await asyncio.sleep(0)  # the last done callbacks
        offsets = [d.offset for d in settled]
        assert len(offsets) == 1500
        assert offsets == sorted(offsets)
    finally:
        await producer.stop()


async def test_an_ack_nobody_awaits_is_settled_by_its_deadline_without_another_send() -> None:
    producer = await started()
    try:
        future = await producer.send("lineage", b"v", key=b"k", prompt=False)
        await asyncio.wait_for(future, kafka_producer.LAZY_REPORT_S + 5)
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
