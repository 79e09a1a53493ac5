"""A real SinkWriter over an in-process chDB store, fed consumed messages directly (no
broker: what is tested is what the writer stores, deduplicates and keeps as chain links),
for tests/integration/test_chain_links.py and tests/security/test_forged_links.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from aiokafka import TopicPartition
from confluent_kafka import Message

from schemas import authn, codec
from schemas.codec import HashChain
from schemas.publisher import Publisher
from schemas.records import Event
from schemas.settings import SinkSettings, load
from schemas.topics import ALERTS
from sinks.store import Store
from sinks.writer import SinkWriter
from tests.unit import builders

KEYRING = authn.Keyring([bytes(range(32))])


class RefusingDlq:
    """A dead-letter publisher for tests where nothing may be dead-lettered."""

    async def publish_and_wait(self, *args: Any) -> None:
        raise AssertionError(f"dead-lettered: {args!r}")


def migrated_store(folder: Path) -> Iterator[Store]:
    """An in-process chDB store, migrated, with the test keyring installed; for a module
    fixture (closed after the module)."""
    authn.install(KEYRING)
    store = Store(f"chdb://{folder / 'store'}")
    store.migrate()
    yield store
    store.close()


def sink_writer(store: Store) -> SinkWriter:
    """A writer as the sink builds it, never started (its write step is called directly)."""
    settings = load(SinkSettings, environ={}, kafka_bootstrap="127.0.0.1:1")
    return SinkWriter(settings, store, cast(Publisher, RefusingDlq()))


def message(record: Event, offset: int, *, topic: str = ALERTS.name, auth: bool = True) -> Any:
    """A consumed message (partition 0, librdkafka's as the sink polls it) carrying the
    sealed record, signed by its producer."""
    value = codec.encode(record)
    role = min(authn.ROLES_BY_TYPE[type(record)])
    headers: list[tuple[str, str | bytes | None]] = []
    if auth:
        headers.extend(KEYRING.credential(role, record.producer_id).headers(value))
    return Message(topic, 0, offset, None, value, headers)


def batch(*messages: Any, topic: str = ALERTS.name) -> dict[TopicPartition, list[Any]]:
    """What one poll hands the writer."""
    return {TopicPartition(topic, 0): list(messages)}


def alert(event_id: str, threshold_percent: int = 80) -> Event:
    """A quota alert with a deterministic id, as the quotas processor derives it."""
    return builders.quota_crossed(
        event_id=event_id, tenant_id="links", threshold_percent=threshold_percent
    )


def restarted_chains(
    event_ids: list[str], repeated: int, run: str
) -> tuple[list[Event], list[Event]]:
    """A processor's chain before a kill (alerts for every id) and its chain after the
    restart: the first `repeated` alerts derived again (same ids), then a new one."""
    before, after = HashChain(f"streams-quotas-{run}-a"), HashChain(f"streams-quotas-{run}-b")
    first = [before.seal(alert(i)) for i in event_ids]
    again = [after.seal(alert(i)) for i in event_ids[:repeated]]
    again.append(after.seal(alert(event_ids[0][:-2] + "99", 100)))  # a new one
    return first, again


def query(store: Store) -> Any:
    """`audit verify`'s query function over the store."""
    return lambda sql: [list(row) for row in store.query_rows(sql)]
