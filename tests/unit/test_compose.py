"""compose/: the file parses, every file it names exists, every service logs in to the broker
as its own role with its own secret, the broker denies by default and exposes no anonymous
listener to the network, and the environment it gives each service loads as our settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.server import GatewayProcess
from govledger.broker_acls import INIT_BOOTSTRAP, ROLES, SCRAM_MECHANISM
from schemas.settings import (
    CommonSettings,
    ConsoleSettings,
    GatewaySettings,
    NotifySettings,
    SinkSettings,
    StreamSettings,
    known_env_names,
    load,
)
from streams.escalations.logic import EscalationConfig

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
FILE = COMPOSE / "docker-compose.yml"
SETTINGS_OF_COMMAND: dict[str, type[CommonSettings]] = {
    "gateway": GatewaySettings,
    "sink": SinkSettings,
    "worker": StreamSettings,
    "notifier": NotifySettings,
    "console": ConsoleSettings,
    "--help": CommonSettings,
}
ROOT = COMPOSE.parent
# Runs the govledger image but is no broker client and holds no data (pages over the
# admin and query APIs): no broker user, secret, keyring or volume of its own.
CONSOLE = "console"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed = yaml.safe_load(FILE.read_text())
    assert isinstance(parsed, dict)
    return parsed


ROOT_SECRET = "govledger-root"


def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the govledger image and are broker clients (all but the
    console)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image") == "govledger:local" and name != CONSOLE
    }


def test_every_local_file_the_stack_names_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                # A file, or a folder of them (Grafana's dashboards).
                assert (COMPOSE / source).exists(), (name, source)
        build = service.get("build")
        if build:
            assert (COMPOSE / build["context"] / build["dockerfile"]).is_file()
    assert (COMPOSE / "kafka-init.sh").stat().st_mode & 0o111


def test_each_role_has_one_secret_file_made_by_make_secrets(compose: dict[str, Any]) -> None:
    declared = {
        name: spec["file"] for name, spec in compose["secrets"].items() if name != ROOT_SECRET
    }
    assert declared == {role.secret: f"./secrets/kafka-{role.user}.password" for role in ROLES}
    loop = re.search(
        r"^for role in (.+); do$", (COMPOSE / "make-secrets.sh").read_text(), re.MULTILINE
    )
    assert loop is not None
    assert loop.group(1).split() == [role.user for role in ROLES]
    assert "secrets/" in (COMPOSE / ".gitignore").read_text().split()


def test_every_govledger_service_logs_in_as_its_own_role(compose: dict[str, Any]) -> None:
    users = {role.user: role for role in ROLES}
    seen = set()
    for name, service in ours(compose).items():
        env = service["environment"]
        user = env["GOVLEDGER_KAFKA_SASL_USERNAME"]
        assert user in users, name
        broker_secrets = [s for s in service["secrets"] if s != ROOT_SECRET]
        assert broker_secrets == [{"source": users[user].secret, "target": "kafka-password"}], name
        assert env["GOVLEDGER_KAFKA_SASL_PASSWORD_FILE"] == "/run/secrets/kafka-password"
        assert env["GOVLEDGER_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert env["GOVLEDGER_KAFKA_SASL_MECHANISM"] == SCRAM_MECHANISM
        seen.add(user)
    assert seen == set(users)  # every role is used by some service
    kafka_init = compose["services"]["kafka-init"]
    assert sorted(kafka_init["secrets"]) == sorted(role.secret for role in ROLES)


def test_the_public_gateway_serves_no_admin_api_and_the_admin_api_is_on_loopback(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["gateway"]["environment"]["GOVLEDGER_GATEWAY_SERVES"] == "api"
    assert services["gateway"]["environment"]["GOVLEDGER_KAFKA_SASL_USERNAME"] == "gateway"
    assert services["admin"]["environment"]["GOVLEDGER_GATEWAY_SERVES"] == "admin"
    assert services["admin"]["environment"]["GOVLEDGER_KAFKA_SASL_USERNAME"] == "admin-api"
    assert all(port.startswith("127.0.0.1:") for port in services["admin"]["ports"])


def test_the_broker_denies_by_default_and_only_sasl_reaches_the_network(
    compose: dict[str, Any],
) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    assert "ports" not in kafka
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_SUPER_USERS"] == "User:ANONYMOUS"
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    for listener in env["KAFKA_LISTENERS"].split(","):
        name, address = listener.split("://")
        host, port = address.rsplit(":", 1)
        if protocols[name] == "PLAINTEXT":  # anonymous, hence super user: loopback only
            assert host == "localhost", listener
        else:
            assert protocols[name] == "SASL_PLAINTEXT"
            assert (
                f"kafka:{port}" == ours(compose)["sink"]["environment"]["GOVLEDGER_KAFKA_BOOTSTRAP"]
            )
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == SCRAM_MECHANISM
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")[1].startswith("localhost:")
    # kafka-init shares the broker's network namespace to reach the loopback listener.
    kafka_init = compose["services"]["kafka-init"]
    assert kafka_init["network_mode"] == "service:kafka"
    assert f"BROKER://{INIT_BOOTSTRAP}" in env["KAFKA_LISTENERS"]


def test_the_auditor_does_not_get_the_admin_token(compose: dict[str, Any]) -> None:
    env = compose["services"]["auditor"]["environment"]
    assert resolved(env["GOVLEDGER_ADMIN_TOKEN"]) == ""


def test_services_start_after_the_acls_are_in_place(compose: dict[str, Any]) -> None:
    for name in ("sink", "worker"):
        depends = compose["services"][name]["depends_on"]
        assert depends["kafka-init"] == {"condition": "service_completed_successfully"}, name


def resolved(value: Any) -> str:
    """Compose's ${VAR:-default} and ${VAR:?message} with nothing set: the default, or a
    stand-in for a required value."""
    text = str(value)
    return re.sub(
        r"\$\{(\w+)(?::-([^}]*)|:\?[^}]*)?\}",
        lambda m: "required" if m.group(2) is None else m.group(2),
        text,
    )


@pytest.mark.parametrize(
    "service", ["sink", "worker", "gateway", "admin", "auditor", "notifier", CONSOLE]
)
def test_the_environment_of_each_service_loads_as_its_settings(
    compose: dict[str, Any], service: str, tmp_path: Path
) -> None:
    spec = compose["services"][service]
    env = {key: resolved(value) for key, value in spec["environment"].items()}
    assert set(env) <= known_env_names()
    password = tmp_path / "kafka-password"
    password.write_text("0123456789abcdef0123456789abcdef\n")
    if "GOVLEDGER_KAFKA_SASL_PASSWORD_FILE" in env:  # the console is no broker client
        env["GOVLEDGER_KAFKA_SASL_PASSWORD_FILE"] = str(password)
    env["GOVLEDGER_DATA_DIR"] = str(tmp_path)
    load(SETTINGS_OF_COMMAND[spec["command"][0]], environ=env)


def paths(process: GatewayProcess) -> set[str]:
    routes = process.application().router.routes()
    return {route.resource.canonical for route in routes if route.resource is not None}


@pytest.mark.parametrize(
    ("serves", "chat", "admin"), [("all", True, True), ("api", True, False), ("admin", False, True)]
)
async def test_a_gateway_serves_the_routes_its_setting_names(
    tmp_path: Path, serves: str, chat: bool, admin: bool
) -> None:
    settings = load(
        GatewaySettings,
        environ={
            "GOVLEDGER_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "GOVLEDGER_DATA_DIR": str(tmp_path),
            "GOVLEDGER_GATEWAY_SERVES": serves,
        },
    )
    process = GatewayProcess(settings, "token", escalation_config=EscalationConfig())
    try:
        served = paths(process)
    finally:
        await process.stop()
    assert "/healthz" in served
    assert ("/v1/chat/completions" in served) is chat
    assert ("/v1/models" in served) is chat
    assert ("/v1/admin/keys" in served) is admin
    assert any(p.startswith("/v1/admin/") for p in served) is admin


def test_every_service_keeps_its_data_directory_on_a_named_volume_of_its_own(
    compose: dict[str, Any],
) -> None:
    """A recreated container loses nothing its part holds (spool, exports, state)."""
    declared = set(compose["volumes"])
    seen: dict[str, str] = {}
    for name, service in ours(compose).items():
        data_dir = service["environment"]["GOVLEDGER_DATA_DIR"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}
        volume = mounts.get(data_dir, "")
        assert volume in declared, f"{name}: {data_dir} is not on a named volume"
        assert volume not in seen, f"{name} and {seen[volume]} share the volume {volume}"
        seen[volume] = name


def test_every_service_reads_the_one_org_root_keyring(compose: dict[str, Any]) -> None:
    # Without one shared keyring each container mints a root of its own in its /data at
    # first start, and no service can verify another's records (schemas.authn).
    assert compose["secrets"][ROOT_SECRET]["file"] == "./secrets/govledger-root.keys"
    script = (COMPOSE / "make-secrets.sh").read_text()
    assert "secrets/govledger-root.keys" in script
    for name, service in ours(compose).items():
        environment = service["environment"]
        assert environment["GOVLEDGER_ROOT_SECRET_FILE"] == f"/run/secrets/{ROOT_SECRET}", name
        sources = [s["source"] if isinstance(s, dict) else s for s in service["secrets"]]
        assert ROOT_SECRET in sources, name


def _port_of(service: dict[str, Any], name: str) -> str:
    return str(service["environment"][f"GOVLEDGER_{name}_PORT"])


def test_the_console_reaches_the_admin_and_query_apis_by_name_and_holds_no_secret(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    console = services[CONSOLE]
    assert console["image"] == "govledger:local" and console["command"] == ["console"]
    env = {key: resolved(value) for key, value in console["environment"].items()}
    settings = load(ConsoleSettings, environ=env)
    # The admin API is the `admin` service (the public gateway serves none), the query
    # API the sink; each on the port that service listens on.
    assert settings.gateway_url == f"http://admin:{_port_of(services['admin'], 'GATEWAY')}"
    assert settings.query_url == f"http://sink:{_port_of(services['sink'], 'QUERY')}"
    worker_port = services["worker"]["environment"]["GOVLEDGER_WORKER_WEB_PORT"]
    # Every replica of a scaled worker service (Docker's DNS answers each one's address).
    assert settings.worker_metrics_urls == (f"dns+http://worker:{worker_port}/metrics",)
    assert services["worker"]["environment"]["GOVLEDGER_WORKER_WEB_HOST"] == "0.0.0.0"
    assert set(console["depends_on"]) == {"admin", "sink"}
    # It listens on every address of its container, published on the host's loopback.
    assert settings.console_host == "0.0.0.0"
    assert console["ports"] == [f"127.0.0.1:{settings.console_port}:{settings.console_port}"]
    assert str(settings.console_port) in console["healthcheck"]["test"][-1]
    # It acts with its users' keys only: no admin token, broker password, keyring or DSN.
    assert "secrets" not in console and "volumes" not in console
    assert not {
        "GOVLEDGER_ADMIN_TOKEN",
        "GOVLEDGER_KAFKA_BOOTSTRAP",
        "GOVLEDGER_CLICKHOUSE_DSN",
        "GOVLEDGER_ROOT_SECRET_FILE",
    } & set(env)
    # Plain HTTP on loopback: the cookie is not Secure unless the operator says so.
    assert not settings.console_secure_cookie
    secure = load(ConsoleSettings, environ={**env, "GOVLEDGER_CONSOLE_SECURE_COOKIE": "true"})
    assert secure.console_secure_cookie
    exposed = re.search(r"^EXPOSE (.+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert exposed is not None and str(settings.console_port) in exposed.group(1).split()
