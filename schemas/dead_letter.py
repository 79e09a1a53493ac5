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


# Why a record was dead-lettered, as a bounded label (metrics): schemas.authn's Forged
# messages name themselves; the sink names the store's refusals; the rest did not decode.
DEAD_LETTER_PREFIXES = (
    ("forged:", "forged"),
    ("unauthenticated:", "unauthenticated"),
    ("store refused", "store_refused"),
)


def dead_letter_reason(error: str) -> str:
    """The bounded reason of a dead letter, from its error text."""
    for prefix, reason in DEAD_LETTER_PREFIXES:
        if error.startswith(prefix):
            return reason
    return "undecodable"
