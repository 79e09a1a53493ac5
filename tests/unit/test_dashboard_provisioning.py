"""compose/'s Prometheus and Grafana: Prometheus scrapes /metrics of every govledger service
at the port compose gives it, Grafana installs the ClickHouse plugin and provisions both data
sources and every dashboard file, ClickHouse has the read-only user Grafana logs in as, and
every dashboard names a provisioned data source. (The panels' SQL runs on the store in
tests/integration/test_dashboard_queries.py.)"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
GRAFANA = COMPOSE / "grafana"
# The setting that gives each govledger command its listening port.
PORT_SETTING = {
    "gateway": "GOVLEDGER_GATEWAY_PORT",
    "sink": "GOVLEDGER_QUERY_PORT",
    "worker": "GOVLEDGER_WORKER_WEB_PORT",
}


def _yaml(path: Path) -> dict[str, Any]:
    parsed = yaml.safe_load(path.read_text())
    assert isinstance(parsed, dict), path
    return parsed


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return dict(_yaml(COMPOSE / "docker-compose.yml")["services"])


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's bind mounts: container path → path under compose/."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = source.removeprefix("./")
    return found


def test_prometheus_scrapes_metrics_of_every_service_at_its_port(
    services: dict[str, dict[str, Any]],
) -> None:
    mounts = _mounts(services["prometheus"])
    config = _yaml(COMPOSE / mounts["/etc/prometheus/prometheus.yml"])
    scraped: set[str] = set()
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job
        for static in job.get("static_configs", []):
            scraped.update(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            scraped.update(f"{name}:{dns['port']}" for name in dns["names"])
    expected = set()
    for name, service in services.items():
        command = (service.get("command") or [""])[0]
        if service.get("image") == "govledger:local" and command in PORT_SETTING:
            expected.add(f"{name}:{service['environment'][PORT_SETTING[command]]}")
    assert expected == {"gateway:8080", "admin:8080", "sink:8124", "worker:6066"}
    assert scraped == expected


def test_grafana_provisions_both_data_sources_and_every_dashboard_file(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    assert "GF_SECURITY_ADMIN_PASSWORD" in grafana["environment"]
    assert all(port.startswith("127.0.0.1:") for port in grafana["ports"])
    mounts = _mounts(grafana)
    sources = _yaml(COMPOSE / mounts["/etc/grafana/provisioning/datasources/datasources.yml"])
    by_type = {source["type"]: source for source in sources["datasources"]}
    assert by_type["prometheus"]["url"] == "http://prometheus:9090"
    clickhouse = by_type["grafana-clickhouse-datasource"]["jsonData"]
    assert clickhouse["host"] in services and clickhouse["port"] == 8123
    assert clickhouse["protocol"] == "http"
    providers = _yaml(COMPOSE / mounts["/etc/grafana/provisioning/dashboards/dashboards.yml"])
    (provider,) = providers["providers"]
    assert mounts[provider["options"]["path"]] == "grafana/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / Path(home).name).is_file()


def test_grafana_reads_clickhouse_as_a_read_only_user(
    services: dict[str, dict[str, Any]],
) -> None:
    sources = _yaml(GRAFANA / "provisioning" / "datasources" / "datasources.yml")
    (clickhouse,) = [s for s in sources["datasources"] if s["uid"] == "clickhouse"]
    user = clickhouse["jsonData"]["username"]
    mounts = _mounts(services["clickhouse"])
    config = ET.parse(COMPOSE / mounts[f"/etc/clickhouse-server/users.d/{user}.xml"]).getroot()
    defined = config.find(f"users/{user}")
    assert defined is not None
    profile = config.find(f"profiles/{defined.findtext('profile')}")
    assert profile is not None and profile.findtext("readonly") == "1"
    password = defined.find("password")
    assert password is not None and password.get("from_env") == "GRAFANA_CLICKHOUSE_PASSWORD"
    assert not (password.text or "").strip()  # never a password in the file
    for service in ("clickhouse", "grafana"):
        assert "GRAFANA_CLICKHOUSE_PASSWORD" in services[service]["environment"]


def _datasources(node: Any) -> list[dict[str, Any]]:
    """Every data source reference in a dashboard (panels, targets, variables)."""
    if isinstance(node, dict):
        found = [node["datasource"]] if isinstance(node.get("datasource"), dict) else []
        return found + [d for value in node.values() for d in _datasources(value)]
    if isinstance(node, list):
        return [d for value in node for d in _datasources(value)]
    return []


def test_every_dashboard_names_a_provisioned_data_source() -> None:
    sources = _yaml(GRAFANA / "provisioning" / "datasources" / "datasources.yml")
    uids = {source["uid"] for source in sources["datasources"]}
    types = {source["type"] for source in sources["datasources"]}
    boards = sorted((GRAFANA / "dashboards").glob("*.json"))
    assert "spend-governance.json" in {board.name for board in boards}
    seen_uids = set()
    for board in boards:
        dashboard = json.loads(board.read_text())
        assert dashboard["uid"] not in seen_uids, board
        seen_uids.add(dashboard["uid"])
        for datasource in _datasources(dashboard):
            uid = datasource.get("uid")
            # A uid of ours, or a variable naming one, or the type alone.
            assert (
                uid in uids
                or str(uid).startswith("$")
                or (uid is None and datasource.get("type") in types)
            ), (board.name, datasource)
