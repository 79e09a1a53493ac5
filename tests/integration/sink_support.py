"""A broker and sink writers in the test process, for modules that drive `SinkWriter`
directly against the real Tansu broker and chDB (test_sink, test_sink_faults)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

from govledger.broker import start_tansu
from schemas.ids import new_producer_id
from schemas.kafka import ensure_topics
from schemas.publisher import ChainedPublisher
from schemas.settings import SinkSettings
from sinks.store import Store
from sinks.writer import SinkWriter
from tests.integration.stack import free_port

WritingSink = Callable[[], Awaitable[SinkWriter]]
"""Starts one more writer (each a member of the sink's consumer group)."""


@contextlib.contextmanager
def embedded_broker(log_dir: Path, partitions: int = 2) -> Iterator[str]:
    """Tansu on a free port with the topics made; its bootstrap address."""
    port = free_port()
    log = (log_dir / "broker.log").open("ab")
    broker = start_tansu(port, log)
    try:
        asyncio.run(ensure_topics(f"127.0.0.1:{port}", partitions))
        yield f"127.0.0.1:{port}"
    finally:
        broker.terminate()
        broker.wait(timeout=10)
        log.close()


@contextlib.asynccontextmanager
async def sink_writers(settings: SinkSettings, store: Store) -> AsyncIterator[WritingSink]:
    """Writers started on demand, sharing one dead-letter publisher; all stopped at the end."""
    dlq = ChainedPublisher(settings.kafka_bootstrap, new_producer_id("sink"), role="sink")
    await dlq.start()
    writers: list[SinkWriter] = []

    async def make() -> SinkWriter:
        writer = SinkWriter(settings, store, dlq)
        await writer.start()
        writers.append(writer)
        return writer

    try:
        yield make
    finally:
        for writer in writers:
            await writer.stop()
        await dlq.stop()
