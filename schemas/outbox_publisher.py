"""A publisher that keeps every record in its outbox (schemas.outbox) until the store has
it: what a gateway and the admin API publish with.

Every sealed record is written to the outbox before it is sent. Confirmations (what the
sinks stored, schemas.confirmations) drop records from it. Unconfirmed records are sent
again with the same sealed bytes, in seq order:
- at start, those an earlier process of the same kind left (their files);
- after a send fails or acks stall, or an ack's offset goes back (a broker that came back
  empty between two sends): every unconfirmed record from the first, then the
  records that came meanwhile, before sending directly again. A broker that died and came
  back empty has lost what it acknowledged, so the resend starts at the outbox's first
  record, not at the failed one, and goes ahead of newer records (the processors' seq
  watermarks need each producer's records in order);
- when a record stays unconfirmed `resend_after_s` after it was last sent (the broker
  lost it, or the confirmation, without any send failing here).

When the outbox is full or its disk refuses writes, records are still sent; `overflowed`
counts those it did not keep, and the gateway refuses calls instead when lineage fails
closed (gateway/pipeline.py `_check_lineage`, the one place that decides).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import structlog

from schemas import authn
from schemas.authn import Keyring, Role
from schemas.outbox import Outbox, OutboxBusyError
from schemas.publisher import (
    DRAIN_BATCH_FRAMES,
    DRAIN_TIMEOUT_S,
    ENQUEUE_TIMEOUT_S,
    RECOVER_EVERY_S,
    ChainedPublisher,
    E,
)
from schemas.spool import Frame, Spool
from schemas.topics import RESENT_HEADER

log = structlog.get_logger(__name__)

RESEND_AFTER_S = 60.0
FSYNC_INTERVAL_S = 0.05
# An empty outbox file younger than this may be a starting sibling's not locked yet.
NEW_OUTBOX_GRACE_S = 10.0


class OutboxPublisher(ChainedPublisher):
    """Publishes one producer's records, keeping each in its outbox until it is stored."""

    def __init__(
        self,
        bootstrap: str,
        producer_id: str,
        folder: Path,
        *,
        max_bytes: int,
        fsync_interval_s: float = FSYNC_INTERVAL_S,
        resend_after_s: float = RESEND_AFTER_S,
        outbox: Outbox | None = None,
        linger_ms: int = 0,
        checkpoint_every: int = 1_000,
        checkpoint_interval_s: float = 60.0,
        role: Role | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        super().__init__(
            bootstrap,
            producer_id,
            linger_ms=linger_ms,
            checkpoint_every=checkpoint_every,
            checkpoint_interval_s=checkpoint_interval_s,
            role=role,
            keyring=keyring,
        )
        assert fsync_interval_s > 0 and resend_after_s > 0, "periodic work"
        self.folder = folder
        self.outbox = outbox or Outbox(folder, producer_id, max_bytes)
        self.fsync_interval_s = fsync_interval_s
        self.resend_after_s = resend_after_s
        # Outboxes earlier processes of this kind left, by producer id, until confirmed.
        self.adopted: dict[str, Outbox] = {}
        self.resent = 0
        self.lost = 0  # records neither kept nor sent (outbox full while the broker was away)
        self._maintainer: asyncio.Task[None] | None = None
        # Highest acked offset per (topic, partition): one going back means a new broker.
        self._acked_offsets: dict[tuple[Any, Any], int] = {}
        # Set when a record is written to the outbox: the maintainer sleeps until then (or
        # its resend check), so an idle publisher does not wake every fsync interval.
        self._written = asyncio.Event()
        # One thread fsyncs; the event loop hands it a descriptor and does not wait (see
        # `_sync`). The fsync in flight, if any.
        self._fsyncer = concurrent.futures.ThreadPoolExecutor(1, "outbox-fsync")
        self._fsyncing: concurrent.futures.Future[OSError | None] | None = None
        self._adopt_leftovers(max_bytes)

    def _adopt_leftovers(self, max_bytes: int) -> None:
        prefix = self.producer_id.split("-", 1)[0] + "-"
        for path in Outbox.leftovers(self.folder, prefix):
            if path.stem == self.producer_id:
                continue
            try:
                stat = path.stat()
                size_bytes = stat.st_size
                # Empty and new: a sibling process (GOVLEDGER_GATEWAY_PROCESSES) may have made
                # it a moment ago and not hold its lock yet: never take that lock. An older
                # empty one is a dead process's (adopted, then removed as all confirmed).
                if size_bytes == 0 and time.time() - stat.st_mtime < NEW_OUTBOX_GRACE_S:
                    continue
                left = Outbox(self.folder, path.stem, max(max_bytes, size_bytes))
            except OutboxBusyError:
                continue  # a live process of the same kind on this data dir
            except FileNotFoundError:
                continue  # a sibling that stopped removed it (all of it was stored)
            log.warning("outbox an earlier process left", path=str(path), records=left.unconfirmed)
            self.adopted[path.stem] = left

    # --- state ------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Whether a new record would be kept on disk (not full, disk writable)."""
        return self.outbox.accepting

    @property
    def overflowed(self) -> int:
        """Records not kept in the outbox because it was full."""
        return self.outbox.overflowed

    def confirm(self, producer_id: str, first_seq: int, last_seq: int) -> int:
        """The store has this producer's records first_seq..last_seq: forget them."""
        if producer_id == self.producer_id:
            return self.outbox.confirm(first_seq, last_seq)
        left = self.adopted.get(producer_id)
        return 0 if left is None else left.confirm(first_seq, last_seq)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Connect; send again what earlier processes left unconfirmed (confirmations the
        caller fed in before this dropped what the store already has)."""
        await self._producer.start()
        self._ticker = asyncio.create_task(self._tick())
        await self._send_spools_left()
        for left in list(self.adopted.values()):
            try:
                await self._resend(left, 0)
            except Exception as exc:  # noqa: BLE001 - the periodic resend tries again
                log.warning("leftover outbox not sent yet", error=str(exc))
        self._maintainer = asyncio.create_task(self._maintain())

    async def _send_spools_left(self) -> None:
        """Spools a gateway of before the outbox left (`<data_dir>/spool`): sent once."""
        for path in Spool.leftovers(self.folder.parent / "spool"):
            if not path.stem.startswith(self.producer_id.split("-", 1)[0] + "-"):
                continue
            log.warning("sending a spool an earlier version left", path=str(path))
            left = Spool(path.parent, path.stem, max(path.stat().st_size, 1))
            try:
                await self._drain(left, 0)
            except Exception as exc:  # noqa: BLE001 - kept for the next start
                log.warning("spool not sent yet", error=str(exc))
                continue
            left.clear()

    async def stop(self) -> None:
        """Flush, disconnect, sync the outboxes (unconfirmed records stay for next time)."""
        if self._maintainer is not None:
            self._maintainer.cancel()
            await asyncio.gather(self._maintainer, return_exceptions=True)
        if self._fsyncing is not None:  # a thread still holds a duplicate of the file
            await asyncio.gather(asyncio.wrap_future(self._fsyncing), return_exceptions=True)
        self._fsyncer.shutdown(wait=False)
        await super().stop()
        for outbox in (self.outbox, *self.adopted.values()):
            if outbox.unconfirmed:
                outbox.close()
            else:
                outbox.remove()  # all stored: nothing for the next process

    # --- publishing -------------------------------------------------------------------

    async def _publish_locked(self, topic: str, key: str, record: E) -> E:
        sealed, value = self.chain.seal_encoded(record)
        auth = authn.header_of(self.chain.headers(value)) or b""
        frame = Frame(topic, key.encode(), value, auth)
        kept = self.outbox.append(sealed.seq, frame)
        if not kept:
            log.error("outbox full; record sent without a copy", seq=sealed.seq)
        self._written.set()  # the maintainer fsyncs it within fsync_interval_s
        if self.degraded or self._stalled():
            self._hold_back(sealed.seq, kept)
            return sealed
        try:
            # The client blocks when it has no metadata or no room: the broker is away.
            # (asyncio.timeout, not wait_for: no task made per call on the response path.)
            async with asyncio.timeout(ENQUEUE_TIMEOUT_S):
                # Not prompt: nothing on the response path awaits the ack (`_delivered`
                # only forgets it, or starts recovery on a failure, which then comes at
                # the producer's next send or sweep: within LAZY_REPORT_S).
                future = await self._send(frame, prompt=False)
        except TimeoutError:
            self._hold_back(sealed.seq, kept)
            return sealed
        self._unacked[sealed.seq] = (frame, time.monotonic())
        future.add_done_callback(lambda done, seq=sealed.seq: self._delivered(seq, done))
        return sealed

    async def publish_and_wait(self, topic: str, key: str, record: E) -> E:
        """Seal, keep, send and wait for acks=all (admin changes: the caller must know)."""
        async with self._order:
            sealed, value = self.chain.seal_encoded(record)
            auth = authn.header_of(self.chain.headers(value)) or b""
            frame = Frame(topic, key.encode(), value, auth)
            if not self.outbox.append(sealed.seq, frame):
                log.error("outbox full; record sent without a copy", seq=sealed.seq)
            self._written.set()
            try:
                future = await self._send(frame)
            except BaseException:
                self.outbox.confirm(sealed.seq, sealed.seq)  # the caller is told it failed
                raise
            if self.chain.seq - self._checkpointed_seq >= self.checkpoint_every:
                await self._checkpoint_locked("records")
        try:
            await future
        except BaseException:
            # The caller learns the change failed (and may retry it under a new event id):
            # it must not be sent again later, as it would have been before the outbox.
            self.outbox.confirm(sealed.seq, sealed.seq)
            raise
        return sealed

    def _hold_back(self, seq: int, kept: bool) -> None:
        """The broker is not taking records: this one waits in the outbox for recovery."""
        if not kept:
            self.lost += 1
            log.error("record lost: outbox full and broker unavailable", seq=seq)
        self.spooled += 1
        self._start_recovery()

    def _start_recovery(self) -> None:
        if not self.degraded:
            log.error("broker not acknowledging; holding records in the outbox")
            self._recovery = asyncio.create_task(self._recover())

    def _delivered(self, seq: int, future: asyncio.Future[Any]) -> None:
        self._unacked.pop(seq, None)
        if future.cancelled():
            return
        if future.exception() is None:
            self._check_offset(future.result())
            return
        self.failed += 1
        log.error("record not delivered", seq=seq, error=str(future.exception()))
        self._start_recovery()

    def _check_offset(self, metadata: Any) -> None:
        """An ack at an offset below an earlier one on its partition: the broker came back
        empty, with no send failing here. What it had is gone: recover, as after a
        failure (only records sent since it came back may have overtaken them)."""
        where = (getattr(metadata, "topic", None), getattr(metadata, "partition", None))
        offset = getattr(metadata, "offset", None)
        if not isinstance(offset, int):
            return
        last = self._acked_offsets.get(where, -1)
        self._acked_offsets[where] = offset
        if offset <= last:
            log.error("broker came back empty; sending unconfirmed records again", at=where)
            self._start_recovery()

    async def _recover(self) -> None:
        """Until the broker has taken everything: wait for sends in flight to settle, send
        every unconfirmed record from the first, then those that came meanwhile."""
        sent_through = 0
        while True:
            await asyncio.sleep(RECOVER_EVERY_S)
            if self._unacked:
                continue  # sends in flight still decide themselves; order needs them settled
            try:
                sent_through = await self._resend(self.outbox, sent_through)
            except Exception as exc:  # noqa: BLE001 - any client failure: the broker is away
                log.info("broker still unavailable", error=str(exc))
                sent_through = 0  # what it took before may be gone again: from the first
                continue
            async with self._order:
                if not self.outbox.pending(sent_through, limit=1):
                    log.info("outbox sent; publishing directly again")
                    self._acked_offsets.clear()  # the broker may be a new one: offsets anew
                    return

    async def _resend(
        self, outbox: Outbox, after_seq: int, sent_before: float | None = None
    ) -> int:
        """Send unconfirmed records past `after_seq` again, in order, the first alone (a
        probe); the last seq the broker took. ConnectionError when it stopped taking."""
        batch_frames = 1
        while True:
            batch = outbox.pending(after_seq, sent_before=sent_before, limit=batch_frames)
            if not batch:
                return after_seq
            delivered = await self._send_again([frame for _, frame in batch])
            outbox.mark_sent([seq for seq, _ in batch[:delivered]])
            self.resent += delivered
            if delivered:
                after_seq = batch[delivered - 1][0]
            if delivered < len(batch):
                raise ConnectionError(f"{len(batch) - delivered} resent records not delivered")
            batch_frames = DRAIN_BATCH_FRAMES

    async def _send_again(self, frames: list[Frame]) -> int:
        """Send frames in order, marked as resent (the sink looks each up by event_id);
        how many, from the first, the broker acknowledged."""
        futures = []
        for frame in frames:
            headers = [*frame.headers, (RESENT_HEADER, b"1")]
            send = self._producer.send(frame.topic, frame.value, key=frame.key, headers=headers)
            futures.append(await asyncio.wait_for(send, DRAIN_TIMEOUT_S))
        results = await asyncio.wait_for(
            asyncio.gather(*futures, return_exceptions=True), DRAIN_TIMEOUT_S
        )
        return next(
            (i for i, r in enumerate(results) if isinstance(r, BaseException)), len(results)
        )

    def _sync(self, outbox: Outbox) -> None:
        """Outbox.sync with its fsync in a thread, on a duplicate of the file's descriptor
        (a compaction may replace the file meanwhile; the duplicate keeps the old one open,
        and the compaction fsyncs the new one itself). The duplicate shares the file's
        lock: `stop` waits for the fsync, so the lock goes with the outbox's close.

        The event loop does not wait for the fsync: its end would wake the loop once a
        call at one client's pace, for nothing but a failure, which the thread hands back
        (`Outbox.sync_failed`: the next sync tries again). One fsync at a time: while one
        runs, this outbox's writes wait for the next tick, which is kept due."""
        if self._fsyncing is not None and not self._fsyncing.done():
            self._written.set()  # a slow disk: try again after the next fsync interval
            return
        descriptor = outbox.prepare_sync()
        if descriptor is None:
            return
        loop = asyncio.get_running_loop()

        def report_failure(done: concurrent.futures.Future[OSError | None]) -> None:
            failure = done.result()  # on the fsync thread
            if failure is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed: process ending
                    loop.call_soon_threadsafe(self._fsync_failed, outbox, failure)

        self._fsyncing = self._fsyncer.submit(_fsync_and_close, descriptor)
        self._fsyncing.add_done_callback(report_failure)

    def _fsync_failed(self, outbox: Outbox, failure: OSError) -> None:
        outbox.sync_failed(failure)
        self._written.set()  # tried again after the next fsync interval

    async def _maintain(self) -> None:
        """fsync in batches (in a thread: a busy disk's fsync takes milliseconds the event
        loop would otherwise stall for); resend what stayed unconfirmed too long; drop
        emptied leftovers."""
        last_resend_check = time.monotonic()
        resend_check_s = min(self.resend_after_s / 4, 1.0)
        while True:
            # Asleep until a record is written or the resend check is due; then batched.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(resend_check_s):
                    await self._written.wait()
            await asyncio.sleep(self.fsync_interval_s)
            self._written.clear()
            for outbox in (self.outbox, *self.adopted.values()):
                self._sync(outbox)
            now = time.monotonic()
            if now - last_resend_check < resend_check_s:
                continue
            last_resend_check = now
            for producer_id, left in list(self.adopted.items()):
                if not left.unconfirmed:
                    log.info("leftover outbox confirmed; removed", producer_id=producer_id)
                    left.remove()
                    del self.adopted[producer_id]
            if self.degraded:
                continue
            try:
                for outbox in (*self.adopted.values(), self.outbox):
                    await self._resend(outbox, 0, now - self.resend_after_s)
            except Exception as exc:  # noqa: BLE001 - the broker is away: recover in order
                log.warning("resend failed", error=str(exc))
                self._start_recovery()


def _fsync_and_close(descriptor: int) -> OSError | None:
    """In a thread: fsync the descriptor and close it, whatever the event loop does
    meanwhile (so the number is never closed under a running fsync)."""
    try:
        os.fsync(descriptor)
    except OSError as exc:
        return exc
    finally:
        os.close(descriptor)
    return None
