"""The sink's consuming in a process of its own, feeding the store owner over a pipe.

One process owns chDB (sinks/store.py) and inserts; while it inserts, chDB's threads and
the Python that polls the broker used to share one GIL and one event loop, so consuming
and inserting barely overlapped. Here a child process does everything that needs no
store: it is the consumer-group member, polls, checks every record's authentication,
drops recent duplicates, groups records per schema and builds each Avro container file
(`SinkWriter.prepare`), then hands the batch to the owner. The owner does the rest of
`SinkWriter.write` (`store_prepared`: dead letters, redelivered and resent records
looked up, inserts, links) and answers; only then does the child commit the batch's
offsets, so exactness is what it was in one process: one batch in flight and one held
at most, offsets committed after the insert is durable, redeliveries deduped by event
id. Stats and lag come back after each commit.

The pipe is a socket pair between the two processes (nobody else holds either end);
frames are a length and a pickle of our own dataclasses and tuples. The first frame
hands the child its settings and the owner's keyring, as reading the same keyring file
would.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import TopicPartition

from schemas import authn, codec
from schemas.records import StoredRange
from schemas.settings import SinkSettings
from sinks.avro_batch import container_file
from sinks.prepare import PendingBatch, Prepared
from sinks.writer import SinkWriter

log = structlog.get_logger(__name__)

FRAME_HEADER = struct.Struct("!Q")
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
CHILD_ENTRY = "from sinks.consume_process import main; main()"
# The owner gives the child this long to drain and leave its group at a stop.
STOP_WAIT_S = 30.0


# --- frames -------------------------------------------------------------------------------


class Pipe:
    """Frames over one end of the socket pair. Received straight into one buffer per
    frame and sent without a copy (asyncio's streams cost the owner about 5 us a row,
    pausing and copying at every 64 KiB of a 70 MB batch)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        self.sock = sock
        self._sending = asyncio.Lock()

    async def send(self, message: Any) -> None:
        """Send one frame (frames from several tasks never interleave)."""
        data = pickle.dumps(message, protocol=5)
        loop = asyncio.get_running_loop()
        async with self._sending:
            await loop.sock_sendall(self.sock, FRAME_HEADER.pack(len(data)))
            await loop.sock_sendall(self.sock, data)

    async def receive(self) -> Any:
        """The next frame's object; None once the other process is gone."""
        try:
            head = await self._exactly(FRAME_HEADER.size)
            if head is None:
                return None
            data = await self._exactly(FRAME_HEADER.unpack(head)[0])
        except ConnectionError:
            return None
        return None if data is None else pickle.loads(data)  # noqa: S301 - our child's frames

    async def _exactly(self, size: int) -> bytearray | None:
        buffer = bytearray(size)
        view = memoryview(buffer)
        loop = asyncio.get_running_loop()
        got = 0
        while got < size:
            read = await loop.sock_recv_into(self.sock, view[got:])
            if read == 0:
                return None
            got += read
        return buffer

    def close(self) -> None:
        """Close this end (the other process reads the end of the stream)."""
        self.sock.close()


@dataclass(slots=True)
class WireBatch:
    """A PendingBatch as it crosses the pipe: the schema by fingerprint and partitions as
    indexes into a short list (a TopicPartition a record costs microseconds to pickle)."""

    fingerprint: bytes
    table: str
    values: list[bytes]
    auths: list[bytes]
    ids: list[str]
    topics: list[tuple[str, int]]
    partition_indexes: bytes
    offsets: list[int]
    firsts: list[tuple[int, int]] = field(default_factory=list)
    container: list[bytes] | None = None


def to_wire(batch: PendingBatch) -> WireBatch:
    """The batch, ready to pickle."""
    index: dict[TopicPartition, int] = {}
    indexes = bytearray()
    for tp in batch.partitions:
        at = index.get(tp)
        if at is None:
            at = index[tp] = len(index)
            assert at < 256, "more than 256 partitions in one batch"
        indexes.append(at)
    return WireBatch(
        batch.entry.fingerprint,
        batch.table,
        batch.values,
        batch.auths,
        batch.ids,
        [(tp.topic, tp.partition) for tp in index],
        bytes(indexes),
        batch.offsets,
        [(index[tp], i) for tp, i in batch.firsts.items()],
        batch.container,
    )


def from_wire(wire: WireBatch) -> PendingBatch:
    """The batch again, on the owner's side."""
    tps = [TopicPartition(topic, partition) for topic, partition in wire.topics]
    return PendingBatch(
        codec.schema_of(codec.MAGIC + wire.fingerprint),
        wire.table,
        wire.values,
        wire.auths,
        wire.ids,
        [tps[i] for i in wire.partition_indexes],
        wire.offsets,
        {tps[t]: i for t, i in wire.firsts},
        wire.container,
    )


def prepared_to_wire(prepared: Prepared) -> tuple[Any, ...]:
    """A Prepared as plain data for a frame."""
    return (
        [to_wire(b) for b in prepared.batches],
        prepared.dead_letters,
        prepared.resent,
        prepared.dropped,
    )


def prepared_from_wire(wire: tuple[Any, ...]) -> Prepared:
    """The Prepared of `prepared_to_wire`."""
    batches, dead_letters, resent, dropped = wire
    return Prepared([from_wire(b) for b in batches], dead_letters, resent, dropped)


# --- the child: consumer-group member ------------------------------------------------------


class FeedingWriter(SinkWriter):
    """A SinkWriter whose writes are the owner's: it prepares each batch, builds the
    container files, sends it and waits for the owner's answer before it commits (the
    holding, pausing, rebalancing and committing are SinkWriter's own)."""

    def __init__(
        self,
        settings: SinkSettings,
        send: Callable[[Any], Awaitable[None]],
        on_committed: Callable[[list[StoredRange]], Awaitable[None]] | None,
    ) -> None:
        # No store and no dead-letter publisher here: both are the owner's.
        super().__init__(settings, None, None, on_committed)  # type: ignore[arg-type]
        self._send = send
        self._answers: dict[int, asyncio.Future[None]] = {}
        self._sent = 0
        # Wall-clock time and this process's CPU seconds at the first poll that returned
        # records (for the owner's figures: the time before is the group join).
        self.first_records_at: float | None = None
        self.first_records_cpu_s = 0.0

    async def step(self, timeout_ms: int) -> int:
        polled = await super().step(timeout_ms)
        if polled and self.first_records_at is None:
            self.first_records_at = time.time()
            self.first_records_cpu_s = time.process_time()
        return polled

    async def write_prepared(self, prepared: Prepared) -> None:
        for batch in prepared.batches:
            if batch.container is None:
                batch.container = [container_file(batch.entry, batch.values, batch.auths)]
        self._sent += 1
        number = self._sent
        answer = self._answers[number] = asyncio.get_running_loop().create_future()
        try:
            wire = prepared_to_wire(prepared)
            await self._send(("batch", number, wire, self.first_records_at))
            await answer  # stored (or the owner is gone: ConnectionError, nothing committed)
        finally:
            self._answers.pop(number, None)

    def answered(self, number: int, error: str | None) -> None:
        """The owner's answer to batch `number`."""
        answer = self._answers.get(number)
        if answer is not None and not answer.done():
            if error is None:
                answer.set_result(None)
            else:
                answer.set_exception(RuntimeError(f"the store owner failed a batch: {error}"))

    def owner_gone(self) -> None:
        """The pipe closed: no write waiting for an answer will get one."""
        for answer in self._answers.values():
            if not answer.done():
                answer.set_exception(ConnectionError("the store owner is gone"))


async def child_main(fd: int) -> None:
    """The consume process: hello (settings), then consume until told to stop."""
    pipe = Pipe(socket.socket(fileno=fd))
    hello = await pipe.receive()
    if hello is None:
        return
    _, settings, roots, keyring_path, with_notices = hello
    if roots:  # none: every record is refused, as in the owner
        authn.install(authn.Keyring(roots, keyring_path))
    notices: Any = None
    if with_notices:
        from schemas.ids import new_producer_id
        from sinks.stored import StoredNotices

        notices = StoredNotices(settings.kafka_bootstrap, new_producer_id("sink"))
        await notices.start()
    send = pipe.send

    async def committed(ranges: list[StoredRange]) -> None:
        stats = feeding.stats
        await send(
            (
                "committed",
                stats.commit_failures,
                stats.last_insert_ms,
                await feeding.consumer_lag(),
                time.process_time() - feeding.first_records_cpu_s,
            )
        )
        if notices is not None:
            await notices(ranges)

    feeding = FeedingWriter(settings, send, committed)
    stop = asyncio.Event()

    async def listen() -> None:
        while True:
            message = await pipe.receive()
            if message is None:
                feeding.owner_gone()
                stop.set()
                return
            if message[0] == "answer":
                feeding.answered(message[1], message[2])
            elif message[0] == "stop":
                stop.set()

    listening = asyncio.create_task(listen())
    await feeding.start()
    running = asyncio.create_task(feeding.run())
    try:
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([running, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if running.done():
            running.result()  # a failed write: surface why (the owner sees the pipe close)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        if not listening.done():
            await feeding.drain()  # told to stop: write what is left first
            await send(("stopped",))
    finally:
        await feeding.stop()
        if notices is not None:
            await notices.stop()
        listening.cancel()
        pipe.close()


# --- the owner: the store's side -----------------------------------------------------------


class ConsumeProcess:
    """Starts the consume process and stores what it sends with the owner's SinkWriter
    (`store_prepared`), answering each batch once it is stored."""

    def __init__(
        self,
        settings: SinkSettings,
        writer: SinkWriter,
        *,
        notices: bool = False,
        # (Not `-m sinks.consume_process`: its classes must pickle under their own name.)
        command: Sequence[str] = (sys.executable, "-c", CHILD_ENTRY),
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.notices = notices
        self.command = list(command)
        self.lag: dict[str, int] = {}
        self.batches = 0
        # Wall-clock seconds of the child's first poll that returned records, and the
        # child's CPU seconds since then as of its last commit.
        self.first_records_at: float | None = None
        self.child_cpu_s = 0.0
        self._process: asyncio.subprocess.Process | None = None
        self._pipe: Pipe | None = None
        self._stopping = False

    async def start(self) -> None:
        """Start the child and hand it its settings."""
        mine, theirs = socket.socketpair()
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.command, str(theirs.fileno()), pass_fds=(theirs.fileno(),)
            )
        finally:
            theirs.close()
        self._pipe = Pipe(mine)
        # The owner's keyring (the child verifies and signs as the owner would).
        keyring = authn.installed()
        roots = [] if keyring is None else [keyring.secret(i) for i in keyring.ids]
        path = None if keyring is None else keyring.path
        hello = ("hello", self.settings, roots, path, self.notices)
        await self._pipe.send(hello)

    async def run(self) -> None:
        """Store each batch the child sends, in order, until it stops; an error if it
        exits without being told to."""
        pipe = self._pipe
        assert pipe is not None, "started"
        while True:
            message = await pipe.receive()
            if message is None or message[0] == "stopped":
                if self._stopping:
                    return
                raise RuntimeError("the sink's consume process exited")
            if message[0] == "batch":
                _, number, wire, first_records_at = message
                if self.first_records_at is None:
                    self.first_records_at = first_records_at
                await self.writer.store_prepared(prepared_from_wire(wire))
                self.batches += 1
                with contextlib.suppress(ConnectionError):  # gone: the next read says so
                    await pipe.send(("answer", number, None))
            elif message[0] == "committed":
                _, failures, last_insert_ms, self.lag, self.child_cpu_s = message
                self.writer.stats.commit_failures = failures
                self.writer.stats.last_insert_ms = last_insert_ms

    async def consumer_lag(self) -> dict[str, int]:
        """Records per topic not yet written and committed, as the child last counted."""
        return dict(self.lag)

    async def request_stop(self) -> None:
        """Ask the child to write what is left and leave its group (`run` then returns)."""
        self._stopping = True
        if self._pipe is not None:
            with contextlib.suppress(ConnectionError, OSError):
                await self._pipe.send(("stop",))

    async def stop(self) -> None:
        """End the child (after `request_stop` and `run`, it has already left)."""
        self._stopping = True
        if self._pipe is not None:
            self._pipe.close()
        process = self._process
        if process is not None and process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), STOP_WAIT_S)
            except TimeoutError:
                process.kill()
                await process.wait()


def main() -> None:
    """The consume process's entry; its one argument is its end of the socket pair."""
    import uvloop

    uvloop.run(child_main(int(sys.argv[1])))
