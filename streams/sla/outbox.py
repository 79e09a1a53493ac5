"""Which records of the SLA outboxes still wait for the store. Pure: no I/O; time comes in.

Every record in a partition's outbox (`snapshot.Outgoing`, sealed) is known by its
(producer id, seq), read from its bytes: the ids the sinks' stored notices name
(sinks/stored.py, read back by schemas.confirmations.ConfirmationFeed, which calls
`confirm`). A record is due to be sent when this process never sent it (closed just now,
or found in a snapshot an earlier process left) or when `resend_after_ms` passed since
its last send; it leaves the outbox once a notice confirmed it (`settled`).

Bounded: per partition, the records past `max_bytes` (counting from the oldest) are not
kept: they stay only until the broker acknowledged them (what a window holds is still
fixed on disk before it is sent), then `settled` drops them and counts them in
`overflowed`: the records sent on the broker's ack alone, as before the outbox waited
for the store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from schemas import codec
from streams.sla.snapshot import Outgoing

RecordId = tuple[str, int]
"""(producer id, seq) of a sealed record."""


def id_of(record: Outgoing) -> RecordId | None:
    """The record's (producer id, seq); None when its bytes do not say (never sealed)."""
    try:
        return codec.producer_seq_of(record.value)
    except (codec.DecodeError, UnicodeDecodeError):
        return None


def size_of(record: Outgoing) -> int:
    """What the record weighs against the bound: its key, value and headers."""
    return len(record.key) + len(record.value) + sum(len(k) + len(v) for k, v in record.headers)


@dataclasses.dataclass(slots=True)
class Unconfirmed:
    """The records of the held outboxes the store has not confirmed (a Confirmable)."""

    resend_after_ms: int
    max_bytes: int
    awaiting: dict[str, set[int]] = dataclasses.field(default_factory=dict)
    sent_at_ms: dict[RecordId, int] = dataclasses.field(default_factory=dict)
    fresh: set[RecordId] = dataclasses.field(default_factory=set)
    confirmed: set[RecordId] = dataclasses.field(default_factory=set)
    unkept: set[RecordId] = dataclasses.field(default_factory=set)
    overflowed: int = 0

    def track(self, outbox: Sequence[Outgoing], *, fresh: Iterable[Outgoing] = ()) -> int:
        """Know every record of one partition's outbox (again: idempotent), those past the
        bound as not kept; `fresh` ones were sealed by this process and never sent. How
        many records have no (producer id, seq): `settled` drops those."""
        used = unreadable = 0
        for record in outbox:
            found = id_of(record)
            if found is None:
                unreadable += 1
                continue
            if found not in self.confirmed:
                self.awaiting.setdefault(found[0], set()).add(found[1])
            used += size_of(record)
            if used > self.max_bytes:
                self.unkept.add(found)
            else:
                self.unkept.discard(found)
        self.fresh.update(found for found in map(id_of, fresh) if found is not None)
        return unreadable

    def confirm(self, producer_id: str, first_seq: int, last_seq: int) -> int:
        """The store has these records: they leave their outbox at the next `settled`.
        How many of them were waiting."""
        seqs = self.awaiting.get(producer_id)
        if not seqs:
            return 0
        if last_seq - first_seq < len(seqs):
            found = [seq for seq in range(first_seq, last_seq + 1) if seq in seqs]
        else:
            found = [seq for seq in seqs if first_seq <= seq <= last_seq]
        for seq in found:
            seqs.discard(seq)
            self.confirmed.add((producer_id, seq))
        if not seqs:
            del self.awaiting[producer_id]
        return len(found)

    def due(self, outbox: Sequence[Outgoing], now_ms: int) -> list[tuple[Outgoing, bool]]:
        """The records to send now, in outbox order, each with whether it is a resend."""
        due: list[tuple[Outgoing, bool]] = []
        resend_before = now_ms - self.resend_after_ms
        for record in outbox:
            found = id_of(record)
            if found is None or found in self.confirmed:
                continue
            last = self.sent_at_ms.get(found)
            if last is None or last <= resend_before:
                due.append((record, found not in self.fresh))
        return due

    def sent(self, records: Iterable[Outgoing], now_ms: int) -> None:
        """The broker acknowledged these records (the producer's flush returned)."""
        for found in map(id_of, records):
            if found is not None:
                self.sent_at_ms[found] = now_ms
                self.fresh.discard(found)

    def settled(self, outbox: tuple[Outgoing, ...]) -> tuple[Outgoing, ...]:
        """The outbox without the records the store confirmed and without those past the
        bound the broker acknowledged (counted in `overflowed`); the same tuple if none."""
        kept: list[Outgoing] = []
        for record in outbox:
            found = id_of(record)
            if found is None:
                continue  # nothing the store could ever confirm (a hand-edited file)
            if found in self.confirmed:
                self.confirmed.discard(found)
            elif found in self.unkept and found in self.sent_at_ms:
                self.unkept.discard(found)
                self._forget_awaiting(found)
                self.overflowed += 1
            else:
                kept.append(record)
                continue
            self.sent_at_ms.pop(found, None)
        return outbox if len(kept) == len(outbox) else tuple(kept)

    def _forget_awaiting(self, found: RecordId) -> None:
        seqs = self.awaiting.get(found[0])
        if seqs is not None:
            seqs.discard(found[1])
            if not seqs:
                del self.awaiting[found[0]]

    @property
    def waiting(self) -> int:
        """Records sent or to send that the store has not confirmed."""
        return sum(len(seqs) for seqs in self.awaiting.values())

    def clear(self) -> None:
        """Forget every outbox (the partitions were revoked, or are loaded anew)."""
        self.awaiting.clear()
        self.sent_at_ms.clear()
        self.fresh.clear()
        self.confirmed.clear()
        self.unkept.clear()
