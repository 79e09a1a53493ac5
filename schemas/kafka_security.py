"""How this process logs in to the broker: the same SASL/SCRAM user for every Kafka client
it makes (aiokafka producers, consumers and admin clients, and Faust).

A process has one broker identity, like it has one role: the settings name the user and a
file holding its password (never an environment variable, never logged). The password is
read when a client is made, so a rotated secret file takes effect at the next start.
PLAINTEXT (the default, and the embedded Tansu broker) adds no option at all.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from schemas.settings import CommonSettings, load, read_secret_file


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """The broker login of one process; holds the password file's path, not the password."""

    protocol: str = "PLAINTEXT"
    mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password_file: str = ""
    ca_file: str = ""

    @classmethod
    def of(cls, settings: CommonSettings) -> KafkaSecurity:
        """The login the (already validated) settings describe."""
        return cls(
            protocol=settings.kafka_security_protocol,
            mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_sasl_username,
            password_file=settings.kafka_sasl_password_file,
            ca_file=settings.kafka_ssl_ca_file,
        )

    @classmethod
    def of_process(cls) -> KafkaSecurity:
        """The login this process's environment describes (GOVLEDGER_KAFKA_*), validated."""
        return cls.of(load(CommonSettings))

    @property
    def uses_sasl(self) -> bool:
        """Whether clients log in (SASL_PLAINTEXT or SASL_SSL)."""
        return self.protocol != "PLAINTEXT"

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS that verifies the broker's certificate and host name (SASL_SSL only)."""
        if self.protocol != "SASL_SSL":
            return None
        context = ssl.create_default_context(cafile=self.ca_file or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def password(self) -> str:
        """The password, read from its file now."""
        return read_secret_file(self.password_file, "GOVLEDGER_KAFKA_SASL_PASSWORD_FILE")

    def aiokafka_options(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        if not self.uses_sasl:
            return {}
        return {
            "security_protocol": self.protocol,
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password(),
            "ssl_context": self.ssl_context(),
        }

    def faust_credentials(self) -> Any:
        """`broker_credentials` for faust.App: SASLCredentials, or None for PLAINTEXT.
        Faust takes SASL_SSL from the presence of an SSL context."""
        if not self.uses_sasl:
            return None
        import faust

        return faust.SASLCredentials(
            username=self.username,
            password=self.password(),
            mechanism=self.mechanism,
            ssl_context=self.ssl_context(),
        )


def client_options(security: KafkaSecurity | None = None) -> dict[str, Any]:
    """aiokafka options for a client: the given login, else this process's."""
    return (security or KafkaSecurity.of_process()).aiokafka_options()
