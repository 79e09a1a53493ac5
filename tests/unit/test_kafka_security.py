"""The broker login: settings refused at load when they cannot work, and the same SASL/SCRAM
options reach every Kafka client we make (aiokafka producers, consumers, admin clients and
Faust), with the password read from its file and never held in settings or messages."""

from __future__ import annotations

import ast
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
from faust.auth import SASLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import AuthProtocol, SASLMechanism

import replay.restore
import schemas.group_consumer
import schemas.kafka
import sinks.writer
from schemas.kafka_security import KafkaSecurity
from schemas.settings import (
    CommonSettings,
    GatewaySettings,
    SettingsError,
    SinkSettings,
    StreamSettings,
    load,
)
from streams.app import create_app

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Pa55word-0123456789abcdef"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka-password"
    path.write_text(PASSWORD + "\n")  # as `openssl rand -hex 32 > file` writes it
    return path


def sasl_env(password_file: Path, **extra: str) -> dict[str, str]:
    return {
        "GOVLEDGER_KAFKA_BOOTSTRAP": "kafka:9092",
        "GOVLEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "GOVLEDGER_KAFKA_SASL_USERNAME": "gateway",
        "GOVLEDGER_KAFKA_SASL_PASSWORD_FILE": str(password_file),
        **extra,
    }


# --- settings ---------------------------------------------------------------------------


def test_the_default_is_plaintext_and_adds_no_client_option() -> None:
    security = KafkaSecurity.of(load(CommonSettings, environ={}))
    assert security.protocol == "PLAINTEXT"
    assert security.aiokafka_options() == {}
    assert security.faust_credentials() is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "GSSAPI", "OAUTHBEARER", "scram-sha-512", ""])
def test_a_mechanism_other_than_scram_is_refused_at_load(
    password_file: Path, mechanism: str
) -> None:
    env = sasl_env(password_file, GOVLEDGER_KAFKA_SASL_MECHANISM=mechanism)
    with pytest.raises(SettingsError, match="GOVLEDGER_KAFKA_SASL_MECHANISM"):
        load(GatewaySettings, environ=env)


@pytest.mark.parametrize("protocol", ["SSL", "sasl_plaintext", "SASL", "TLS", ""])
def test_an_unknown_protocol_is_refused_at_load(protocol: str) -> None:
    env = {"GOVLEDGER_KAFKA_SECURITY_PROTOCOL": protocol}
    with pytest.raises(SettingsError, match="GOVLEDGER_KAFKA_SECURITY_PROTOCOL"):
        load(StreamSettings, environ=env)


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("GOVLEDGER_KAFKA_SASL_USERNAME", "GOVLEDGER_KAFKA_SASL_USERNAME"),
        ("GOVLEDGER_KAFKA_SASL_PASSWORD_FILE", "GOVLEDGER_KAFKA_SASL_PASSWORD_FILE"),
    ],
)
def test_sasl_without_a_username_or_password_file_is_refused_naming_it(
    password_file: Path, missing: str, named: str
) -> None:
    env = sasl_env(password_file)
    del env[missing]
    with pytest.raises(SettingsError, match=f"SASL_PLAINTEXT needs {named}"):
        load(SinkSettings, environ=env)


def test_sasl_with_the_embedded_broker_is_refused(password_file: Path) -> None:
    env = sasl_env(password_file)
    del env["GOVLEDGER_KAFKA_BOOTSTRAP"]
    with pytest.raises(SettingsError, match="embedded broker has no SASL"):
        load(CommonSettings, environ=env)


@pytest.mark.parametrize(
    "given",
    ["GOVLEDGER_KAFKA_SASL_USERNAME", "GOVLEDGER_KAFKA_SASL_PASSWORD_FILE"],
)
def test_credentials_with_plaintext_are_refused_rather_than_ignored(
    password_file: Path, given: str
) -> None:
    env = {given: sasl_env(password_file)[given]}
    with pytest.raises(SettingsError, match="PLAINTEXT: set it to SASL_PLAINTEXT or SASL_SSL"):
        load(CommonSettings, environ=env)


def test_a_ca_file_without_tls_is_refused(password_file: Path) -> None:
    env = sasl_env(password_file, GOVLEDGER_KAFKA_SSL_CA_FILE=certifi.where())
    with pytest.raises(SettingsError, match="only used with SASL_SSL"):
        load(CommonSettings, environ=env)


def test_a_missing_ca_file_is_refused(password_file: Path, tmp_path: Path) -> None:
    env = sasl_env(
        password_file,
        GOVLEDGER_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        GOVLEDGER_KAFKA_SSL_CA_FILE=str(tmp_path / "nope.pem"),
    )
    with pytest.raises(SettingsError, match="GOVLEDGER_KAFKA_SSL_CA_FILE"):
        load(CommonSettings, environ=env)


def test_a_missing_or_empty_password_file_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"cannot read .*absent"):
        load(CommonSettings, environ=sasl_env(tmp_path / "absent"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        load(CommonSettings, environ=sasl_env(empty))


def test_a_password_file_that_is_not_text_is_refused_without_showing_it(tmp_path: Path) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xffhunter2\xfe")
    with pytest.raises(SettingsError) as refused:
        load(CommonSettings, environ=sasl_env(binary))
    assert "hunter2" not in str(refused.value)


def test_settings_hold_the_password_path_never_the_password(password_file: Path) -> None:
    settings = load(GatewaySettings, environ=sasl_env(password_file))
    security = KafkaSecurity.of(settings)
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in repr(security)
    assert security.password() == PASSWORD  # one trailing newline dropped, nothing else


# --- what the clients get ---------------------------------------------------------------


def test_sasl_plaintext_options_for_aiokafka(password_file: Path) -> None:
    security = KafkaSecurity.of(load(CommonSettings, environ=sasl_env(password_file)))
    assert security.aiokafka_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "gateway",
        "sasl_plain_password": PASSWORD,
        "ssl_context": None,
    }


def test_sasl_ssl_verifies_the_broker_certificate_and_host(password_file: Path) -> None:
    env = sasl_env(
        password_file,
        GOVLEDGER_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        GOVLEDGER_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        GOVLEDGER_KAFKA_SSL_CA_FILE=certifi.where(),
    )
    options = KafkaSecurity.of(load(CommonSettings, environ=env)).aiokafka_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_the_faust_app_logs_in_with_the_same_user(password_file: Path) -> None:
    settings = load(StreamSettings, environ=sasl_env(password_file))
    credentials = create_app(settings).conf.broker_credentials
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_PLAINTEXT
    assert credentials.mechanism is SASLMechanism.SCRAM_SHA_512
    assert PASSWORD not in repr(credentials)
    # What Faust's aiokafka driver then hands its producer and consumer:
    assert (
        credentials_to_aiokafka_auth(credentials) == KafkaSecurity.of(settings).aiokafka_options()
    )


def test_the_faust_app_uses_tls_with_sasl_ssl(password_file: Path) -> None:
    env = sasl_env(
        password_file,
        GOVLEDGER_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        GOVLEDGER_KAFKA_SSL_CA_FILE=certifi.where(),
    )
    credentials = create_app(load(StreamSettings, environ=env)).conf.broker_credentials
    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_the_faust_app_without_sasl_has_no_credentials() -> None:
    settings = load(StreamSettings, environ={"GOVLEDGER_KAFKA_BOOTSTRAP": "kafka:9092"})
    assert create_app(settings).conf.broker_credentials is None


class Refused(Exception):
    """Raised by the recording client at start: the test needs only its options."""


class Recorder:
    """Stands in for an aiokafka class; keeps the keyword arguments it was made with."""

    made: list[dict[str, Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).made.append(kwargs)

    async def start(self) -> None:
        raise Refused

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, password_file: Path) -> list[dict[str, Any]]:
    """Every aiokafka client class our modules use, recorded; the process's environment
    carries the SASL settings, as in a compose container."""
    for name, value in sasl_env(password_file).items():
        monkeypatch.setenv(name, value)
    made: list[dict[str, Any]] = []
    recording = type("Recording", (Recorder,), {"made": made})
    for module, name in [
        (schemas.kafka, "AIOKafkaAdminClient"),
        (replay.restore, "AIOKafkaConsumer"),
    ]:
        monkeypatch.setattr(module, name, recording)
    monkeypatch.setattr("aiokafka.AIOKafkaConsumer", recording)  # replay.sources imports late
    monkeypatch.setattr(schemas.group_consumer, "Consumer", LibrdkafkaRecorder(made))
    monkeypatch.setattr("confluent_kafka.Producer", LibrdkafkaRecorder(made))
    monkeypatch.setattr("confluent_kafka.Consumer", LibrdkafkaRecorder(made))  # tailers
    return made


class LibrdkafkaRecorder:
    """Stands in for confluent-kafka's Consumer (the sink's, the tailers') and Producer:
    keeps the configuration it was made with, in aiokafka's option names, and refuses to
    run."""

    def __init__(self, made: list[dict[str, Any]]) -> None:
        self.made = made

    def __call__(self, config: dict[str, Any]) -> None:
        self.made.append(
            {
                "security_protocol": config.get("security.protocol"),
                "sasl_mechanism": config.get("sasl.mechanism"),
                "sasl_plain_username": config.get("sasl.username"),
                "sasl_plain_password": config.get("sasl.password"),
            }
        )
        raise Refused


def expect_login(options: dict[str, Any]) -> None:
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "gateway"
    assert options["sasl_plain_password"] == PASSWORD


async def test_every_client_we_make_logs_in_as_the_process_user(
    recorder: list[dict[str, Any]], password_file: Path
) -> None:
    from replay.sources import read_topics

    with pytest.raises(Refused):
        await schemas.kafka.make_producer("kafka:9092").start()
    with pytest.raises(Refused):
        await schemas.kafka.ensure_topics("kafka:9092", 1)
    with pytest.raises(Refused):
        await schemas.kafka.TopicTailer("kafka:9092", ["t"], lambda _: None).start()
    with pytest.raises(Refused):
        await replay.restore.broker_is_empty("kafka:9092")
    with pytest.raises(Refused):
        await read_topics("kafka:9092", ["t"], 0)
    settings = load(SinkSettings, environ=sasl_env(password_file))
    with pytest.raises(Refused):
        await sinks.writer.SinkWriter(settings, Any, Any).start()  # type: ignore[arg-type]
    assert len(recorder) == 6
    for options in recorder:
        expect_login(options)


async def test_an_explicit_login_wins_over_the_process_one(
    recorder: list[dict[str, Any]], tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.write_text("another-password-0123456789")
    security = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-256", "auditor", str(other))
    with pytest.raises(Refused):
        await schemas.kafka.make_producer("kafka:9092", security=security).start()
    assert recorder[0]["sasl_plain_username"] == "auditor"
    assert recorder[0]["sasl_plain_password"] == "another-password-0123456789"


async def test_real_aiokafka_clients_accept_the_options(password_file: Path) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    options = KafkaSecurity.of(load(CommonSettings, environ=sasl_env(password_file)))
    for kind in (AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient):
        client = kind(bootstrap_servers="kafka:9092", **options.aiokafka_options())
        if hasattr(client, "close"):
            await client.close()
        else:
            await client.stop()


def test_real_librdkafka_clients_accept_the_options(password_file: Path) -> None:
    from confluent_kafka import Consumer, Producer

    from schemas.kafka_producer import producer_config

    env = sasl_env(
        password_file,
        GOVLEDGER_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        GOVLEDGER_KAFKA_SSL_CA_FILE=certifi.where(),
    )
    security = KafkaSecurity.of(load(CommonSettings, environ=env))
    config = schemas.group_consumer.client_config(
        "kafka:9092",
        group_id="g",
        client_id="c",
        session_timeout_ms=6000,
        fetch_max_wait_ms=100,
        security=security,
    )
    assert config["ssl.ca.location"] == certifi.where()
    assert config["ssl.endpoint.identification.algorithm"] == "https"
    Consumer(config).close()  # librdkafka checks every setting when the client is made
    made = producer_config("kafka:9092", client_id="c", linger_ms=0, security=security)
    assert made["sasl.password"] == PASSWORD and made["ssl.ca.location"] == certifi.where()
    Producer(made).close()


PRODUCTION_PACKAGES = ("schemas", "gateway", "streams", "sinks", "replay", "govledger")
CLIENT_CLASSES = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
LOGIN_CALLS = {"client_options", "aiokafka_options"}


def test_no_production_code_makes_a_kafka_client_without_the_login() -> None:
    """A client made without the options would connect anonymously and be refused by the
    broker (or, on a broker without ACLs, bypass the role)."""
    unguarded = []
    made = 0
    for path, node, called in production_calls():
        if called not in CLIENT_CLASSES:
            continue
        made += 1
        spread = [k.value for k in node.keywords if k.arg is None]
        names = {
            getattr(call.func, "id", getattr(call.func, "attr", ""))
            for call in spread
            if isinstance(call, ast.Call)
        }
        if not names & LOGIN_CALLS:
            unguarded.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert made >= 6
    assert unguarded == []


def production_calls() -> Iterator[tuple[Path, ast.Call, str]]:
    """Every call in production code: its file, the node and the name called."""
    for package in PRODUCTION_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    yield path, node, getattr(node.func, "id", getattr(node.func, "attr", ""))


def test_every_librdkafka_client_takes_its_settings_with_the_login() -> None:
    """librdkafka's clients (the group member of the sink and the worker's intake, the
    publishers' producer, the tailers) are made from `client_config`, `producer_config`
    and `tailer_config`, which take the login; no production code makes one from a dict
    of its own."""
    made: list[str] = []
    logins: dict[str, list[bool]] = {}
    for path, node, called in production_calls():
        if called in {"Consumer", "Producer", "AdminClient"}:
            made.append(str(path.relative_to(ROOT)))
        elif called in {"client_config", "producer_config", "tailer_config"}:
            with_login = any(k.arg == "security" for k in node.keywords)
            logins.setdefault(str(path.relative_to(ROOT)), []).append(with_login)
    assert sorted(made) == [
        "schemas/group_consumer.py",
        "schemas/kafka.py",
        "schemas/kafka_producer.py",
    ]
    # The group member's users (the sink, the worker's intake) among them.
    assert {"sinks/writer.py", "streams/intake.py"} <= logins.keys()
    assert all(all(calls) for calls in logins.values())
