"""The producer every publisher sends with, on librdkafka (confluent-kafka), in aiokafka's
shape: `start`, `send` (an awaitable giving a future of the record's metadata), `flush`,
`stop`.

Why librdkafka: a gateway publishes one lineage record a call, and aiokafka built each
produce request, and read each ack, in Python on the gateway's event loop: about a third
of the gateway's CPU a call (docs/performance.md). librdkafka does that in C on threads of
its own; the event loop only hands the record over and later settles its future.

The guarantees the publishers rely on are kept, each by a setting below:
- acks from every in-sync replica (`acks=all`);
- each partition's records in the order sent, retries included (one request in flight
  per connection: idempotence, which would allow five, needs InitProducerId, which the
  embedded broker lacks; consumers drop repeats by (producer_id, seq) instead);
- a keyed record on the partition aiokafka and Java clients pick (murmur2), so records
  of one tenant meet on one partition whichever client sent them;
- a record the broker does not take fails its future within `DELIVERY_TIMEOUT_MS`, as
  aiokafka's request timeout did, so the publishers' recovery starts.

Delivery reports are served by one thread of ours (librdkafka makes them only inside
`poll`) and settled on the event loop in the order they came. A record sent with
`prompt=True` (the default), or one that failed, has its report handed to the loop at
once. The others (a gateway's lineage: nobody awaits its ack on the response path) wait
for the loop's next `send`, or LAZY_REPORT_S at most: at one client's pace, waking the
event loop for each ack was one of its few wake-ups a call, each costing more than the
Python it ran.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import confluent_kafka
from confluent_kafka import KafkaException

from schemas.kafka_security import KafkaSecurity
from schemas.rdkafka import base_config

MAX_REQUEST_BYTES = 8 * 1024 * 1024
# What aiokafka's request_timeout_ms was for us: a record not acked by then has failed.
DELIVERY_TIMEOUT_MS = 10_000
# How long `start` waits for the broker's metadata (aiokafka's start connected too).
START_TIMEOUT_S = 10.0
# Longest the report thread sleeps in `poll` before it looks whether to stop.
POLL_WAIT_S = 0.2
# How long `send` waits between tries while librdkafka's queue is full.
FULL_QUEUE_WAIT_S = 0.005
# Longest the report of a record sent with prompt=False waits for the event loop's next
# `send` before the report thread hands it over.
LAZY_REPORT_S = 0.2


class Delivered(NamedTuple):
    """Where the broker put a record (aiokafka's RecordMetadata, in the fields we read)."""

    topic: str
    partition: int
    offset: int


class ProducerPort(Protocol):
    """What a publisher needs of a producer (AsyncProducer; the tests' in-memory brokers)."""

    async def start(self) -> None: ...

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        prompt: bool = True,
    ) -> asyncio.Future[Any]: ...

    async def flush(self) -> None: ...

    async def stop(self) -> None: ...


def producer_config(
    bootstrap: str, *, client_id: str, linger_ms: int, security: KafkaSecurity
) -> dict[str, Any]:
    """librdkafka's settings for a publisher's producer (see the module's docstring)."""
    assert linger_ms >= 0
    return {
        **base_config(bootstrap, client_id=client_id, security=security),
        "acks": "all",
        "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 1,
        "partitioner": "murmur2_random",
        # librdkafka lingers 5 ms by default; a call's record goes out at once.
        "linger.ms": linger_ms,
        "message.max.bytes": MAX_REQUEST_BYTES,
        "request.timeout.ms": DELIVERY_TIMEOUT_MS,
        "message.timeout.ms": DELIVERY_TIMEOUT_MS,
    }


class AsyncProducer:
    """A librdkafka producer with the async shape of aiokafka's."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._producer: confluent_kafka.Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reporter: threading.Thread | None = None
        self._stopping = threading.Event()
        # Reports not settled yet, in the order librdkafka made them: only the report
        # thread appends (only it polls), only the event loop takes (`_settle`).
        self._reports: collections.deque[tuple[asyncio.Future[Delivered], Any, Any]] = (
            collections.deque()
        )
        # A report waiting is for a prompt record or a failure (read and reset by the
        # report thread only).
        self._hurry = False
        # `flush` calls waiting: every report is handed over at once meanwhile.
        self._flushing = 0
        # Futures not settled yet: what `flush` waits for.
        self._outstanding: set[asyncio.Future[Delivered]] = set()

    async def start(self) -> None:
        """Make the client and wait for the broker's metadata (ConnectionError if it does
        not answer within START_TIMEOUT_S); start serving delivery reports."""
        self._loop = asyncio.get_running_loop()
        producer = confluent_kafka.Producer(self._config)
        try:
            await asyncio.to_thread(producer.list_topics, None, START_TIMEOUT_S)
        except KafkaException as exc:
            await asyncio.to_thread(producer.close)
            bootstrap = self._config.get("bootstrap.servers")
            raise ConnectionError(f"cannot reach the broker at {bootstrap}: {exc}") from exc
        self._producer = producer
        self._stopping.clear()
        self._reporter = threading.Thread(
            target=self._serve_reports, name="kafka-producer-reports", daemon=True
        )
        self._reporter.start()

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        prompt: bool = True,
    ) -> asyncio.Future[Delivered]:
        """Hand a record to the client; a future of where the broker put it, or of the
        KafkaException that says why not. Waits (as aiokafka's send blocks) only while the
        client's queue is full. `prompt=False`: nobody awaits the future soon, and its
        success may be settled up to LAZY_REPORT_S late (a failure is settled at once)."""
        producer = self._live()
        if self._reports:
            self._settle()  # acks that came since the loop last looked, before this one's
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivered] = loop.create_future()

        def report(error: Any, message: Any) -> None:  # on the report thread
            self._reports.append((future, error, message))
            if prompt or error is not None:
                self._hurry = True

        while True:
            try:
                producer.produce(topic, value, key, headers=list(headers or ()), on_delivery=report)
                break
            except BufferError:
                await asyncio.sleep(FULL_QUEUE_WAIT_S)
        self._outstanding.add(future)
        return future

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged or has failed."""
        self._flushing += 1
        try:
            while self._outstanding:
                self._settle()
                await asyncio.gather(*list(self._outstanding), return_exceptions=True)
        finally:
            self._flushing -= 1

    async def stop(self) -> None:
        """Flush, stop serving reports, close the client."""
        if self._producer is None:
            return
        await self.flush()
        self._stopping.set()
        if self._reporter is not None:
            await asyncio.to_thread(self._reporter.join)
        producer, self._producer = self._producer, None
        await asyncio.to_thread(producer.close)

    # --- on the report thread -----------------------------------------------------------

    def _serve_reports(self) -> None:
        producer, loop = self._producer, self._loop
        assert producer is not None and loop is not None, "started"
        waiting_since: float | None = None  # when the oldest report not handed over came
        while not self._stopping.is_set():
            wait_s = POLL_WAIT_S
            if waiting_since is not None:
                wait_s = max(0.0, waiting_since + LAZY_REPORT_S - time.monotonic())
            producer.poll(wait_s)
            if not self._reports:
                waiting_since = None  # the loop settled them on a send
                continue
            now = time.monotonic()
            waiting_since = now if waiting_since is None else waiting_since
            if not (self._hurry or self._flushing or now - waiting_since >= LAZY_REPORT_S):
                continue
            self._hurry, waiting_since = False, None
            try:
                loop.call_soon_threadsafe(self._settle)
            except RuntimeError:
                return  # the loop is closed: nobody waits for these any more

    # --- on the event loop ----------------------------------------------------------------

    def _settle(self) -> None:
        """Settle every report waiting, oldest first."""
        reports = self._reports
        while reports:
            future, error, message = reports.popleft()
            self._outstanding.discard(future)
            if future.done():
                continue
            if error is not None:
                future.set_exception(KafkaException(error))
            else:
                future.set_result(Delivered(message.topic(), message.partition(), message.offset()))

    def _live(self) -> confluent_kafka.Producer:
        if self._producer is None:
            raise RuntimeError("the producer is not started")
        return self._producer
