"""The settings' foundation: how one setting is declared, the settings every service reads,
and their checks. Each service's own settings, and the loader, are in schemas/settings.py,
which re-exports these names.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

ENV_PREFIX = "GOVLEDGER_"
# A cluster name as ClickHouse's remote_servers declares one (GOVLEDGER_STORE_CLUSTER).
CLUSTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class SettingsError(ValueError):
    """A setting is unknown or has a value of the wrong shape."""


def setting(default: Any, doc: str) -> Any:
    """Declare one setting with its default and a one-line doc."""
    return dataclasses.field(default=default, metadata={"doc": doc})


@dataclasses.dataclass(frozen=True)
class CommonSettings:
    """Settings every service reads."""

    data_dir: str = setting(".govledger", "Directory for the embedded store and runtime files.")
    kafka_bootstrap: str = setting(
        "", "Kafka bootstrap servers; empty starts the embedded Tansu broker."
    )
    clickhouse_dsn: str = setting(
        "", "ClickHouse DSN (http://host:8123 or chdb:///abs/path); empty uses chDB in data_dir."
    )
    topic_partitions: int = setting(4, "Partitions for each topic created at start.")
    kafka_session_timeout_ms: int = setting(
        6000, "Consumer-group session timeout; Tansu joins in about half of it."
    )
    log_level: str = setting("info", "Log level: debug, info, warning or error.")
    admin_token: str = setting(
        "", "Admin bearer token for the admin API; empty generates one in data_dir."
    )
    api_key: str = setting(
        "", "Key the command line reads as (`govledger events`); empty: the admin token."
    )
    gateway_host: str = setting("127.0.0.1", "Address the gateway listens on.")
    gateway_port: int = setting(8080, "Port the gateway listens on.")
    query_host: str = setting("127.0.0.1", "Address the query API (store owner) listens on.")
    query_port: int = setting(8124, "Port of the query API (ClickHouse-style SQL over HTTP).")
    kafka_security_protocol: str = setting(
        "PLAINTEXT", "Kafka client protocol: PLAINTEXT, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: str = setting(
        "SCRAM-SHA-512", "SASL mechanism with the broker: SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    kafka_sasl_username: str = setting("", "SASL user this service logs in to the broker as.")
    kafka_sasl_password_file: str = setting(
        "", "File holding the SASL password (read at start, never logged; no env variable)."
    )
    kafka_ssl_ca_file: str = setting(
        "", "CA bundle that signs the broker's certificate (SASL_SSL); empty uses the system's."
    )
    max_header_count: int = setting(
        100, "Most header lines one HTTP request may carry (gateway, query API); more gets 431."
    )
    max_url_bytes: int = setting(
        65_536, "Longest HTTP request line (method, path, query) accepted; longer gets 414."
    )
    root_secret_file: str = setting(
        "", "File of the org root secrets (record authentication); empty keeps one in data_dir."
    )
    metrics_enabled: bool = setting(
        True, "Serve Prometheus /metrics (docs/metrics.md); off: no route, no-op instruments."
    )
    log_format: str = setting(
        "console",
        "Log lines: console (for a person) or json (one object per line, for a collector).",
    )

    def __post_init__(self) -> None:
        for name in ("gateway_port", "query_port"):
            if not 0 < getattr(self, name) < 65536:
                raise SettingsError(f"{env_name(name)} must be a TCP port")
        if self.max_header_count < 1 or self.max_url_bytes < 64:
            raise SettingsError("the header count must be >= 1 and the URL limit >= 64 bytes")
        if self.topic_partitions < 1 or self.kafka_session_timeout_ms < 1000:
            raise SettingsError("topic partitions must be >= 1 and the session timeout >= 1000 ms")
        _check_kafka_security(self)
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"GOVLEDGER_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")

    @property
    def data_path(self) -> Path:
        """The data directory as an absolute path."""
        return Path(self.data_dir).expanduser().resolve()

    @property
    def effective_clickhouse_dsn(self) -> str:
        """The DSN to connect with: the configured one, else chDB under data_dir."""
        return self.clickhouse_dsn or f"chdb://{self.data_path / 'chdb'}"

    @property
    def gateway_url(self) -> str:
        """Base URL of the gateway."""
        return f"http://{self.gateway_host}:{self.gateway_port}"

    @property
    def query_url(self) -> str:
        """Base URL of the query API."""
        return f"http://{self.query_host}:{self.query_port}"


LOG_FORMATS = ("console", "json")
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


def read_secret_file(path: str, name: str) -> str:
    """A secret kept in a file (a Docker or Kubernetes secret): its UTF-8 text without one
    trailing newline. Unreadable, empty or undecodable is a SettingsError naming the setting
    and the path, never the content."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise SettingsError(f"{name}: {path} is not UTF-8 text") from None
    if not text:
        raise SettingsError(f"{name}: {path} is empty")
    return text


def _check_kafka_security(settings: CommonSettings) -> None:
    """Refuse a broker login that cannot work or would silently not happen."""
    protocol, mechanism = settings.kafka_security_protocol, settings.kafka_sasl_mechanism
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        allowed = ", ".join(KAFKA_SECURITY_PROTOCOLS)
        raise SettingsError(
            f"GOVLEDGER_KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of {allowed}"
        )
    if mechanism not in KAFKA_SASL_MECHANISMS:
        allowed = ", ".join(KAFKA_SASL_MECHANISMS)
        raise SettingsError(f"GOVLEDGER_KAFKA_SASL_MECHANISM={mechanism!r} is not one of {allowed}")
    login = {
        "GOVLEDGER_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "GOVLEDGER_KAFKA_SASL_PASSWORD_FILE": settings.kafka_sasl_password_file,
    }
    if protocol == "PLAINTEXT":
        # Credentials with PLAINTEXT would be ignored: the operator meant to log in.
        given = [name for name, value in login.items() if value]
        if settings.kafka_ssl_ca_file:
            given.append("GOVLEDGER_KAFKA_SSL_CA_FILE")
        if given:
            raise SettingsError(
                f"{', '.join(given)} set but GOVLEDGER_KAFKA_SECURITY_PROTOCOL is PLAINTEXT: "
                "set it to SASL_PLAINTEXT or SASL_SSL"
            )
        return
    missing = [name for name, value in login.items() if not value]
    if missing:
        raise SettingsError(f"{protocol} needs {' and '.join(missing)}")
    if not settings.kafka_bootstrap:
        raise SettingsError(
            f"{protocol} needs GOVLEDGER_KAFKA_BOOTSTRAP: the embedded broker has no SASL"
        )
    read_secret_file(settings.kafka_sasl_password_file, "GOVLEDGER_KAFKA_SASL_PASSWORD_FILE")
    if settings.kafka_ssl_ca_file:
        if protocol != "SASL_SSL":
            raise SettingsError("GOVLEDGER_KAFKA_SSL_CA_FILE is only used with SASL_SSL")
        if not Path(settings.kafka_ssl_ca_file).is_file():
            raise SettingsError(
                f"GOVLEDGER_KAFKA_SSL_CA_FILE: {settings.kafka_ssl_ca_file} is not a file"
            )


def env_name(field_name: str) -> str:
    """The environment variable that carries a setting."""
    return ENV_PREFIX + field_name.upper()
