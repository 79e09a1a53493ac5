"""A producer stops in bounded time even when librdkafka holds records it neither acks nor
fails (schemas/kafka_producer.py STOP_FLUSH_S): seen when a test's publisher stopped
during a broker outage and waited for ever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError

from schemas import kafka_producer
from schemas.kafka_producer import AsyncProducer

Report = Callable[[Any, Any], None]


class StuckClient:
    """librdkafka's producer as it behaves for a partition without a leader and no broker
    reachable: records stay queued, past their timeout, until purged."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.held: list[Report] = []
        self.purged = False
        self.closed = False

    def list_topics(self, topic: str | None, timeout: float) -> None:
        return None

    def produce(
        self, topic: str, value: bytes, key: bytes, *, headers: Any, on_delivery: Report
    ) -> None:
        self.held.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        if self.purged:
            held, self.held = self.held, []
            for report in held:
                report(KafkaError(KafkaError._PURGE_QUEUE), None)
            return len(held)
        time.sleep(min(timeout, 0.01))
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        self.purged = True

    def __len__(self) -> int:
        return len(self.held)

    def close(self) -> None:
        self.closed = True


async def test_stop_purges_what_librdkafka_never_settles(monkeypatch: pytest.MonkeyPatch) -> None:
    clients: list[StuckClient] = []

    def make(config: dict[str, Any]) -> StuckClient:
        clients.append(StuckClient(config))
        return clients[-1]

    monkeypatch.setattr("confluent_kafka.Producer", make)
    monkeypatch.setattr(kafka_producer, "STOP_FLUSH_S", 0.3)
    producer = AsyncProducer({})
    await producer.start()
    futures = [await producer.send("topic", b"value", key=b"key") for _ in range(3)]
    lazy = await producer.send("topic", b"value", key=b"key", prompt=False)
    # A flush under a timeout leaves the records' futures to their reports.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(producer.flush(), 0.05)

    started = time.monotonic()
    await asyncio.wait_for(producer.stop(), 10)
    assert time.monotonic() - started < 5
    (client,) = clients
    assert client.purged and client.closed
    assert all(future.done() for future in [*futures, lazy])
    for future in [*futures, lazy]:  # failed, not cancelled: their publishers keep them
        assert isinstance(future.exception(), Exception)
