"""The Faust application every domain agent registers on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from faust.transport.consumer import Consumer
from faust.types.tuples import ack_lock

from schemas.aiokafka_guard import skip_batches_with_undecodable_headers
from schemas.kafka_security import KafkaSecurity
from schemas.settings import StreamSettings
from streams import metrics

_PATCHED = "__govledger_dedupes_acked_offsets__"


def faust_broker_url(bootstrap: str) -> str:
    """Faust's broker URL list from Kafka bootstrap servers."""
    return ";".join(
        f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()
    )


def commit_past_duplicate_acks() -> None:
    """Make Faust's commit bookkeeping drop duplicate acknowledged offsets (idempotent).

    Faust commits a partition up to the first run of consecutive acknowledged offsets. A
    range it recorded as a gap (a jump in fetched offsets, as after a seek back to the
    committed position while a later fetch was in flight) is added to the acknowledged
    list without looking whether those offsets are in it already. Each offset then
    appears twice, every run is one offset long, and the commit position creeps forward
    by one offset per commit (every 2.8 s) while the agents read on: the group's lag
    grows and every restart refolds more. Seen in the kill test after restarts
    (`acked` = [138, 139, 139, 140, 140, ...]); the same as robinhood/faust #625.

    Removing duplicates changes nothing about which offsets count as acknowledged, only
    lets one commit cover the whole run. faust-streaming 0.15 has no fix; the version is
    pinned below 0.16 in pyproject.toml, and `_new_offset` is checked to exist.
    """
    if getattr(Consumer, _PATCHED, False):
        return
    if not hasattr(Consumer, "_new_offset"):
        raise RuntimeError(
            "faust-streaming changed: Consumer._new_offset is gone; see streams/app.py"
        )
    original: Callable[[Any, Any], int | None] = Consumer._new_offset

    def new_offset(self: Any, tp: Any) -> int | None:
        # Under the lock `Consumer.ack` appends with, so no ack lands mid-rewrite.
        with ack_lock:
            acked = self._acked[tp]
            if len(acked) > 1:
                unique = set(acked)
                if len(unique) != len(acked):
                    acked[:] = sorted(unique)
            return original(self, tp)

    Consumer._new_offset = new_offset  # type: ignore[method-assign]
    setattr(Consumer, _PATCHED, True)


def create_app(settings: StreamSettings) -> Any:
    """A Faust app tuned for at-least-once processing with idempotent agents."""
    commit_past_duplicate_acks()
    skip_batches_with_undecodable_headers()  # one hostile record must not stop the worker
    session_s = settings.kafka_session_timeout_ms / 1000
    app = faust.App(
        settings.worker_app_id,
        broker=faust_broker_url(settings.kafka_bootstrap),
        broker_credentials=KafkaSecurity.of(settings).faust_credentials(),
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(session_s / 6, 0.1),
        broker_rebalance_timeout=session_s,
        producer_acks=-1,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=settings.worker_web_port > 0,
        web_port=max(settings.worker_web_port, 1),
        web_bind=settings.worker_web_host,
        datadir=str(settings.data_path / "faust"),
    )
    metrics.install(app, settings.metrics_enabled)  # /metrics on the web port
    return app
