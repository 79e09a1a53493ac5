"""A bounded on-disk spool of records that could not be sent: one append-only file of
frames per producer, read back in the order written.

Frame: topic length (u16), key length (u16), value length (u32), then the three byte
strings. A frame cut short by a crash mid-write is ignored when read, and the file
restarts after the last whole frame.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HEADER = struct.Struct(">HHI")
MAX_TOPIC_BYTES = 255
MAX_KEY_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Frame:
    """One spooled record."""

    topic: str
    key: bytes
    value: bytes

    @property
    def size_bytes(self) -> int:
        """Bytes the frame takes on disk."""
        return HEADER.size + len(self.topic.encode()) + len(self.key) + len(self.value)


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
        topic = frame.topic.encode()
        assert len(topic) <= MAX_TOPIC_BYTES and len(frame.key) <= MAX_KEY_BYTES, "bounded ids"
        data = HEADER.pack(len(topic), len(frame.key), len(frame.value)) + topic + frame.key
        with self.path.open("ab") as handle:
            handle.write(data + frame.value)
        self.size_bytes += frame.size_bytes

    def frames(self, offset_bytes: int = 0) -> Iterator[tuple[Frame, int]]:
        """Every whole frame from a byte offset on, in the order written, each with the
        offset just past it (where to resume)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            handle.seek(offset_bytes)
            position = offset_bytes
            while header := handle.read(HEADER.size):
                if len(header) < HEADER.size:
                    return
                topic_len, key_len, value_len = HEADER.unpack(header)
                body = handle.read(topic_len + key_len + value_len)
                if len(body) < topic_len + key_len + value_len:
                    return  # a frame cut short by a crash: never acknowledged, never sent
                position += HEADER.size + len(body)
                frame = Frame(
                    body[:topic_len].decode(),
                    body[topic_len : topic_len + key_len],
                    body[topic_len + key_len :],
                )
                yield frame, position

    def clear(self) -> None:
        """Forget every frame (after all were delivered)."""
        if self.path.exists():
            os.unlink(self.path)
        self.size_bytes = 0

    @staticmethod
    def leftovers(folder: Path) -> list[Path]:
        """Spool files in a folder, e.g. left by a process that stopped while degraded."""
        return sorted(folder.glob("*.spool")) if folder.exists() else []
