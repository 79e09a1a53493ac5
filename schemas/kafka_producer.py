"""The producer every publisher sends with, on librdkafka (confluent-kafka), in aiokafka's
shape: `start`, `send` (an awaitable giving a future of the record's metadata), `flush`,
`stop`.

Why librdkafka: a gateway publishes one lineage record a call, and aiokafka built each
produce request, and read each ack, in Python on the gateway's event loop: about a third
of the gateway's CPU a call (docs/performance-gateway.md). librdkafka does that in C on
threads of its own; the event loop only hands the record over and later settles its
future.

The guarantees the publishers rely on are kept, each by a setting below:
- acks from every in-sync replica (`acks=all`);
- each partition's records in the order sent, retries included (one request in flight
  per connection: idempotence, which would allow five, needs InitProducerId, which the
  embedded broker lacks; consumers drop repeats by (producer_id, seq) instead);
- a keyed record on the partition aiokafka and Java clients pick (murmur2), so records
  of one tenant meet on one partition whichever client sent them;
- a record the broker does not take fails its future within `DELIVERY_TIMEOUT_MS`, as
  aiokafka's request timeout did, so the publishers' recovery starts.

Delivery reports (librdkafka makes them only inside `poll`) are settled on the event
loop in the order they came. While a record sent with `prompt=True` (the default) or a
`flush` waits, a thread of ours polls and hands each report to the loop at once. Records
sent with `prompt=False` (a gateway's lineage: nobody awaits its ack on the response
path) do not wake anything: the loop's next `send` polls for their reports, and the
thread sweeps every LAZY_REPORT_S for what is left (a failure among them is handed over
at that sweep). At one client's pace, a wake-up of the event loop and of the thread for
each ack cost more than the Python they ran.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import confluent_kafka
import structlog
from confluent_kafka import KafkaException

from schemas.kafka_security import KafkaSecurity
from schemas.rdkafka import base_config

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES = 8 * 1024 * 1024
# What aiokafka's request_timeout_ms was for us: a record not acked by then has failed.
DELIVERY_TIMEOUT_MS = 10_000
# How long `start` waits for the broker's metadata (aiokafka's start connected too).
START_TIMEOUT_S = 10.0
# Longest the report thread sleeps in `poll` before it looks whether to stop.
POLL_WAIT_S = 0.2
# How long `send` waits between tries while librdkafka's queue is full.
FULL_QUEUE_WAIT_S = 0.005
# How long `stop` waits for the records sent to be acked or failed. librdkafka fails a
# record by DELIVERY_TIMEOUT_MS, but not always: a record for a partition it has lost the
# leader of, with no broker reachable, can stay queued past it (librdkafka issues #2226,
# #999; a test's publisher stopping during an outage waited forever). Past this they are
# purged and fail (their publishers keep them in the spool or outbox).
STOP_FLUSH_S = DELIVERY_TIMEOUT_MS / 1000 + 5
# How often the report thread sweeps for reports of records sent with prompt=False that
# no later `send` collected: the longest such a report (a failure too) waits.
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
        # Reports not settled yet, in the order librdkafka made them: appended by whoever
        # polls (the report thread, or the loop in `send`), taken by the loop (`_settle`).
        self._reports: collections.deque[tuple[asyncio.Future[Delivered], Any, Any]] = (
            collections.deque()
        )
        # A report waiting is for a prompt record or a failure (reset by the report thread).
        self._hurry = False
        # Prompt records not settled yet, and `flush` calls waiting: while either is
        # there, the report thread polls and hands every report over at once.
        self._prompt_pending: set[asyncio.Future[Delivered]] = set()
        self._flushing = 0
        # Set when a prompt record is sent or a flush starts: the report thread, asleep
        # between sweeps, starts polling.
        self._wake = threading.Event()
        # Held by whoever polls: two threads polling at once could append one partition's
        # reports out of offset order, which the publishers read as a broker that lost
        # its data (`OutboxPublisher._check_offset`).
        self._polling = threading.Lock()
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
        client's queue is full. `prompt=False`: nobody awaits the future soon, and it may
        be settled (failed too) up to LAZY_REPORT_S late."""
        producer = self._live()
        if self._polling.acquire(blocking=False):  # else the report thread is polling
            try:
                producer.poll(0)  # reports made since the loop last looked, settled first
            finally:
                self._polling.release()
        if self._reports:
            self._settle()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivered] = loop.create_future()

        def report(error: Any, message: Any) -> None:  # on whichever thread polled
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
        if prompt:
            self._prompt_pending.add(future)
            self._wake.set()
        return future

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged or has failed."""
        self._flushing += 1
        self._wake.set()
        try:
            while self._outstanding:
                self._settle()
                # `wait`, not `gather`: a flush cancelled (under a timeout) must leave the
                # records' futures to their reports. One cancelled by its own waiter stays
                # outstanding until its report comes: wait for that, not spin on it.
                waiting = [future for future in self._outstanding if not future.done()]
                if waiting:
                    await asyncio.wait(waiting)
                else:
                    await asyncio.sleep(POLL_WAIT_S)
        finally:
            self._flushing -= 1

    async def stop(self) -> None:
        """Flush, stop serving reports, close the client."""
        if self._producer is None:
            return
        try:
            await asyncio.wait_for(self.flush(), STOP_FLUSH_S)
        except TimeoutError:
            await self._purge()
        self._stopping.set()
        self._wake.set()
        if self._reporter is not None:
            await asyncio.to_thread(self._reporter.join)
        producer, self._producer = self._producer, None
        await asyncio.to_thread(producer.close)

    async def _purge(self) -> None:
        """Fail what librdkafka still holds after STOP_FLUSH_S (see there)."""
        producer = self._live()
        log.warning("records neither acked nor failed at stop; purged", records=len(producer))
        with self._polling:  # the report thread may be polling: one poller at a time
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.poll(0)  # their reports: a purged record fails
        self._settle()
        for future in self._outstanding:
            if not future.done():
                future.set_exception(ConnectionError("not acknowledged before the stop"))
        self._outstanding.clear()
        self._prompt_pending.clear()

    # --- on the report thread -----------------------------------------------------------

    def _serve_reports(self) -> None:
        producer, loop = self._producer, self._loop
        assert producer is not None and loop is not None, "started"
        handed_s = time.monotonic()  # when reports were last handed to the loop
        while not self._stopping.is_set():
            if self._prompt_pending or self._flushing:
                with self._polling:
                    producer.poll(POLL_WAIT_S)  # returns as soon as a report is made
            else:
                self._wake.wait(LAZY_REPORT_S)  # until a prompt record, a flush, a sweep
                self._wake.clear()
                with self._polling:
                    producer.poll(0)
            if not self._reports:
                continue
            now = time.monotonic()
            if not (self._hurry or self._flushing or now - handed_s >= LAZY_REPORT_S):
                continue  # only acks nobody waits for, handed over recently: keep them
            self._hurry, handed_s = False, now
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
            self._prompt_pending.discard(future)
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
