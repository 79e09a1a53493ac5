"""A bounded on-disk spool of records that could not be sent: one append-only file of
frames per producer, read back in the order written.

A file starts with the 8-byte mark `GLSPOOL2`; then frames of: topic length (u16), key
length (u16), value length (u32), auth length (u16), then the four byte strings (auth is
the record's `govledger-auth` header, so a spooled record is sent as it was signed). A
file without the mark was written before records were authenticated (frames without the
auth length and auth); its frames read with an empty auth, which the publisher signs
when it sends them. A frame cut short by a crash mid-write is ignored when read, and the
file restarts after the last whole frame.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HEADER = struct.Struct(">HHIH")
LEGACY_HEADER = struct.Struct(">HHI")
FILE_MARK = b"GLSPOOL2"
MAX_TOPIC_BYTES = 255
MAX_KEY_BYTES = 1024
MAX_AUTH_BYTES = 1024
AUTH_HEADER = "govledger-auth"


@dataclass(frozen=True, slots=True)
class Frame:
    """One spooled record."""

    topic: str
    key: bytes
    value: bytes
    auth: bytes = b""

    @property
    def size_bytes(self) -> int:
        """Bytes the frame takes on disk."""
        size = HEADER.size + len(self.topic.encode()) + len(self.key) + len(self.value)
        return size + len(self.auth)

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers the record is sent with."""
        return [(AUTH_HEADER, self.auth)] if self.auth else []


class Spool:
    """Frames appended to `<folder>/<name>.spool`, read back in order, then removed."""

    def __init__(self, folder: Path, name: str, max_bytes: int) -> None:
        assert max_bytes > 0, "a spool has room for something"
        assert "/" not in name and name, "one file name"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{name}.spool"
        self.max_bytes = max_bytes
        self.size_bytes = self.path.stat().st_size if self.path.exists() else 0

    @property
    def full(self) -> bool:
        """Whether the spool has reached its limit (callers stop admitting new work)."""
        return self.size_bytes >= self.max_bytes

    def append(self, frame: Frame) -> None:
        """Write one frame at the end. The limit is enforced where work is admitted: a
        record of work already done is never dropped, so it may overshoot by that work."""
        with self.path.open("ab") as handle:
            if handle.tell() == 0:
                handle.write(FILE_MARK)
                self.size_bytes += len(FILE_MARK)
            handle.write(frame_bytes(frame))
        self.size_bytes += frame.size_bytes

    def frames(self, offset_bytes: int = 0) -> Iterator[tuple[Frame, int]]:
        """Every whole frame from a byte offset on, in the order written, each with the
        offset just past it (where to resume)."""
        return read_frames(self.path, offset_bytes)

    def clear(self) -> None:
        """Forget every frame (after all were delivered)."""
        if self.path.exists():
            os.unlink(self.path)
        self.size_bytes = 0

    @staticmethod
    def leftovers(folder: Path) -> list[Path]:
        """Spool files in a folder, e.g. left by a process that stopped while degraded."""
        return sorted(folder.glob("*.spool")) if folder.exists() else []


def frame_bytes(frame: Frame) -> bytes:
    """One frame as written to a file (after the file's mark)."""
    topic = frame.topic.encode()
    assert len(topic) <= MAX_TOPIC_BYTES and len(frame.key) <= MAX_KEY_BYTES, "bounded ids"
    assert len(frame.auth) <= MAX_AUTH_BYTES, "bounded auth"
    data = HEADER.pack(len(topic), len(frame.key), len(frame.value), len(frame.auth))
    return data + topic + frame.key + frame.auth + frame.value


def read_frames(path: Path, offset_bytes: int = 0) -> Iterator[tuple[Frame, int]]:
    """Every whole frame of a spool-framed file from a byte offset on, in the order
    written, each with the offset just past it; a frame cut short ends the reading."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        marked = handle.read(len(FILE_MARK)) == FILE_MARK
        header_struct = HEADER if marked else LEGACY_HEADER
        offset_bytes = max(offset_bytes, len(FILE_MARK) if marked else 0)
        handle.seek(offset_bytes)
        position = offset_bytes
        while header := handle.read(header_struct.size):
            if len(header) < header_struct.size:
                return
            topic_len, key_len, value_len, *auth = header_struct.unpack(header)
            auth_len = auth[0] if auth else 0
            body = handle.read(topic_len + key_len + auth_len + value_len)
            if len(body) < topic_len + key_len + auth_len + value_len:
                return  # a frame cut short by a crash: never acknowledged, never sent
            position += header_struct.size + len(body)
            value_at = topic_len + key_len + auth_len
            frame = Frame(
                body[:topic_len].decode(),
                body[topic_len : topic_len + key_len],
                body[value_at:],
                body[topic_len + key_len : value_at],
            )
            yield frame, position
