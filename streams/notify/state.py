"""What the notifier keeps on disk so that a restart sends nothing twice: each (route,
event) whose delivery finished (delivered, given up or refused), and the open incidents
(incident key -> event id of the record that opened it: a resolve's dedup key).

An append-only file of JSON lines, each fsync'd before the notifier commits the consumed
offsets: a delivery's line is written as soon as its answer is in (before its attempt
record is published and before the commit), so a notifier killed at any point resends
at most the one request it was waiting on (receivers dedupe by webhook-id). The line
carries the final attempt's record fields until a later line says it was published: a
notifier killed in between publishes it at its next start (same event id: the sink
stores it once). It is rewritten smaller when it grows past twice its bound; the oldest
delivered pairs go first (their events are long committed). A line that does not parse
(a write cut short by a crash) is skipped."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import orjson


class DeliveryLog:
    """The finished deliveries and open incidents, in memory and on disk."""

    def __init__(self, path: Path, max_entries: int) -> None:
        self.path = path
        self.max_entries = max_entries
        self.finished: dict[tuple[str, str], None] = {}
        self.incidents: dict[str, str] = {}
        # Final attempts whose record is not known to be published: (route, event) -> fields.
        self.unpublished: dict[tuple[str, str], dict[str, object]] = {}
        self._lines = 0
        self._load()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        for line in raw.splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(entry, dict):
                continue
            self._lines += 1
            if isinstance(done := entry.get("d"), list) and len(done) == 2:
                pair = (str(done[0]), str(done[1]))
                self.finished[pair] = None
                if isinstance(fields := entry.get("a"), dict):
                    self.unpublished[pair] = fields
            elif isinstance(sent := entry.get("p"), list) and len(sent) == 2:
                self.unpublished.pop((str(sent[0]), str(sent[1])), None)
            elif isinstance(opened := entry.get("o"), list) and len(opened) == 2:
                self.incidents[str(opened[0])] = str(opened[1])
            elif isinstance(closed := entry.get("c"), str):
                self.incidents.pop(closed, None)
        self._trim()

    def _trim(self) -> None:
        while len(self.finished) > self.max_entries:
            del self.finished[next(iter(self.finished))]

    def is_finished(self, route_id: str, event_id: str) -> bool:
        """Whether this event's delivery to this route already ended."""
        return (route_id, event_id) in self.finished

    def finish(
        self, route_id: str, event_id: str, attempt: dict[str, object] | None = None
    ) -> None:
        """Remember (on disk, synced) that the delivery ended, with its final attempt's
        record fields until `published` is called."""
        entry: dict[str, object] = {"d": [route_id, event_id]}
        if attempt is not None:
            entry["a"] = attempt
            self.unpublished[(route_id, event_id)] = attempt
        self.finished[(route_id, event_id)] = None
        self._write([entry])
        self._trim()

    def published(self, route_id: str, event_id: str) -> None:
        """The final attempt's record of this delivery is on the broker."""
        if self.unpublished.pop((route_id, event_id), None) is not None:
            self._write([{"p": [route_id, event_id]}])

    def set_incidents(self, incidents: Mapping[str, str]) -> None:
        """Remember the open incidents after a record (only what changed is written)."""
        lines: list[dict[str, object]] = [
            {"o": [key, event_id]}
            for key, event_id in incidents.items()
            if self.incidents.get(key) != event_id
        ]
        lines += [{"c": key} for key in self.incidents if key not in incidents]
        self.incidents = dict(incidents)
        if lines:
            self._write(lines)

    def _write(self, entries: list[dict[str, object]]) -> None:
        self._file.write(b"".join(orjson.dumps(e) + b"\n" for e in entries))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._lines += len(entries)
        if self._lines > 2 * self.max_entries + len(self.incidents):
            self._rewrite()

    def _rewrite(self) -> None:
        entries: list[dict[str, object]] = [
            {"d": list(pair), "a": self.unpublished[pair]}
            if pair in self.unpublished
            else {"d": list(pair)}
            for pair in self.finished
        ]
        entries += [{"o": [k, v]} for k, v in self.incidents.items()]
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in entries))
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        self._file.close()
        self._file = self.path.open("ab")
        self._lines = len(entries)

    def close(self) -> None:
        """Close the file."""
        self._file.close()
