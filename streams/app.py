"""The Faust application every domain agent registers on."""

from __future__ import annotations

from typing import Any

import faust

from schemas.settings import StreamSettings


def faust_broker_url(bootstrap: str) -> str:
    """Faust's broker URL list from Kafka bootstrap servers."""
    return ";".join(
        f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()
    )


def create_app(settings: StreamSettings) -> Any:
    """A Faust app tuned for at-least-once processing with idempotent agents."""
    session_s = settings.kafka_session_timeout_ms / 1000
    return faust.App(
        settings.worker_app_id,
        broker=faust_broker_url(settings.kafka_bootstrap),
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(session_s / 6, 0.1),
        broker_rebalance_timeout=session_s,
        producer_acks=-1,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=settings.worker_web_port > 0,
        web_port=max(settings.worker_web_port, 1),
        web_bind="127.0.0.1",
        datadir=str(settings.data_path / "faust"),
    )
