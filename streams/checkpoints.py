"""Checkpoints of the worker's hash chains, as the gateways' publishers write theirs.

Each domain seals its outputs (balances, alerts, SLA windows, dead letters) into a chain
of its own, new at each start. Every `GOVLEDGER_WORKER_CHECKPOINT_INTERVAL_S`, and when
the intake stops on purpose, each chain that sealed records since its last checkpoint
seals a `chain.checkpoint` of its head and sends it to `govledger.checkpoints`, so that
`govledger audit verify` finds a tail of a processor's chain cut from the store after it
(see replay.verify). A chain whose worker was killed ends without one, and verify counts
it as open. Records an agent seals after the stop checkpoint (a Faust agent still busy
while the worker shuts down) leave that chain open too.
"""

from __future__ import annotations

from typing import Any

from schemas.authn import SignedChain
from schemas.publisher import checkpoint_of
from schemas.topics import CHECKPOINTS

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
MAX_CHAINS = 64  # one per domain and start; more is a programming error


class Checkpoints:
    """Every chain the worker seals with, and how far each was last checkpointed."""

    def __init__(self) -> None:
        self._chains: list[SignedChain] = []
        self._covered_seq: dict[str, int] = {}

    def chain(self, producer_id: str) -> SignedChain:
        """A new chain of a processor, checkpointed with the others; it signs with the
        process's keyring."""
        assert len(self._chains) < MAX_CHAINS, "one chain per domain"
        chain = SignedChain(producer_id, "processor")
        self._chains.append(chain)
        return chain

    def seal_due(self, reason: str) -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
        """(producer id, encoded checkpoint, its auth headers) for each chain with records
        since its last checkpoint; each checkpoint is signed and sealed into its chain here."""
        due = []
        for chain in self._chains:
            if chain.seq == self._covered_seq.get(chain.producer_id, 0):
                continue  # nothing new, or the last record is a checkpoint
            _, data = chain.seal_encoded(chain.sign_checkpoint(checkpoint_of(chain, reason)))
            self._covered_seq[chain.producer_id] = chain.seq
            due.append((chain.producer_id, data, chain.headers(data)))
        return due


def register(app: Any, checkpoints: Checkpoints, interval_s: float) -> Any:
    """A Faust timer sending the due checkpoints; returns `send_due(reason)` for the stop."""
    assert interval_s > 0, "checkpoints are periodic"
    topic = app.topic(CHECKPOINTS.name, **RAW)

    async def send_due(reason: str) -> None:
        for producer_id, data, headers in checkpoints.seal_due(reason):
            await topic.send(key=producer_id.encode(), value=data, headers=headers)

    @app.timer(interval_s)  # type: ignore[untyped-decorator]
    async def checkpoint_chains() -> None:
        await send_due("interval")

    return send_due
