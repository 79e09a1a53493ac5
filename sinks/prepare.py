"""The sink's checks before the store: headers, authentication, recent duplicates, records
grouped per schema with their Avro container blocks, and what the stored notices will say.

`Preparing` takes records as they are polled, so under a backlog the next batch is
checked, grouped and encoded while the store inserts the previous one (the store's insert
releases the GIL; this is Python's share of the sink's CPU). `Preparing.finish` hands the
writer a `Prepared`: its container files are the blocks already built (as a list of
chunks: the store writes them to its insert file one after another, with no copy joining
them first).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from schemas import authn, codec
from schemas.codec import SchemaEntry
from schemas.rdkafka import UNDECODABLE_HEADERS, headers_of
from schemas.topics import RESENT_HEADER, RESTORED_HEADER
from sinks.avro_batch import container_block, container_header
from sinks.links import DroppedCopy
from sinks.stored import StoredSeqs
from sinks.tables import TABLE_FOR

# A producer that retries a send with idempotence off can leave the same record twice in
# a partition, close together. The writer remembers this many recent ids per partition.
RECENT_IDS_PER_PARTITION = 100_000


class RecentIds:
    """The last N event ids seen per partition, to drop duplicates written by retries,
    each with a fingerprint of its first copy's bytes (to tell a byte-identical retry from
    another record under the same id: see sinks.links)."""

    def __init__(self, capacity: int) -> None:
        assert capacity > 0, "capacity must be positive"
        self.capacity = capacity
        self._seen: dict[TopicPartition, tuple[dict[str, int], deque[str]]] = {}

    def first_sighting(self, tp: TopicPartition, event_id: str) -> bool:
        """Remember the id; False if it was seen recently on this partition."""
        return self.earlier(tp, event_id, 0) is None

    def earlier(self, tp: TopicPartition, event_id: str, fingerprint: int) -> int | None:
        """Remember the id with its fingerprint; the first copy's fingerprint if the id was
        seen recently on this partition, else None."""
        window = self._seen.get(tp)
        if window is None:
            window = self._seen[tp] = ({}, deque())
        ids, order = window
        if event_id in ids:
            return ids[event_id]
        ids[event_id] = fingerprint
        order.append(event_id)
        if len(order) > self.capacity:
            ids.pop(order.popleft(), None)
        return None


@dataclass(slots=True)
class PendingBatch:
    """Records of one schema bound for one table, with their ids and partitions."""

    entry: SchemaEntry
    table: str
    values: list[bytes] = field(default_factory=list)
    auths: list[bytes] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    partitions: list[TopicPartition] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    # Unverified partitions' first records in this batch: index by partition (see
    # `SinkWriter._drop_already_written`).
    firsts: dict[TopicPartition, int] = field(default_factory=dict)
    # The container file of exactly these records, when built ahead (`Preparing`'s header
    # and blocks; a consume process sends it); a kept subset is built again.
    container: list[bytes] | None = None
    # Container blocks of values[:blocked], built as records were polled.
    blocks: list[bytes] = field(default_factory=list)
    blocked: int = 0

    def keep(self, indexes: list[int]) -> PendingBatch:
        """The batch with only the records at these positions."""
        return PendingBatch(
            self.entry,
            self.table,
            [self.values[i] for i in indexes],
            [self.auths[i] for i in indexes],
            [self.ids[i] for i in indexes],
            [self.partitions[i] for i in indexes],
            [self.offsets[i] for i in indexes],
        )

    def block_new_records(self) -> None:
        """Encode the records added since the last block as one more container block."""
        if self.blocked < len(self.values):
            start, self.blocked = self.blocked, len(self.values)
            self.blocks.append(container_block(self.values[start:], self.auths[start:]))

    def join_blocks(self) -> None:
        """The container file of every record, from the blocks built so far."""
        self.block_new_records()
        self.container = [container_header(self.entry, with_auth=True), *self.blocks]
        self.blocks = []


@dataclass(slots=True)
class Prepared:
    """A polled batch checked without the store: records per schema, the records to
    dead-letter (topic, partition, offset, value, reason), the ids an outbox sent again,
    copies dropped as duplicates, and the seqs the stored notices will name."""

    batches: list[PendingBatch] = field(default_factory=list)
    dead_letters: list[tuple[str, int, int, bytes, str]] = field(default_factory=list)
    resent: set[str] = field(default_factory=set)
    dropped: list[DroppedCopy] = field(default_factory=list)
    stored: StoredSeqs = field(default_factory=StoredSeqs)


class Preparing:
    """One batch's `Prepared`, built as its records are polled (`add`, in poll order)."""

    def __init__(self) -> None:
        self.prepared = Prepared()
        self._pending: dict[bytes, PendingBatch] = {}

    def add(self, batches: dict[TopicPartition, list[Any]], recent: RecentIds) -> None:
        """Check and group polled records (librdkafka's: schemas.group_consumer); each
        schema's new records become a block."""
        prepared, pending, stored = self.prepared, self._pending, self.prepared.stored
        verifier = authn.verifier()
        schema_of, ids_of, earlier = codec.schema_of, codec.envelope_ids_of, recent.earlier
        auth_header = authn.HEADER
        for tp, messages in batches.items():
            topic = tp.topic
            for message in messages:
                restored = resent = False
                auth: bytes | None = None
                auths = 0
                headers = headers_of(message)
                if headers is None:
                    prepared.dead_letters.append(
                        (
                            topic,
                            tp.partition,
                            message.offset(),
                            message.value() or b"",
                            UNDECODABLE_HEADERS,
                        )
                    )
                    continue
                for key, header_value in headers:  # one pass (the hot loop)
                    if key == auth_header:
                        auths += 1
                        auth = bytes(header_value or b"")
                    elif key == RESTORED_HEADER:
                        restored = True
                    elif key == RESENT_HEADER:
                        resent = True
                value = message.value() or b""
                if restored:
                    # Re-published from this store at start: the row exists. Its seq is
                    # stored all the same, if the record is its producer's.
                    stored.note_checked(verifier, topic, value, auth if auths == 1 else None)
                    continue
                try:
                    if auths > 1:
                        raise authn.Forged("forged: more than one auth header")
                    try:
                        entry = schema_of(value)
                        event_id, producer_id, seq = ids_of(value)
                    except codec.DecodeError:
                        verifier.check(topic, value, auth)  # its reason comes first
                        raise
                    # Only records a registered producer may write are stored (Forged is
                    # a DecodeError: dead-lettered with its reason).
                    role = verifier.check_sealed(topic, value, auth, entry, producer_id)
                    stored.note(role, producer_id, seq)
                except (codec.DecodeError, UnicodeDecodeError) as exc:
                    prepared.dead_letters.append(
                        (topic, tp.partition, message.offset(), value, str(exc))
                    )
                    continue
                fingerprint = hash(value)
                first = earlier(tp, event_id, fingerprint)
                if first is not None:
                    if first != fingerprint:  # the same id sealed again elsewhere: a link
                        table = TABLE_FOR[entry.record_type]
                        prepared.dropped.append(DroppedCopy(topic, table, value, auth or b""))
                    continue  # a producer retry wrote it twice; keep the first
                if resent:
                    prepared.resent.add(event_id)  # sent again from an outbox: maybe stored
                batch = pending.get(entry.fingerprint)
                if batch is None:
                    batch = PendingBatch(entry, TABLE_FOR[entry.record_type])
                    pending[entry.fingerprint] = batch
                batch.values.append(value)
                batch.auths.append(auth or b"")
                batch.ids.append(event_id)
                batch.partitions.append(tp)
                batch.offsets.append(message.offset())
        for batch in pending.values():
            batch.block_new_records()  # (a schema with no new record adds no block)

    def finish(self) -> Prepared:
        """The batch, each schema's container file its header and blocks."""
        for batch in self._pending.values():
            batch.join_blocks()
        self.prepared.batches = list(self._pending.values())
        return self.prepared


def prepare(batches: dict[TopicPartition, list[Any]], recent: RecentIds) -> Prepared:
    """`Preparing` of one poll's records."""
    preparing = Preparing()
    preparing.add(batches, recent)
    return preparing.finish()
