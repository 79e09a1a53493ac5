"""The sink's librdkafka settings: offsets are the writer's alone, and every record batch's
CRC is checked (librdkafka skips it by default)."""

from __future__ import annotations

from confluent_kafka import Consumer

from schemas.group_consumer import client_config
from schemas.kafka_security import KafkaSecurity


def config() -> dict[str, object]:
    return client_config(
        "127.0.0.1:9092",
        group_id="govledger-sink",
        client_id="govledger-sink",
        session_timeout_ms=6_000,
        fetch_max_wait_ms=100,
        security=KafkaSecurity(),
    )


def test_offsets_are_committed_by_the_writer_alone() -> None:
    made = config()
    assert made["enable.auto.commit"] is False
    assert made["enable.auto.offset.store"] is False
    assert made["auto.offset.reset"] == "earliest"


def test_every_batch_crc_is_checked() -> None:
    assert config()["check.crcs"] is True


def test_heartbeats_are_a_sixth_of_the_session() -> None:
    made = config()
    assert made["session.timeout.ms"] == 6_000 and made["heartbeat.interval.ms"] == 1_000


def test_plaintext_adds_no_login() -> None:
    assert not any(key.startswith(("sasl.", "security.", "ssl.")) for key in config())


def test_librdkafka_accepts_the_settings() -> None:
    Consumer(config()).close()  # every setting is checked when the client is made
