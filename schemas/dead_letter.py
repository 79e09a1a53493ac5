"""Building the dead-letter record for a record some consumer rejected."""

from __future__ import annotations

from schemas.ids import now_ms, uuid7
from schemas.records import DeadLetter

MAX_ERROR_CHARS = 2_000


def dead_letter(
    *, topic: str, partition: int, offset: int, consumer: str, error: str, payload: bytes | None
) -> DeadLetter:
    """An unsealed DeadLetter (a publisher seals it) saying where the record came from."""
    return DeadLetter(
        event_id=uuid7(),
        event_type=DeadLetter.event_type_name,
        occurred_at=now_ms(),
        tenant_id="",
        origin_topic=topic,
        origin_partition=partition,
        origin_offset=offset,
        consumer=consumer,
        error=error[:MAX_ERROR_CHARS],
        payload=bytes(payload or b""),
    )
