"""A producer's outbox: every record it sent, kept on disk until the store confirms it.

The embedded broker keeps topics in memory: a broker that dies takes with it what it
acknowledged and the sink had not stored yet. So a gateway (and the admin API) keeps
each record in `<folder>/<producer_id>.outbox` from before it is sent until the sink
says the store has it (sinks/stored.py publishes, per written batch, the stored seq
ranges of each producer; see schemas/confirmations.py). Unconfirmed records are sent
again, in seq order, with the same sealed bytes: event-id dedup in the sink and
per-producer seq watermarks in the processors make resends harmless.

The file has the spool's framing (schemas.spool: mark, then frames with their auth
header), one frame per record in seq order. A frame cut short by a crash (or by a full
disk) is cut off at load. Confirmations are not written: they live in memory and come
again from the confirmation topic, or the records are resent (harmless) after a restart.

Writes go to the OS at once (a killed process loses nothing it answered); fsync happens
in batches (`sync`, on a timer), so a lost machine loses at most that interval. The file
is compacted (confirmed frames removed) by writing a new file, fsyncing it and renaming
it over the old one, so a crash leaves either file whole.

Bounded: past `max_bytes` of unconfirmed records, `append` keeps nothing (the caller
counts the overflow). A failed write (ENOSPC, EIO) keeps the record in memory, within
the same bound, and every later append or sync writes the held records first, so the
outbox recovers by itself when the disk has room again.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from schemas import codec
from schemas.spool import FILE_MARK, HEADER, Frame, frame_bytes, read_frames

log = structlog.get_logger(__name__)

SUFFIX = ".outbox"
WATERMARK_SUFFIX = ".confirmed"
# Compact when the confirmed bytes on file reach this and at least the unconfirmed bytes:
# each compaction copies the unconfirmed frames once, so copies cost at most what was
# confirmed since the last one.
COMPACT_MIN_BYTES = 1_048_576


class OutboxBusyError(RuntimeError):
    """Another live process holds this outbox file."""


@dataclass(slots=True)
class Entry:
    """Where one unconfirmed record lies in the file, and when it was last sent."""

    start: int
    end: int
    sent_at: float
    # When this process kept it (or found it, left by an earlier one): its age in metrics.
    kept_at: float = 0.0


class Outbox:
    """One producer's unconfirmed records, on disk, in seq order."""

    def __init__(
        self,
        folder: Path,
        producer_id: str,
        max_bytes: int,
        *,
        write: Callable[[int, bytes], int] = os.write,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert max_bytes > 0, "an outbox has room for something"
        assert producer_id and "/" not in producer_id, "one file name"
        folder.mkdir(parents=True, exist_ok=True)
        self.producer_id = producer_id
        self.path = folder / f"{producer_id}{SUFFIX}"
        self.max_bytes = max_bytes
        self._write = write  # a seam: tests inject ENOSPC here
        self._clock = clock
        self._entries: dict[int, Entry] = {}
        self._held: dict[int, Frame] = {}  # records a failed write left in memory
        self._held_bytes = 0
        self.live_bytes = 0  # unconfirmed bytes on file
        self.size_bytes = 0  # the file's size
        self.overflowed = 0  # records not kept: the outbox was full
        self.write_failures = 0
        self.last_seq = 0
        self._dirty = False
        # Every seq below this one is confirmed, as last written to the watermark file
        # beside the outbox: a restarted producer does not send those again (the store
        # may have deleted them since, by retention).
        self.watermark_path = folder / f"{producer_id}{WATERMARK_SUFFIX}"
        self._saved_watermark = 0
        self._fd = self._open_locked(self.path)
        self._load()

    # --- state ------------------------------------------------------------------------

    @property
    def unconfirmed(self) -> int:
        """Records kept and not yet confirmed."""
        return len(self._entries) + len(self._held)

    @property
    def full(self) -> bool:
        """Whether the next record would not be kept."""
        return self.live_bytes + self._held_bytes >= self.max_bytes

    @property
    def writable(self) -> bool:
        """Whether the last write succeeded (no record waits in memory for the disk)."""
        return not self._held

    @property
    def accepting(self) -> bool:
        """Whether a new record would be kept on disk."""
        return self.writable and not self.full

    def oldest_age_s(self) -> float:
        """Seconds since the oldest unconfirmed record on file was kept; 0 when none."""
        oldest = next(iter(self._entries.values()), None)
        return 0.0 if oldest is None else max(self._clock() - oldest.kept_at, 0.0)

    # --- writing ----------------------------------------------------------------------

    def append(self, seq: int, frame: Frame) -> bool:
        """Keep one record (seqs rise); False when it was not kept because the outbox is
        full. A record whose write fails is kept in memory and written later."""
        assert seq > self.last_seq, "records are kept in seq order"
        size = frame.size_bytes
        if self.live_bytes + self._held_bytes + size > self.max_bytes:
            self.overflowed += 1
            return False
        self.last_seq = seq
        if self._held:
            self._write_held()
        if self._held or not self._write_frame(seq, frame):
            self._held[seq] = frame
            self._held_bytes += size
        return True

    def _write_frame(self, seq: int, frame: Frame) -> bool:
        data = frame_bytes(frame)
        if self.size_bytes == 0:
            data = FILE_MARK + data
        start = self.size_bytes
        try:
            written = self._write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write: {written} of {len(data)} bytes")
        except OSError as exc:
            self.write_failures += 1
            log.error("outbox write failed; record kept in memory", error=str(exc))  # noqa: TRY400
            self._cut_back(start)
            return False
        self.size_bytes = start + len(data)
        entry_start = self.size_bytes - frame.size_bytes
        now = self._clock()
        self._entries[seq] = Entry(entry_start, self.size_bytes, now, now)
        self.live_bytes += frame.size_bytes
        self._dirty = True
        return True

    def _cut_back(self, size: int) -> None:
        """Drop a partly written frame, so the file ends on a whole one."""
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:  # the load cuts it off later
            log.warning("outbox not cut back", error=str(exc))

    def _write_held(self) -> None:
        while self._held:
            seq, frame = next(iter(self._held.items()))
            if not self._write_frame(seq, frame):
                return
            del self._held[seq]
            self._held_bytes -= frame.size_bytes
        log.info("outbox writable again")

    @property
    def watermark(self) -> int:
        """The lowest seq not confirmed (every seq below it is)."""
        firsts = [next(iter(kept), None) for kept in (self._entries, self._held)]
        return min((seq for seq in firsts if seq is not None), default=self.last_seq + 1)

    def _save_watermark(self) -> None:
        watermark = self.watermark
        if watermark <= max(self._saved_watermark, 1):
            return  # nothing newly confirmed (it never moves back)
        partial = self.watermark_path.with_suffix(WATERMARK_SUFFIX + ".partial")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                data = f"{watermark}\n".encode()
                if self._write(fd, data) != len(data):
                    raise OSError("short write of the watermark")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, self.watermark_path)
        except OSError as exc:  # records below it are sent again after a restart: harmless
            log.warning("outbox watermark not saved", error=str(exc))
            return
        self._saved_watermark = watermark

    def sync(self) -> None:
        """Write held records, fsync what was written since the last sync, and save the
        confirmed watermark when it moved."""
        if self._held:
            self._write_held()
        self._save_watermark()
        if self._dirty:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                log.error("outbox fsync failed", error=str(exc))  # noqa: TRY400
                return
            self._dirty = False

    def prepare_sync(self) -> int | None:
        """`sync` for a caller that fsyncs elsewhere (a thread): write held records, save
        the watermark, and return a duplicate descriptor of the file to fsync and close,
        or None when nothing was written since the last sync. Records written after this
        call are left for the next sync."""
        if self._held:
            self._write_held()
        self._save_watermark()
        if not self._dirty:
            return None
        try:
            descriptor = os.dup(self._fd)
        except OSError as exc:
            log.error("outbox fsync failed", error=str(exc))  # noqa: TRY400
            return None
        self._dirty = False
        return descriptor

    def sync_failed(self, exc: OSError) -> None:
        """The fsync of a `prepare_sync` failed: the next sync tries again."""
        log.error("outbox fsync failed", error=str(exc))
        self._dirty = True

    # --- confirming and resending -----------------------------------------------------

    def confirm(self, first_seq: int, last_seq: int) -> int:
        """Forget the records with seq in [first_seq, last_seq]; how many were kept."""
        dropped = 0
        for kept in (self._entries, self._held):
            if last_seq - first_seq < len(kept):
                seqs = [s for s in range(first_seq, last_seq + 1) if s in kept]
            else:
                seqs = [s for s in kept if first_seq <= s <= last_seq]
            for seq in seqs:
                value = kept.pop(seq)
                if isinstance(value, Entry):
                    self.live_bytes -= value.end - value.start
                else:
                    self._held_bytes -= value.size_bytes
            dropped += len(seqs)
        if dropped:
            self._maybe_compact()
        return dropped

    def pending(
        self, after_seq: int = 0, *, sent_before: float | None = None, limit: int = 1_000
    ) -> list[tuple[int, Frame]]:
        """Up to `limit` unconfirmed records with seq past `after_seq`, in seq order (those
        last sent before `sent_before` only, if given)."""
        found: list[tuple[int, Frame]] = []
        for seq, entry in self._entries.items():
            if len(found) >= limit:
                return found
            if seq > after_seq and (sent_before is None or entry.sent_at < sent_before):
                found.append((seq, self._frame_at(entry)))
        if sent_before is not None:
            return found  # held records are written (and timed) when the disk takes them
        for seq, frame in self._held.items():
            if len(found) >= limit:
                break
            if seq > after_seq:
                found.append((seq, frame))
        return found

    def mark_sent(self, seqs: list[int]) -> None:
        """Records just sent again: their resend clock starts over."""
        now = self._clock()
        for seq in seqs:
            entry = self._entries.get(seq)
            if entry is not None:
                entry.sent_at = now

    def _frame_at(self, entry: Entry) -> Frame:
        data = os.pread(self._fd, entry.end - entry.start, entry.start)
        return _parse_frame(data)

    # --- compaction -------------------------------------------------------------------

    def _maybe_compact(self) -> None:
        confirmed = self.size_bytes - len(FILE_MARK) - self.live_bytes
        if confirmed < max(COMPACT_MIN_BYTES, self.live_bytes):
            return
        try:
            self.compact()
        except OSError as exc:  # the old file stays whole; tried again on a later confirm
            log.warning("outbox not compacted", error=str(exc))

    def compact(self) -> None:
        """Rewrite the file with the unconfirmed records only: a new file, fsynced, renamed
        over the old one (a crash leaves one or the other whole)."""
        partial = self.path.with_suffix(SUFFIX + ".partial")
        fd = self._open_locked(partial, truncate=True)
        try:
            entries: dict[int, Entry] = {}
            position = 0
            data = [FILE_MARK]
            position += len(FILE_MARK)
            for seq, entry in self._entries.items():
                chunk = os.pread(self._fd, entry.end - entry.start, entry.start)
                data.append(chunk)
                entries[seq] = Entry(position, position + len(chunk), entry.sent_at, entry.kept_at)
                position += len(chunk)
            blob = b"".join(data) if entries else b""
            if self._write(fd, blob) != len(blob):
                raise OSError("short write while compacting")
            os.fsync(fd)
            os.replace(partial, self.path)
            _fsync_folder(self.path.parent)
        except BaseException:
            os.close(fd)
            partial.unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._fd = fd
        self._entries = entries
        self.size_bytes = len(blob)
        self._dirty = False

    # --- files ------------------------------------------------------------------------

    @staticmethod
    def _open_locked(path: Path, *, truncate: bool = False) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        fd = os.open(path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutboxBusyError(f"{path} is held by another process") from None
        return fd

    def _load(self) -> None:
        """Index the records a previous process left and did not see confirmed below its
        watermark; cut off a frame cut short."""
        try:
            self._saved_watermark = int(self.watermark_path.read_text().strip() or 0)
        except (OSError, ValueError):
            self._saved_watermark = 0
        with self.path.open("rb") as handle:
            if handle.read(len(FILE_MARK)) != FILE_MARK:
                os.ftruncate(self._fd, 0)  # empty, or cut within its mark
        end = 0
        start = len(FILE_MARK)
        for frame, position in read_frames(self.path):
            try:
                seq = codec.read_envelope(frame.value).seq
            except codec.DecodeError as exc:
                log.warning("outbox frame unreadable; skipped", path=str(self.path), error=str(exc))
            else:
                if seq > self.last_seq:
                    self.last_seq = seq
                    if seq >= self._saved_watermark:
                        self._entries[seq] = Entry(start, position, 0.0, self._clock())
                        self.live_bytes += position - start
            start = end = position
        self.size_bytes = os.fstat(self._fd).st_size
        if self.size_bytes and end < self.size_bytes:
            log.warning("outbox frame cut short; cut off", path=str(self.path), at=end)
            os.ftruncate(self._fd, end)
            self.size_bytes = end

    def close(self) -> None:
        """Sync, drop confirmed records from the file, and close (the file stays for the
        next process)."""
        self.sync()
        if self.size_bytes > len(FILE_MARK) + self.live_bytes:
            try:
                self.compact()
            except OSError as exc:
                log.warning("outbox not compacted at close", error=str(exc))
        os.close(self._fd)

    def remove(self) -> None:
        """Close and delete the file (every record confirmed)."""
        assert not self.unconfirmed, "only an outbox with nothing left is removed"
        os.close(self._fd)
        self.path.unlink(missing_ok=True)
        self.watermark_path.unlink(missing_ok=True)

    @staticmethod
    def leftovers(folder: Path, prefix: str) -> Iterator[Path]:
        """Outbox files of producers whose id starts with `prefix` (earlier processes)."""
        if folder.exists():
            yield from sorted(folder.glob(f"{prefix}*{SUFFIX}"))


def _parse_frame(data: bytes) -> Frame:
    topic_len, key_len, value_len, auth_len = HEADER.unpack_from(data)
    at = HEADER.size
    topic = data[at : at + topic_len].decode()
    at += topic_len
    key = data[at : at + key_len]
    at += key_len
    auth = data[at : at + auth_len]
    at += auth_len
    assert len(data) - at == value_len, "an entry spans one whole frame"
    return Frame(topic, key, data[at:], auth)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
