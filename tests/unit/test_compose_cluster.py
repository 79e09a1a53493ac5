"""compose/: both stacks (one machine, and the cluster layout) are valid Compose files by
the Compose specification's own JSON schema, and the cluster layout holds what it claims:
three brokers with replication 3 and min ISR 2 that only SASL reaches over the network,
two ClickHouse replicas on three Keeper nodes under the cluster name the sinks migrate
with, two sinks in one group, two gateways behind a balancer that never resends a call.
No container engine runs here: these are the checks a reader of the files would make."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from schemas.settings import SinkSettings, StreamSettings, known_env_names, load
from streams.app import create_app
from tests.unit.test_broker_acls import run_init
from tests.unit.test_compose import ROOT_SECRET, SETTINGS_OF_COMMAND, resolved

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
FILES = ("docker-compose.yml", "cluster.yml")
CLUSTER = COMPOSE / "cluster.yml"
# Vendored from compose-spec/compose-spec (tests/fixtures/compose-spec/VENDORED.md).
SPEC = Path(__file__).resolve().parents[1] / "fixtures" / "compose-spec" / "compose-spec.json"
GOVLEDGER_IMAGE = "govledger:local"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SPEC.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    parsed = yaml.safe_load(CLUSTER.read_text())
    assert isinstance(parsed, dict)
    return parsed


def services_named(cluster: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    pattern = re.compile(rf"^{prefix}-\d+$")
    return {name: s for name, s in cluster["services"].items() if pattern.match(name)}


def listeners(value: str) -> dict[str, tuple[str, str]]:
    """NAME://host:port,... as {name: (host, port)}."""
    found = {}
    for item in value.split(","):
        name, address = item.split("://")
        host, port = address.rsplit(":", 1)
        found[name] = (host, port)
    return found


@pytest.mark.parametrize("name", FILES)
def test_each_compose_file_is_valid_by_the_compose_specification(
    validator: jsonschema.Draft7Validator, name: str
) -> None:
    document = yaml.safe_load((COMPOSE / name).read_text())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []


def test_the_specification_refuses_what_compose_would_refuse(
    validator: jsonschema.Draft7Validator, cluster: dict[str, Any]
) -> None:
    """The schema is no rubber stamp: a misspelt key or a wrong shape fails it."""
    misspelt = json.loads(json.dumps(cluster))
    misspelt["services"]["sink-1"]["enviroment"] = {}
    wrong_shape = json.loads(json.dumps(cluster))
    wrong_shape["services"]["gateway-lb"]["ports"] = "8080:8080"
    for document in (misspelt, wrong_shape):
        assert list(validator.iter_errors(document))


def test_every_local_file_the_cluster_names_exists(cluster: dict[str, Any]) -> None:
    for name, service in cluster["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).is_file(), (name, source)
            else:
                assert source in cluster["volumes"], (name, source)
    for secret in cluster["secrets"].values():
        assert secret["file"].startswith("./secrets/")  # made by make-secrets.sh


@pytest.mark.parametrize(
    "service",
    [
        "sink-1",
        "sink-2",
        "worker-1",
        "worker-2",
        "gateway-1",
        "gateway-2",
        "admin",
        "notifier",
        "console",
    ],
)
def test_the_environment_of_each_cluster_service_loads_as_its_settings(
    cluster: dict[str, Any], service: str, tmp_path: Path
) -> None:
    spec = cluster["services"][service]
    env = {key: resolved(value) for key, value in spec["environment"].items()}
    assert set(env) <= known_env_names()
    password = tmp_path / "kafka-password"
    password.write_text("0123456789abcdef0123456789abcdef\n")
    if "GOVLEDGER_KAFKA_SASL_PASSWORD_FILE" in env:
        env["GOVLEDGER_KAFKA_SASL_PASSWORD_FILE"] = str(password)
    env["GOVLEDGER_DATA_DIR"] = str(tmp_path)
    load(SETTINGS_OF_COMMAND[spec["command"][0]], environ=env)


def test_three_brokers_make_one_quorum_and_replicate_three_times_with_min_isr_two(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    brokers = services_named(cluster, "kafka")
    assert len(brokers) == 3
    ids = {s["environment"]["KAFKA_NODE_ID"] for s in brokers.values()}
    assert ids == {"1", "2", "3"}
    for name, broker in brokers.items():
        env = broker["environment"]
        voters = dict(v.split("@") for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        controller_port = listeners(env["KAFKA_LISTENERS"])["CONTROLLER"][1]
        assert voters == {
            b["environment"]["KAFKA_NODE_ID"]: f"{n}:{controller_port}" for n, b in brokers.items()
        }
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3", name
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2", name
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3", name
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2", name
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false", name
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", name
    # kafka-init makes every catalogue topic with 3 replicas and min ISR 2 (its script,
    # run against stand-ins of Kafka's tools with the service's environment).
    init = cluster["services"]["kafka-init"]
    environment = {key: resolved(value) for key, value in init["environment"].items()}
    done, calls = run_init(tmp_path, {}, environment)
    assert done.returncode == 0, done.stderr
    topics = [line for line in calls.splitlines() if line.startswith("kafka-topics.sh")]
    assert topics
    for line in topics:
        assert "--replication-factor 3 " in line and "min.insync.replicas=2" in line, line
    assert set(init["depends_on"]) == set(brokers)


def test_the_workers_replicate_faust_topics_as_the_catalogue(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    """Faust's own topics (table changelogs) get three replicas, as the catalogue's."""
    workers = services_named(cluster, "worker")
    assert len(workers) >= 2
    password = tmp_path / "kafka-password"
    password.write_text("0123456789abcdef0123456789abcdef\n")
    for worker in workers.values():
        env = {key: resolved(value) for key, value in worker["environment"].items()}
        env["GOVLEDGER_KAFKA_SASL_PASSWORD_FILE"] = str(password)
        env["GOVLEDGER_DATA_DIR"] = str(tmp_path)
        app = create_app(load(StreamSettings, environ=env))
        assert app.conf.topic_replication_factor == 3


def test_only_sasl_listeners_reach_the_network_and_brokers_advertise_their_names(
    cluster: dict[str, Any],
) -> None:
    for name, broker in services_named(cluster, "kafka").items():
        env = broker["environment"]
        assert "ports" not in broker
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        protocols = dict(
            p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
        )
        for listener, (host, _) in listeners(env["KAFKA_LISTENERS"]).items():
            if protocols[listener] == "PLAINTEXT":  # anonymous super user: loopback only
                assert host == "localhost", (name, listener)
            else:
                assert protocols[listener] == "SASL_PLAINTEXT", (name, listener)
        advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
        assert advertised["CLIENT"][0] == name
        assert advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]][0] == name
        # The brokers' own login is no service's: no SCRAM user of a role is a super user.
        assert env["KAFKA_SUPER_USERS"].split(";") == ["User:ANONYMOUS", "User:broker"]
    bootstrap = cluster["services"]["sink-1"]["environment"]["GOVLEDGER_KAFKA_BOOTSTRAP"]
    assert sorted(bootstrap.split(",")) == [f"kafka-{i}:9092" for i in (1, 2, 3)]


def test_clickhouse_replicas_keeper_and_the_sinks_name_one_cluster(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    config = ET.parse(COMPOSE / "clickhouse" / "cluster" / "cluster.xml").getroot()
    declared = [element.tag for element in config.find("remote_servers") or []]
    replicas = services_named(cluster, "clickhouse")
    keepers = services_named(cluster, "keeper")
    assert len(replicas) == 2 and len(keepers) == 3
    hosts = [host.text or "" for host in config.iterfind("remote_servers/*/shard/replica/host")]
    assert sorted(hosts) == sorted(replicas)
    for name, replica in replicas.items():
        # The {replica} macro comes from CLICKHOUSE_REPLICA: each its own service name.
        assert replica["environment"]["CLICKHOUSE_REPLICA"] == name
        assert set(replica["depends_on"]) == set(keepers)
    macro = config.find("macros/replica")
    assert macro is not None and macro.get("from_env") == "CLICKHOUSE_REPLICA"
    assert [n.text for n in config.iterfind("zookeeper/node/host")] == sorted(keepers)
    keeper = ET.parse(COMPOSE / "clickhouse" / "keeper" / "keeper.xml").getroot()
    raft = {
        server.findtext("id"): server.findtext("hostname")
        for server in keeper.iterfind("keeper_server/raft_configuration/server")
    }
    assert raft == {s["environment"]["KEEPER_SERVER_ID"]: n for n, s in keepers.items()}
    # Every sink migrates ON CLUSTER with the one cluster the servers declare.
    sinks = services_named(cluster, "sink")
    for name, sink in sinks.items():
        env = {key: resolved(value) for key, value in sink["environment"].items()}
        password = tmp_path / "kafka-password"
        password.write_text("0123456789abcdef0123456789abcdef\n")
        env["GOVLEDGER_KAFKA_SASL_PASSWORD_FILE"] = str(password)
        settings = load(SinkSettings, environ={**env, "GOVLEDGER_DATA_DIR": str(tmp_path)})
        assert [settings.store_cluster] == declared, name
        assert settings.clickhouse_dsn.split("@")[1].split(":")[0] in replicas, name


def test_sinks_share_the_group_each_with_its_own_state_and_the_owner_migrates_first(
    cluster: dict[str, Any],
) -> None:
    sinks = services_named(cluster, "sink")
    assert len(sinks) >= 2
    volumes = set()
    for name, sink in sinks.items():
        assert sink["command"] == ["sink"]
        assert sink["environment"]["GOVLEDGER_KAFKA_SASL_USERNAME"] == "sink"
        assert [s for s in sink["secrets"] if s != ROOT_SECRET] == [
            {"source": "kafka-sink-password", "target": "kafka-password"}
        ]
        volumes.add(sink["volumes"][0].split(":")[0])
        if name != "sink-1":  # the migrations run once, before any other sink starts
            assert sink["depends_on"] == {"sink-1": {"condition": "service_healthy"}}
    assert len(volumes) == len(sinks)
    # Clients reach the store owner's query API and exports.
    assert cluster["services"]["console"]["environment"]["GOVLEDGER_QUERY_HOST"] == "sink-1"


def test_gateways_sit_behind_a_balancer_that_never_sends_a_call_twice(
    cluster: dict[str, Any],
) -> None:
    gateways = services_named(cluster, "gateway")
    assert len(gateways) >= 2
    names = {g["environment"]["GOVLEDGER_GATEWAY_NAME"] for g in gateways.values()}
    assert len(names) == len(gateways)
    volumes = {g["volumes"][0].split(":")[0] for g in gateways.values()}
    assert len(volumes) == len(gateways)  # one outbox and spool each
    for name, gateway in gateways.items():
        assert "ports" not in gateway, name  # reached through the balancer only
        assert gateway["environment"]["GOVLEDGER_GATEWAY_SERVES"] == "api"
    balancer = cluster["services"]["gateway-lb"]
    assert set(balancer["depends_on"]) == set(gateways)
    conf = (COMPOSE / "nginx" / "gateways.conf").read_text()
    upstream = re.findall(r"^\s*server ([\w-]+):(\d+)", conf, re.MULTILINE)
    assert upstream == [
        (n, g["environment"]["GOVLEDGER_GATEWAY_PORT"]) for n, g in gateways.items()
    ]
    listen = re.search(r"^\s*listen (\d+);", conf, re.MULTILINE)
    assert listen is not None and balancer["ports"] == [f"{listen.group(1)}:{listen.group(1)}"]
    # A POST already sent is never tried again on another gateway (no non_idempotent),
    # and streams are passed through unbuffered.
    directives = [line.split("#")[0].strip() for line in conf.splitlines()]
    assert [d for d in directives if d.startswith("proxy_next_upstream ")] == [
        "proxy_next_upstream error;"
    ]
    assert "proxy_buffering off;" in directives
