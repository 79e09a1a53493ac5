"""librdkafka (confluent-kafka) settings every client of ours shares: where the broker is,
who the client is, how it logs in, where its log lines go.

The group member of the sink, the worker's intake and the notifier
(schemas/group_consumer.py), the topic tailers (schemas/kafka.py) and the publishers'
producer (schemas/kafka_producer.py) are the clients on librdkafka; all start from here,
so a login configured once (schemas/kafka_security.py) applies to all.
"""

from __future__ import annotations

import logging
import operator
from typing import Any

from schemas.kafka_security import KafkaSecurity

# librdkafka's log lines come out under this logger (docs/observability.md).
LOGGER_NAME = "librdkafka"
# Why a record whose headers cannot be read is refused (dead-lettered, or skipped by a view).
UNDECODABLE_HEADERS = "a header key is not UTF-8"


def base_config(bootstrap: str, *, client_id: str, security: KafkaSecurity) -> dict[str, Any]:
    """The settings of any client: bootstrap, client id, login, logger. PLAINTEXT adds no
    option; SASL_SSL verifies the broker's certificate and host name."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        # Nagle's algorithm would hold a lone small request (one call's record) for an ack.
        "socket.nagle.disable": True,
        "logger": logging.getLogger(LOGGER_NAME),
    }
    if security.uses_sasl:
        config.update(
            {
                "security.protocol": security.protocol,
                "sasl.mechanism": security.mechanism,
                "sasl.username": security.username,
                "sasl.password": security.password(),
            }
        )
        if security.protocol == "SASL_SSL":
            # The broker's certificate and host name verified (librdkafka's default).
            config["ssl.endpoint.identification.algorithm"] = "https"
            if security.ca_file:
                config["ssl.ca.location"] = security.ca_file
    return config


# `message.headers()` through a call that always checks the result: see headers_of.
_read_headers = operator.methodcaller("headers")


def headers_of(message: Any) -> list[tuple[str, bytes | None]] | None:
    """A consumed librdkafka message's headers ([] when it has none), or None when they
    cannot be read. Anyone may write a header key that is not UTF-8; confluent-kafka then
    returns a list holding a NULL item with the UnicodeDecodeError set. A checked call
    turns that into SystemError, but Python 3.11 specializes a hot `message.headers()`
    call site into one that skips the check, and the next loop over the list crashed the
    process (tests/security/test_header_keys.py). So the method is called through
    `operator.methodcaller`, whose call is always checked, and a message whose headers
    failed is never asked again (it keeps the broken list)."""
    try:
        return _read_headers(message) or []
    except (SystemError, UnicodeDecodeError):
        return None
