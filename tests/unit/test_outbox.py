"""The outbox file (schemas.outbox): what a producer sent stays on disk, in seq order,
until confirmed; compaction, crash-cut frames, the bound and a full disk."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from schemas.codec import HashChain
from schemas.outbox import Outbox, OutboxBusyError
from schemas.spool import Frame, read_frames
from tests.unit import builders

PRODUCER = "gateway-outbox-test"


def sealed_frames(count: int) -> list[tuple[int, Frame]]:
    """`count` lineage records of one producer, sealed, as an outbox keeps them."""
    chain = HashChain(PRODUCER)
    frames = []
    for _ in range(count):
        sealed, value = chain.seal_encoded(builders.call())
        frames.append((sealed.seq, Frame("govledger.lineage", b"acme", value, b"v1.r.gateway.m")))
    return frames


def kept_seqs(outbox: Outbox) -> list[int]:
    return [seq for seq, _ in outbox.pending(limit=1_000_000)]


def reopened(outbox: Outbox) -> Outbox:
    outbox.close()
    return Outbox(outbox.path.parent, PRODUCER, outbox.max_bytes)


def test_records_are_kept_in_order_and_read_back_by_the_next_process(tmp_path: Path) -> None:
    frames = sealed_frames(5)
    outbox = Outbox(tmp_path, PRODUCER, 1 << 20)
    for seq, frame in frames:
        assert outbox.append(seq, frame)
    assert outbox.pending(limit=10) == frames
    again = reopened(outbox)
    assert again.pending(limit=10) == frames
    assert again.pending(3, limit=10) == frames[3:]
    assert again.last_seq == 5


def test_confirmed_ranges_drop_only_their_records(tmp_path: Path) -> None:
    # A broker loss: 3-4 were lost, 1-2 and 5-7 stored. Explicit ranges keep 3-4 (a
    # "highest stored" watermark of 7 would have dropped them).
    outbox = Outbox(tmp_path, PRODUCER, 1 << 20)
    for seq, frame in sealed_frames(8):
        outbox.append(seq, frame)
    assert outbox.confirm(5, 7) == 3
    assert outbox.confirm(1, 2) == 2
    assert outbox.confirm(1, 2) == 0  # a second sink's notice for the same records
    assert kept_seqs(outbox) == [3, 4, 8]
    assert kept_seqs(reopened(outbox)) == [3, 4, 8]  # closing drops the confirmed ones


def test_after_a_crash_what_was_confirmed_below_the_watermark_is_not_sent_again(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path, PRODUCER, 1 << 20)
    for seq, frame in sealed_frames(8):
        outbox.append(seq, frame)
    outbox.confirm(1, 3)
    outbox.confirm(6, 7)
    outbox.sync()  # the periodic sync saves the watermark: below 4 all is confirmed
    os.close(outbox._fd)  # killed: no compaction at close
    # 6-7 were confirmed out of order: the next process sends them again (harmless);
    # 1-3 may be gone from the store by now (retention) and must not come back.
    assert kept_seqs(Outbox(tmp_path, PRODUCER, 1 << 20)) == [4, 5, 6, 7, 8]


def test_compaction_rewrites_the_file_with_the_unconfirmed_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("schemas.outbox.COMPACT_MIN_BYTES", 65_536)
    frames = sealed_frames(301)
    outbox = Outbox(tmp_path, PRODUCER, 1 << 30)
    for seq, frame in frames[:300]:
        outbox.append(seq, frame)
    size_before = outbox.path.stat().st_size
    assert size_before > 2 * 65_536
    outbox.confirm(1, 290)
    assert outbox.path.stat().st_size < size_before // 20
    assert outbox.pending(limit=100) == frames[290:300]
    outbox.append(*frames[300])
    assert kept_seqs(reopened(outbox)) == list(range(291, 302))
    assert not list(tmp_path.glob("*.partial"))


def test_a_compaction_that_fails_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("schemas.outbox.COMPACT_MIN_BYTES", 65_536)
    frames = sealed_frames(300)

    def write_until_compaction(fd: int, data: bytes) -> int:
        if len(data) > 10_000:  # only the compaction writes this much at once
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    outbox = Outbox(tmp_path, PRODUCER, 1 << 30, write=write_until_compaction)
    for seq, frame in frames:
        outbox.append(seq, frame)
    outbox.confirm(1, 200)  # compaction tried, failed: the old file still holds everything
    assert kept_seqs(outbox) == list(range(201, 301))
    assert len(list(read_frames(outbox.path))) == 300
    # Closing tries again and fails again; the watermark still says 1-200 are confirmed.
    assert kept_seqs(reopened(outbox)) == list(range(201, 301))
    assert not list(tmp_path.glob("*.partial"))


def test_a_frame_cut_short_by_a_crash_is_cut_off_and_appending_goes_on(tmp_path: Path) -> None:
    frames = sealed_frames(3)
    outbox = Outbox(tmp_path, PRODUCER, 1 << 20)
    for seq, frame in frames[:2]:
        outbox.append(seq, frame)
    outbox.close()
    whole = outbox.path.stat().st_size
    with outbox.path.open("ab") as handle:  # the crash: half of the third frame
        handle.write(b"\x00\x11\x00\x04\x00\x00\x05\x00\x00\x0egovledger")
    again = Outbox(tmp_path, PRODUCER, 1 << 20)
    assert again.path.stat().st_size == whole
    assert again.append(*frames[2])
    assert reopened(again).pending(limit=10) == frames


def test_a_file_cut_within_its_mark_reads_as_empty(tmp_path: Path) -> None:
    (tmp_path / f"{PRODUCER}.outbox").write_bytes(b"GLSP")
    outbox = Outbox(tmp_path, PRODUCER, 1 << 20)
    assert outbox.unconfirmed == 0
    frames = sealed_frames(1)
    outbox.append(*frames[0])
    assert reopened(outbox).pending() == frames


def test_past_its_bound_the_outbox_keeps_nothing_and_counts(tmp_path: Path) -> None:
    frames = sealed_frames(10)
    bound = sum(frame.size_bytes for _, frame in frames[:4])
    outbox = Outbox(tmp_path, PRODUCER, bound)
    assert [outbox.append(seq, frame) for seq, frame in frames[:6]] == [True] * 4 + [False] * 2
    assert outbox.full and not outbox.accepting and outbox.overflowed == 2
    outbox.confirm(1, 4)
    assert outbox.accepting
    assert outbox.append(*frames[6])
    assert kept_seqs(outbox) == [7]


def test_a_full_disk_keeps_records_in_memory_until_writes_succeed(tmp_path: Path) -> None:
    disk_full = True

    def write(fd: int, data: bytes) -> int:
        if disk_full:
            os.write(fd, data[:7])  # a partial write, then the error
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    frames = sealed_frames(6)
    outbox = Outbox(tmp_path, PRODUCER, 1 << 20, write=write)
    disk_full = False
    outbox.append(*frames[0])
    disk_full = True
    for seq, frame in frames[1:4]:
        assert outbox.append(seq, frame)  # kept, in memory
    assert not outbox.writable and not outbox.accepting and outbox.write_failures == 3
    assert kept_seqs(outbox) == [1, 2, 3, 4]
    outbox.sync()  # still full: still held
    disk_full = False
    outbox.sync()  # space is back: held records are written, in order
    assert outbox.writable and outbox.accepting
    outbox.append(*frames[4])
    assert reopened(outbox).pending(limit=10) == frames[:5]


def test_confirming_a_record_held_in_memory_forgets_it(tmp_path: Path) -> None:
    def write(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    outbox = Outbox(tmp_path, PRODUCER, 1 << 20, write=write)
    for seq, frame in sealed_frames(3):
        outbox.append(seq, frame)
    assert outbox.confirm(2, 3) == 2
    assert kept_seqs(outbox) == [1]


def test_fsync_is_batched_not_per_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr("schemas.outbox.os.fsync", synced.append)
    outbox = Outbox(tmp_path, PRODUCER, 1 << 20)
    for seq, frame in sealed_frames(50):
        outbox.append(seq, frame)
    assert synced == []
    outbox.sync()
    outbox.sync()  # nothing new: no second fsync
    assert len(synced) == 1


def test_stale_records_are_those_last_sent_before_a_moment(tmp_path: Path) -> None:
    now = [100.0]
    outbox = Outbox(tmp_path, PRODUCER, 1 << 20, clock=lambda: now[0])
    frames = sealed_frames(3)
    outbox.append(*frames[0])
    now[0] = 200.0
    outbox.append(*frames[1])
    outbox.append(*frames[2])
    assert [s for s, _ in outbox.pending(sent_before=150.0)] == [1]
    outbox.mark_sent([1])
    assert outbox.pending(sent_before=150.0) == []


def test_one_process_at_a_time_holds_an_outbox(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, PRODUCER, 1 << 20)
    with pytest.raises(OutboxBusyError):
        Outbox(tmp_path, PRODUCER, 1 << 20)
    outbox.close()
    Outbox(tmp_path, PRODUCER, 1 << 20).close()
