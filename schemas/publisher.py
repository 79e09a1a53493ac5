"""Publishing a producer's records: each sealed into its hash chain, produced with acks=all;
with a spool, records the broker cannot take are kept on disk and sent later, in order.

Consumers apply a producer's records once by `seq` watermark, which needs each key's
records in seq order. So once a record fails (or acks stall), every later record goes to
the spool instead of the broker; recovery resends the failed records first, then the
spool from its start, and only then goes back to sending directly.

Every publisher also seals a `ChainCheckpoint` carrying its head into its own chain, to
`govledger.checkpoints`: after every `checkpoint_every` records, every
`checkpoint_interval_s` seconds when records came since the last one, and at stop. A
checkpoint lets verification find a tail of the chain truncated in the store after it
(see replay.verify).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import structlog

from schemas import authn
from schemas.authn import Keyring, Role, SignedChain
from schemas.codec import HashChain
from schemas.ids import now_ms, uuid7
from schemas.kafka import make_producer
from schemas.kafka_producer import ProducerPort
from schemas.records import ChainCheckpoint, Event
from schemas.spool import Frame, Spool
from schemas.topics import CHECKPOINTS

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=Event)

# Acks slower than this mean the broker is not answering: spool instead of queueing.
STALL_S = 2.0
ENQUEUE_TIMEOUT_S = 0.1
RECOVER_EVERY_S = 0.5
DRAIN_BATCH_FRAMES = 1_000
DRAIN_TIMEOUT_S = 10.0
CHECKPOINT_EVERY = 1_000
CHECKPOINT_INTERVAL_S = 60.0


class Publisher(Protocol):
    """What the gateway, the admin API and the sink use of a publisher: ChainedPublisher
    in the processes, an in-memory one in the component tests (tests/component/support.py)."""

    @property
    def producer_id(self) -> str:
        """This publisher's producer id."""
        ...

    @property
    def pending(self) -> int:
        """Records sent but not yet acknowledged."""
        ...

    @property
    def degraded(self) -> bool:
        """Whether records are going to the spool because the broker is not taking them."""
        ...

    @property
    def accepting(self) -> bool:
        """Whether new work may be admitted."""
        ...

    async def start(self) -> None:
        """Connect; send what earlier processes left behind."""

    async def publish(self, topic: str, key: str, record: E) -> E:
        """Seal and send; wait only until the record is queued."""
        ...

    async def publish_and_wait(self, topic: str, key: str, record: E) -> E:
        """Seal, send and wait until the broker has the record."""
        ...

    async def stop(self) -> None:
        """Flush what is queued, then disconnect."""


def checkpoint_of(chain: HashChain, reason: str) -> ChainCheckpoint:
    """A checkpoint of the chain's head, to be sealed into that chain as its next record."""
    return ChainCheckpoint(
        event_id=uuid7(),
        event_type=ChainCheckpoint.event_type_name,
        occurred_at=now_ms(),
        tenant_id="",
        checkpoint_seq=chain.seq,
        checkpoint_hash=chain.head,
        record_count=chain.seq,
        reason=reason,
    )


class ChainedPublisher:
    """Publishes one producer's records, each sealed into its hash chain."""

    def __init__(
        self,
        bootstrap: str,
        producer_id: str,
        *,
        linger_ms: int = 0,
        spool: Spool | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
        role: Role | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        assert checkpoint_every > 0 and checkpoint_interval_s > 0, "checkpoints are periodic"
        # Signs with the given keyring, else the process's (see schemas.authn); the role
        # defaults to the one the producer id's prefix names.
        self.chain = SignedChain(producer_id, role, keyring)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        # Seq of the head the last checkpoint covered (its own seq minus one).
        self._checkpointed_seq = 0
        self._ticker: asyncio.Task[None] | None = None
        self._producer: ProducerPort = make_producer(
            bootstrap, linger_ms=linger_ms, client_id=producer_id
        )
        self._spool = spool
        self._keyring = keyring
        # Records sent and not yet acknowledged, by seq, with when they were sent.
        self._unacked: dict[int, tuple[Frame, float]] = {}
        # Records whose send failed, by seq: resent first when the broker is back.
        self._failed: dict[int, Frame] = {}
        self._recovery: asyncio.Task[None] | None = None
        self.failed = 0
        self.spooled = 0
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
        return len(self._unacked)

    @property
    def degraded(self) -> bool:
        """Whether records are going to the spool because the broker is not taking them."""
        return self._recovery is not None and not self._recovery.done()

    @property
    def accepting(self) -> bool:
        """Whether new work may be admitted: not degraded, or degraded with spool room."""
        if not self.degraded:
            return True
        return self._spool is not None and not self._spool.full

    async def start(self) -> None:
        """Connect to the broker; send what earlier processes left in the spool folder."""
        await self._producer.start()
        self._ticker = asyncio.create_task(self._tick())
        if self._spool is None:
            return
        for path in Spool.leftovers(self._spool.path.parent):
            left = Spool(path.parent, path.stem, self._spool.max_bytes)
            log.warning("sending a spool an earlier run left", path=str(path))
            await self._drain(left, 0)
            left.clear()

    async def publish(self, topic: str, key: str, record: E) -> E:
        """Seal and send (or spool); wait only until the record is queued or on disk."""
        async with self._order:
            sealed = await self._publish_locked(topic, key, record)
            if self.chain.seq - self._checkpointed_seq >= self.checkpoint_every:
                await self._checkpoint_locked("records")
        return sealed

    async def _publish_locked(self, topic: str, key: str, record: E) -> E:
        sealed, value = self.chain.seal_encoded(record)
        auth = authn.header_of(self.chain.headers(value)) or b""
        frame = Frame(topic, key.encode(), value, auth)
        if self._spool is not None and (self.degraded or self._stalled()):
            self._to_spool(frame)
            return sealed
        if self._spool is None:
            future = await self._send(frame)
        else:
            try:
                # The client blocks when it has no metadata or no room: the broker is
                # away. A record the client never appended is safe to spool.
                future = await asyncio.wait_for(self._send(frame), ENQUEUE_TIMEOUT_S)
            except TimeoutError:
                self._to_spool(frame)
                return sealed
        self._unacked[sealed.seq] = (frame, time.monotonic())
        future.add_done_callback(lambda done, seq=sealed.seq: self._delivered(seq, done))
        return sealed

    async def publish_and_wait(self, topic: str, key: str, record: E) -> E:
        """Seal, send and wait for acks=all (admin changes: the caller must know)."""
        async with self._order:
            sealed, value = self.chain.seal_encoded(record)
            future = await self._producer.send(
                topic, value, key=key.encode(), headers=self.chain.headers(value)
            )
            if self.chain.seq - self._checkpointed_seq >= self.checkpoint_every:
                await self._checkpoint_locked("records")
        await future
        return sealed

    async def checkpoint(self, reason: str) -> ChainCheckpoint | None:
        """Seal and send a checkpoint of the head, if records came since the last one."""
        async with self._order:
            return await self._checkpoint_locked(reason)

    async def _checkpoint_locked(self, reason: str) -> ChainCheckpoint | None:
        head_seq = self.chain.seq
        if head_seq == self._checkpointed_seq:
            return None  # nothing new to vouch for (the last record is a checkpoint)
        record = self.chain.sign_checkpoint(checkpoint_of(self.chain, reason))
        sealed = await self._publish_locked(CHECKPOINTS.name, self.producer_id, record)
        self._checkpointed_seq = sealed.seq
        return sealed

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval_s)
            try:
                await self.checkpoint("interval")
            except Exception as exc:  # noqa: BLE001 - the next tick or stop tries again
                log.warning("checkpoint not sent", error=str(exc))

    def _stalled(self) -> bool:
        if not self._unacked:
            return False
        _, sent_at = next(iter(self._unacked.values()))
        return time.monotonic() - sent_at > STALL_S

    def _to_spool(self, frame: Frame) -> None:
        assert self._spool is not None, "only a spooling publisher spools"
        if not self.degraded:
            log.error("broker not acknowledging; spooling lineage", spool=str(self._spool.path))
            self._recovery = asyncio.create_task(self._recover())
        self._spool.append(frame)
        self.spooled += 1

    def _delivered(self, seq: int, future: asyncio.Future[Any]) -> None:
        frame, _ = self._unacked.pop(seq, (None, 0.0))
        if future.cancelled() or future.exception() is None:
            return
        self.failed += 1
        log.error("record not delivered", seq=seq, error=str(future.exception()))
        if self._spool is not None and frame is not None:
            self._failed[seq] = frame
            if not self.degraded:
                self._recovery = asyncio.create_task(self._recover())

    async def _recover(self) -> None:
        """Until the broker takes everything held back: wait for in-flight sends to settle,
        resend the failed ones in seq order, then the spool from its start."""
        assert self._spool is not None, "only a spooling publisher recovers"
        offset = 0
        while True:
            await asyncio.sleep(RECOVER_EVERY_S)
            if self._unacked:
                continue  # sends in flight still decide themselves; order needs them settled
            try:
                for seq in sorted(self._failed):
                    if not await self._send_all([self._failed[seq]]):
                        raise ConnectionError(f"record {seq} not delivered again")
                    del self._failed[seq]
                offset = await self._drain(self._spool, offset)
            except Exception as exc:  # noqa: BLE001 - any client failure: the broker is away; retry
                log.info("broker still unavailable", error=str(exc))
                continue
            async with self._order:
                if self._spool.size_bytes == offset and not self._failed:
                    self._spool.clear()
                    log.info("spool sent; publishing directly again")
                    return

    async def _drain(self, spool: Spool, offset: int) -> int:
        """Send spooled frames from `offset` to the current end; the offset reached. The
        first frame goes alone, as a probe, so a broker that is only half back does not
        fail a whole batch; a batch that fails part-way resumes after its delivered prefix
        (what was delivered after a failure is sent again, which consumers drop by seq)."""
        batch_frames = 1
        while True:
            batch: list[tuple[Frame, int]] = []
            for frame, end in spool.frames(offset):
                batch.append((frame, end))
                if len(batch) >= batch_frames:
                    break
            if not batch:
                return offset
            delivered = await self._send_all([frame for frame, _ in batch])
            if delivered:
                offset = batch[delivered - 1][1]
            if delivered < len(batch):
                raise ConnectionError(f"{len(batch) - delivered} spooled records not delivered")
            batch_frames = DRAIN_BATCH_FRAMES

    async def _send_all(self, frames: list[Frame]) -> int:
        """Send frames in order; how many, from the first, the broker acknowledged."""
        futures = [await asyncio.wait_for(self._send(frame), DRAIN_TIMEOUT_S) for frame in frames]
        results = await asyncio.wait_for(
            asyncio.gather(*futures, return_exceptions=True), DRAIN_TIMEOUT_S
        )
        return next(
            (i for i, r in enumerate(results) if isinstance(r, BaseException)), len(results)
        )

    async def _send(self, frame: Frame, *, prompt: bool = True) -> Any:
        """Enqueue one frame with its auth header. A frame spooled before records were
        authenticated has none: it is signed now, under its own producer's id. `prompt`:
        see AsyncProducer.send (False: nobody awaits the ack soon)."""
        if not frame.auth:
            producer_id = authn.producer_id_of(frame.value)
            signer = self.chain
            if producer_id != self.producer_id:
                signer = SignedChain(producer_id, None, self._keyring)
            frame = replace(frame, auth=authn.header_of(signer.headers(frame.value)) or b"")
        return await self._producer.send(
            frame.topic, frame.value, key=frame.key, headers=frame.headers, prompt=prompt
        )

    async def stop(self) -> None:
        """Flush what is queued, then disconnect. Records the broker has not taken stay in
        the spool for the next start."""
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        try:
            await self.checkpoint("stop")
        except Exception as exc:  # noqa: BLE001 - stopping goes on; the chain just ends open
            log.warning("final checkpoint not sent", error=str(exc))
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        if self._spool is not None and (self._failed or self._unacked):
            await self._keep_unsent()
        await self._producer.flush()
        await self._producer.stop()

    async def _keep_unsent(self) -> None:
        """Rewrite the spool as: failed and unacknowledged records by seq, then the spool."""
        assert self._spool is not None, "only a spooling publisher keeps records"
        try:
            await asyncio.wait_for(self._producer.flush(), DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.warning("broker did not acknowledge everything before stop")
        held = {**self._failed, **{seq: frame for seq, (frame, _) in self._unacked.items()}}
        spooled = [frame for frame, _ in self._spool.frames()]
        self._spool.clear()
        for seq in sorted(held):
            self._spool.append(held[seq])
        for frame in spooled:
            self._spool.append(frame)
        self._failed.clear()
