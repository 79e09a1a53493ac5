"""Dead-lettering from an agent: the rejected event, with the reason, sealed into the
agent's chain and sent to govledger.dlq. No record stops an agent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from schemas.authn import SignedChain
from schemas.dead_letter import dead_letter
from streams import metrics as stream_metrics

Reject = Callable[[Any, str], Awaitable[None]]


def rejecter(dead_letters: Any, chain: SignedChain, consumer: str) -> Reject:
    """`reject(event, reason)` for one agent: its DLQ topic, its chain, its name."""

    metrics = stream_metrics.of(getattr(dead_letters, "app", None))

    async def reject(event: Any, error: str) -> None:
        metrics.dead_lettered(consumer, error)
        message = event.message
        rejected = dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            consumer=consumer,
            error=error,
            payload=event.value,
        )
        _, data = chain.seal_encoded(rejected)
        await dead_letters.send(key=message.topic.encode(), value=data, headers=chain.headers(data))

    return reject
