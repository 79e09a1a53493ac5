"""What the sinks stored, read back by producers that keep an outbox.

Each sink publishes, after a batch is written and its offsets committed, one
`RecordsStored` to `govledger.stored`: per producer, the seq ranges of the records that
batch holds (sinks/stored.py). Explicit ranges, not a "highest seq stored" watermark:
after a broker loss newer records can be stored before older unconfirmed ones are sent
again, and a watermark would confirm the lost ones. Several sinks each publish the
ranges of their own partitions; a record is confirmed by whichever stored it.

The feed tails the topic from its beginning, so a restarted producer learns what was
stored while it was down; what the topic lost with a broker is just not confirmed, and
its records are sent again (the sink drops records it already has by event_id) and
confirmed then. Every notice is authenticated (role sink) before it drops anything: a
forged notice could otherwise empty an outbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import structlog

from schemas import authn, codec
from schemas.kafka import TopicTailer
from schemas.kafka_security import KafkaSecurity
from schemas.records import RecordsStored
from schemas.topics import STORED

log = structlog.get_logger(__name__)


OUTBOX_PROCESSORS = ("streams-sla-",)
"""Producer id prefixes of the processors (role processor) that keep an outbox too, so
the sinks confirm their records: the SLA windows (streams/sla/agent.py). Not every
processor: a notice per balance would be traffic no one reads."""


class Confirmable(Protocol):
    """A publisher with an outbox."""

    def confirm(self, producer_id: str, first_seq: int, last_seq: int) -> int:
        """Forget the producer's records first_seq..last_seq; how many were kept."""
        ...


NOTICE_FETCH_WAIT_MS = 500
BATCHED_FETCH_MIN_BYTES = 1 << 20
"""A fetch the broker holds until this much has come or its wait is over (a tailer that
batches: aiokafka's default of 1 byte answers at every record)."""


class ConfirmationFeed:
    """Tails `govledger.stored` and confirms each stored range in the publishers."""

    def __init__(
        self,
        bootstrap: str,
        publishers: Sequence[Confirmable],
        *,
        security: KafkaSecurity | None = None,
    ) -> None:
        self.publishers = list(publishers)
        # Notices only free outbox room (a record is resent after minutes, not ms): read in
        # batches, so an idle gateway does not wake ten times a second for them.
        self.tailer = TopicTailer(
            bootstrap,
            [STORED.name],
            self.apply,
            security=security,
            earliest_on_reset=True,
            fetch_max_wait_ms=NOTICE_FETCH_WAIT_MS,
            fetch_min_bytes=BATCHED_FETCH_MIN_BYTES,
        )
        self.confirmed = 0
        self.refused = 0

    def apply(self, message: Any) -> None:
        """One notice: authenticated, then each of its ranges confirmed."""
        value = message.value or b""
        try:
            record = authn.verifier().decode(STORED.name, value, message.headers)
        except (codec.DecodeError, UnicodeDecodeError) as exc:
            self.refused += 1
            log.warning("stored notice refused", offset=message.offset, error=str(exc))
            return
        if not isinstance(record, RecordsStored):
            self.refused += 1
            return
        for stored in record.ranges:
            if stored.first_seq > stored.last_seq:
                continue
            for publisher in self.publishers:
                self.confirmed += publisher.confirm(
                    stored.stored_producer_id, stored.first_seq, stored.last_seq
                )

    async def start(self) -> None:
        """Follow the topic from its beginning."""
        await self.tailer.start()

    async def stop(self) -> None:
        """Stop following."""
        await self.tailer.stop()
