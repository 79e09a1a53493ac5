"""Publishing a producer's records: each sealed into its hash chain, produced with acks=all."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import structlog

from schemas import codec
from schemas.codec import HashChain
from schemas.kafka import make_producer
from schemas.records import Event

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=Event)


class ChainedPublisher:
    """Publishes one producer's records, each sealed into its hash chain."""

    def __init__(self, bootstrap: str, producer_id: str, *, linger_ms: int = 0) -> None:
        self.chain = HashChain(producer_id)
        self._producer = make_producer(bootstrap, linger_ms=linger_ms, client_id=producer_id)
        self._pending: set[asyncio.Future[Any]] = set()
        self.failed = 0
        # Sealing and enqueueing happen under one lock so that the broker log holds each
        # producer's records in seq order: consumers' idempotence watermarks rely on it.
        self._order = asyncio.Lock()

    @property
    def producer_id(self) -> str:
        """This publisher's producer id."""
        return self.chain.producer_id

    @property
    def pending(self) -> int:
        """Records sent but not yet acknowledged."""
        return len(self._pending)

    async def start(self) -> None:
        """Connect to the broker."""
        await self._producer.start()

    async def publish(self, topic: str, key: str, record: E) -> E:
        """Seal and send; wait only until the record is queued (delivery is tracked)."""
        sealed, future = await self._enqueue(topic, key, record)
        self._pending.add(future)
        future.add_done_callback(self._delivered)
        return sealed

    async def publish_and_wait(self, topic: str, key: str, record: E) -> E:
        """Seal, send and wait for acks=all."""
        sealed, future = await self._enqueue(topic, key, record)
        await future
        return sealed

    async def _enqueue(self, topic: str, key: str, record: E) -> tuple[E, Any]:
        async with self._order:
            sealed = self.chain.seal(record)
            future = await self._producer.send(topic, codec.encode(sealed), key=key.encode())
        return sealed, future

    def _delivered(self, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            self.failed += 1
            log.error("record not delivered", error=str(future.exception()))

    async def stop(self) -> None:
        """Flush what is queued, then disconnect."""
        await self._producer.flush()
        await self._producer.stop()
