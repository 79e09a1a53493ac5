"""The worker's one reader of `govledger.lineage` and `govledger.control`.

Every lineage record feeds three domains (wallets, breakers, SLA). As three Faust agents
each record cost three stream iterations, three decodes and a state write per domain:
about 2 ms of CPU per record. Batched Faust agents still spent half the worker's CPU in
Faust's per-record delivery (about 250 µs a record, see docs/performance.md). So the
intake reads the two topics with a consumer of its own group, in batches; decodes each
record once; dead-letters what does not decode; and hands the decoded batch to each
domain's fold in turn, which writes its state once per key per batch. The domains'
outputs go through the Faust producer like every agent's.

The consumer is librdkafka's (schemas/group_consumer.py, as the sink's): anyone who may
write a topic can send a record whose header key is not UTF-8, which made aiokafka's poll
raise for good (the worker crashed on it at every restart). Here that record is
dead-lettered with its reason like any record that does not decode, and the batch goes
on.

Order: fold a batch (its outputs are sent at once), and at most every second let each
domain make durable what must be (`before_commit`: the SLA snapshots), flush the
producer, then commit the offsets folded. What a batch caused is on the broker before its
records are committed, so a worker killed at any point redelivers
records whose effects may already be published: each domain's fold is idempotent for
that. A commit refused after a rebalance is not an error: the partitions' new owner
folds the same records again, to the same result. (librdkafka tells no refusal from
another, so any refused commit is taken so: the records come again at worst, and the
next commit of their partitions covers them.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from schemas import authn, codec
from schemas.authn import SignedChain
from schemas.group_consumer import CommitError, GroupConsumer, client_config
from schemas.kafka import record_of
from schemas.kafka_security import KafkaSecurity
from schemas.rdkafka import UNDECODABLE_HEADERS, headers_of
from schemas.records import Event
from schemas.settings import StreamSettings
from schemas.topics import CONTROL, DLQ, LINEAGE
from streams import metrics as stream_metrics
from streams.dead_letters import rejecter

log = structlog.get_logger(__name__)

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
"""Faust topic options for raw bytes in and out: the codec does the Avro."""

BATCH_MAX = 4_000
"""Most records in one batch."""
COMMIT_INTERVAL_S = 1.0
"""How often folded offsets are committed (after a producer flush). Publishing does not
wait for it: a batch's outputs are sent as it is folded. A kill redelivers at most this
much, which the folds skip."""
STOP_TIMEOUT_S = 30.0
"""Longest a graceful stop waits for the last batch, the domains' stop and the commit."""
CONSUMER = "streams"
READY_PATH = "/ready/"
"""Page of the worker's web endpoint: 200 once the intake was assigned its partitions and
the domains reloaded their state, 503 before."""


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    """Where a record was read (`message`: a `schemas.kafka.TailedRecord`), in the shape
    the dead-letter helper reads off an event."""

    message: Any
    value: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Decoded:
    """A record of the batch, decoded (`record`, the event), with where it was read
    (`received.message`: topic, partition, offset) for watermarks and dead letters."""

    record: Event
    received: Received

    @property
    def partition(self) -> int:
        """The partition the record was read from."""
        return int(self.received.message.partition)


Fold = Callable[[Sequence[Decoded]], Awaitable[None]]
"""A domain's batch fold: records in the order read (each partition's in offset order)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Domain:
    """What the intake drives for a domain: its fold; what it must do when the intake is
    assigned partitions (before any of their records is folded; it is given the lineage
    partitions assigned); what it must do before each commit (after the fold, before the
    producer flush: what must be durable before the records are committed); what it
    must do when partitions are revoked (after the commit); and what it must do when the
    intake stops on purpose (after the last fold, before the last commit)."""

    fold: Fold
    on_assigned: Callable[[frozenset[int]], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    before_commit: Callable[[], Awaitable[None]] | None = None
    on_revoked: Callable[[], Awaitable[None]] | None = None


class _Offsets:
    """Offsets folded but not committed yet, and when the last commit was."""

    def __init__(self) -> None:
        self.pending: dict[Any, int] = {}
        self.committed_at_s = time.monotonic()
        self.committed: dict[Any, int] = {}  # last committed per partition (consumer lag)


class _Reassigned:
    """The consumer runs these (on the event loop, from its polling thread) while the
    intake may be mid-batch: the lock makes a rebalance wait for the batch and its commit,
    and keeps a domain's reload from replacing state a batch is folding into."""

    def __init__(
        self,
        domains: Sequence[Domain],
        folding: asyncio.Lock,
        commit: Callable[[], Awaitable[None]],
        ready: asyncio.Event,
    ) -> None:
        self._domains = domains
        self._folding = folding
        self._commit = commit
        self._ready = ready

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self._folding:
            await self._commit()
            for domain in self._domains:
                if domain.on_revoked is not None:
                    await domain.on_revoked()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        lineage = frozenset(tp.partition for tp in assigned if tp.topic == LINEAGE.name)
        async with self._folding:
            for domain in self._domains:
                if domain.on_assigned is not None:
                    await domain.on_assigned(lineage)
        self._ready.set()


def register(
    app: Any,
    settings: StreamSettings,
    chain: SignedChain,
    domains: Sequence[Domain],
    *,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run the intake as a task of the Faust app, for these domains in this order;
    `on_stop` runs when it stops on purpose, after the domains' and before the commit."""
    assert domains, "an intake with no domain would commit records nobody folded"
    reject = rejecter(app.topic(DLQ.name, **RAW), chain, CONSUMER)
    stopping, stopped, ready = asyncio.Event(), asyncio.Event(), asyncio.Event()
    stopped.set()  # until the task starts: a worker stopped before then waits for nothing
    metrics = stream_metrics.of(app)
    # The processor a domain is, for its fold lag: its package (streams.<name>.agent).
    processors = [domain.fold.__module__.split(".")[-2] for domain in domains]
    lag: dict[str, Any] = {}  # the running consumer and its offsets, read by /metrics
    metrics.watch_lag(lambda: stream_metrics.consumer_lag(CONSUMER, **lag))

    async def fold_batch(fetched: dict[Any, list[Any]]) -> dict[Any, int]:
        batch: list[Decoded] = []
        for messages in fetched.values():
            for message in messages:
                headers = headers_of(message)  # None: unreadable (never ask again)
                record = record_of(message, headers or [])
                received = Received(record, record.value or b"")
                if headers is None:
                    await reject(received, UNDECODABLE_HEADERS)
                    continue
                try:
                    # Authenticated first: a forged record is dead-lettered with its
                    # reason and folds into nothing.
                    batch.append(Decoded(authn.decode_message(record), received))
                except codec.DecodeError as exc:
                    await reject(received, str(exc))
        newest_ms = max((d.record.occurred_at for d in batch), default=None)
        for domain, processor in zip(domains, processors, strict=True):
            await domain.fold(batch)
            if newest_ms is not None:
                metrics.folded(processor, newest_ms)
        return {tp: messages[-1].offset() + 1 for tp, messages in fetched.items()}

    @app.task  # type: ignore[untyped-decorator]
    async def intake() -> None:
        stopped.clear()
        config = client_config(
            settings.kafka_bootstrap,
            group_id=f"{settings.worker_app_id}-intake",
            client_id="govledger-intake",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            fetch_max_wait_ms=settings.worker_fetch_wait_ms,
            security=KafkaSecurity.of(settings),
        )
        consumer = GroupConsumer(config)
        offsets = _Offsets()
        lag.update(consumer=consumer, committed=offsets.committed)

        async def commit() -> None:
            if not offsets.pending:
                return
            for domain in domains:
                if domain.before_commit is not None:
                    await domain.before_commit()
            await app.producer.flush()  # what the records caused is on the broker first
            try:
                await consumer.commit(dict(offsets.pending))
            except CommitError as exc:  # after a rebalance: the new owner folds them again
                log.info("intake commit refused", reason=str(exc))
            else:
                offsets.committed.update(offsets.pending)
            offsets.pending.clear()
            offsets.committed_at_s = time.monotonic()

        folding = asyncio.Lock()
        listener = _Reassigned(domains, folding, commit, ready)
        consumer.subscribe([LINEAGE.name, CONTROL.name], listener=listener)
        await consumer.start()
        try:
            while not stopping.is_set():
                fetched = await consumer.getmany(
                    timeout_ms=settings.worker_fetch_wait_ms, max_records=BATCH_MAX, at_hand=True
                )
                async with folding:
                    if fetched:
                        offsets.pending.update(await fold_batch(fetched))
                    if time.monotonic() - offsets.committed_at_s >= COMMIT_INTERVAL_S:
                        await commit()
        except Exception as exc:
            log.exception("intake stopped")
            await app.crash(exc)
            raise
        finally:
            try:
                for domain in domains:
                    if domain.on_stop is not None:
                        await domain.on_stop()
                if on_stop is not None:
                    await on_stop()
                await commit()
            except Exception:  # the consumer must still leave its group
                log.exception("intake stop incomplete: records since the last commit come again")
            lag.clear()  # a stopped consumer has no lag to show
            await consumer.stop()
            stopped.set()

    @app.page(READY_PATH)  # type: ignore[untyped-decorator]
    async def intake_ready(web: Any, _request: Any) -> Any:
        # `govledger up` waits for this: a worker is ready once it holds partitions.
        return web.json({"ready": ready.is_set()}, status=200 if ready.is_set() else 503)

    @app.on_before_shutdown.connect  # type: ignore[untyped-decorator]
    async def stop_intake(_app: Any, **_: Any) -> None:
        # Faust's producer still runs here: the domains' last outputs can go out.
        stopping.set()
        try:
            await asyncio.wait_for(stopped.wait(), timeout=STOP_TIMEOUT_S)
        except TimeoutError:
            log.exception("intake did not stop in time: records since the last commit come again")
