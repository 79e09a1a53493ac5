"""Telling producers what the store has: after each batch is written and its offsets
committed, the sink publishes one `RecordsStored` to `govledger.stored` with, per
producer that keeps an outbox (gateways, the admin API, the SLA processor:
`schemas.confirmations.OUTBOX_PROCESSORS`), the seq ranges of the batch's records
(schemas/confirmations.py reads them back).

Only records whose authentication checks are counted: a forged record must not confirm
(and so drop from an outbox) a real one. Records the writer skipped as already stored
and records it dead-lettered are counted too: both are settled, and sending them again
would change nothing. The notices are not stored in ClickHouse: they say what the store
holds, which the store itself already shows; keeping them would add a table that grows
with every batch and tells an auditor nothing new. Their chain (role sink, a producer id
of their own) is for authentication only.

A notice is sent without waiting for its ack: a lost one only delays confirmation until
the producer sends the records again, and the sink never waits on it.
"""

from __future__ import annotations

import asyncio

import structlog

from schemas import authn, codec
from schemas.authn import Keyring, SignedChain
from schemas.confirmations import OUTBOX_PROCESSORS
from schemas.ids import now_ms, uuid7
from schemas.kafka import make_producer
from schemas.kafka_producer import ProducerPort
from schemas.kafka_security import KafkaSecurity
from schemas.records import RecordsStored, StoredRange
from schemas.topics import STORED

log = structlog.get_logger(__name__)

OUTBOX_ROLES = frozenset({"gateway", "admin"})
SEND_TIMEOUT_S = 1.0


class StoredSeqs:
    """Seqs per outbox-keeping producer among authenticated records (the writer notes each
    record as it checks it: `sinks.prepare`)."""

    def __init__(self) -> None:
        self._seqs: dict[str, set[int]] = {}

    def note(self, role: str, producer_id: str, seq: int) -> None:
        """A record whose authentication checked, sealed by a producer of `role`."""
        if role in OUTBOX_ROLES or (
            role == "processor" and producer_id.startswith(OUTBOX_PROCESSORS)
        ):
            self._seqs.setdefault(producer_id, set()).add(seq)

    def note_checked(
        self, verifier: authn.Verifier, topic: str, value: bytes, header: bytes | None
    ) -> None:
        """A record not checked yet: noted only if its authentication checks."""
        try:
            # The sink's check (each producer's keyed MAC kept): the same refusals.
            role = verifier.check_sealed(topic, value, header, codec.schema_of(value))
            producer_id, seq = codec.producer_seq_of(value)
        except (codec.DecodeError, UnicodeDecodeError):
            return
        self.note(role, producer_id, seq)

    def ranges(self) -> list[StoredRange]:
        """Runs of consecutive seqs per producer."""
        ranges: list[StoredRange] = []
        for producer_id, found in sorted(self._seqs.items()):
            ordered = sorted(found)
            first = previous = ordered[0]
            for seq in ordered[1:]:
                if seq != previous + 1:
                    ranges.append(StoredRange(producer_id, first, previous))
                    first = seq
                previous = seq
            ranges.append(StoredRange(producer_id, first, previous))
        return ranges


class StoredNotices:
    """Publishes what each committed batch stored (SinkWriter's `on_committed`)."""

    def __init__(
        self,
        bootstrap: str,
        producer_id: str,
        *,
        security: KafkaSecurity | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.chain = SignedChain(producer_id, "sink", keyring)
        self._producer: ProducerPort = make_producer(
            bootstrap, client_id=producer_id, security=security
        )
        self.published = 0
        self.unsent = 0

    async def start(self) -> None:
        """Connect."""
        await self._producer.start()

    async def __call__(self, ranges: list[StoredRange]) -> None:
        """One committed batch's ranges (`StoredSeqs.ranges`), if it held records of an
        outbox."""
        if not ranges:
            return
        record = RecordsStored(
            event_id=uuid7(),
            event_type=RecordsStored.event_type_name,
            occurred_at=now_ms(),
            tenant_id="",
            ranges=tuple(ranges),
        )
        _, value = self.chain.seal_encoded(record)
        key = self.chain.producer_id.encode()
        try:
            send = self._producer.send(
                STORED.name, value, key=key, headers=self.chain.headers(value)
            )
            await asyncio.wait_for(send, SEND_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the producers send those records again
            self.unsent += 1
            log.warning("stored notice not sent", error=str(exc))
            return
        self.published += 1

    async def stop(self) -> None:
        """Flush and disconnect."""
        await self._producer.stop()
