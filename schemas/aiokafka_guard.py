"""aiokafka readers skip a record batch whose header keys are not UTF-8.

Anyone who may write a topic can send a record whose header key is not UTF-8 (see
docs/security.md). aiokafka decodes every header key while it unpacks a fetched batch, and
raises UnicodeDecodeError out of `getmany` for that record; the fetch position stays before
it, so every later `getmany` raises again. Faust's consumer (the worker's agents read the
control, escalation, wallet-state and internal topics with it) would stop on the first such
record and crash again on it at every restart: one record would stop the ledger. The
readers of `govledger replay` and `govledger events` would fail on it too.

A record batch is written by one producer in one request, so a batch holding such a
record is that producer's: it is skipped from the record that cannot be read to the
batch's end (its records before it were handed over already, each on its own merits), the
fetch position moves past it, and the skip is logged as an error with where it was. The
records are not dead-lettered: this runs inside aiokafka's fetcher, which cannot publish;
the log line names topic, partition and offsets. The librdkafka readers (the sink, the
worker's intake, the notifier, the topic tailers) refuse such a record one by one instead
(`schemas.rdkafka.headers_of`).

This patches aiokafka's `PartitionRecords` (aiokafka is pinned below 0.15 in
pyproject.toml and the attributes used are checked to exist), as streams/app.py patches
Faust's commit bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import structlog
from aiokafka.consumer import fetcher

log = structlog.get_logger(__name__)

_PATCHED = "_govledger_skips_undecodable_headers"


class _GuardedBatch:
    """A fetched record batch whose iteration ends at a record that cannot be unpacked
    because a header key is not UTF-8; everything else is the batch's own."""

    def __init__(self, batch: Any, topic: str, partition: int) -> None:
        self._batch = batch
        self._topic = topic
        self._partition = partition

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __next__(self) -> Any:  # aiokafka reads a control batch's marker with next()
        return next(self._batch)

    def __iter__(self) -> Iterator[Any]:
        records = iter(self._batch)
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                log.error(  # noqa: TRY400 - a hostile record: the reason is the message
                    "record batch skipped: a header key is not UTF-8",
                    topic=self._topic,
                    partition=self._partition,
                    first_offset=self._batch.base_offset,
                    next_offset=self._batch.next_offset,
                    error=str(exc),
                )
                return
            yield record


class _GuardedRecords:
    """A fetch's records whose batches are `_GuardedBatch`es."""

    def __init__(self, records: Any, topic: str, partition: int) -> None:
        self._records = records
        self._topic = topic
        self._partition = partition

    def __getattr__(self, name: str) -> Any:
        return getattr(self._records, name)

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        return None if batch is None else _GuardedBatch(batch, self._topic, self._partition)


def skip_batches_with_undecodable_headers() -> None:
    """Make every aiokafka consumer in this process skip such batches (idempotent)."""
    partition_records = fetcher.PartitionRecords
    if getattr(partition_records, _PATCHED, False):
        return
    if not hasattr(partition_records, "_unpack_records"):
        raise RuntimeError(
            "aiokafka changed: PartitionRecords._unpack_records is gone; "
            "see schemas/aiokafka_guard.py"
        )
    original = partition_records.__init__

    def guarded_init(self: Any, tp: Any, records: Any, *args: Any, **kwargs: Any) -> None:
        original(self, tp, _GuardedRecords(records, tp.topic, tp.partition), *args, **kwargs)

    partition_records.__init__ = guarded_init
    setattr(partition_records, _PATCHED, True)
