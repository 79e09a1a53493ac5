from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.integration.stack import RunningStack, running_stack, stack_environ
from tests.integration.upstream import fake_upstream

FAILING_MODEL = "broken-upstream"
CUT_STREAM_MODEL = "cut-stream"
FLAKY_MODEL = "flaky-primary"  # always fails upstream; falls back to sim-small
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:24.8"


def docker_unavailable_reason() -> str | None:
    """Why the containers variant cannot run here, or None when a Docker engine answers."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception as exc:  # any failure to reach an engine means: skip, saying why
        return f"no Docker engine reachable ({type(exc).__name__}: {exc})"
    return None


@contextlib.contextmanager
def container_backends() -> Iterator[dict[str, str]]:
    """Apache Kafka and a ClickHouse server in containers, as production runs them."""
    from testcontainers.community.clickhouse import ClickHouseContainer
    from testcontainers.community.kafka import KafkaContainer

    with (
        KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka,
        ClickHouseContainer(CLICKHOUSE_IMAGE) as clickhouse,
    ):
        host = clickhouse.get_container_host_ip()
        port = clickhouse.get_exposed_port(8123)
        yield {
            "GOVLEDGER_KAFKA_BOOTSTRAP": kafka.get_bootstrap_server(),
            "GOVLEDGER_CLICKHOUSE_DSN": (
                f"http://{clickhouse.username}:{clickhouse.password}@{host}:{port}/"
                f"{clickhouse.dbname}"
            ),
        }


@pytest.fixture(scope="module", params=["embedded", "containers"])
def stack_env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    backends: contextlib.AbstractContextManager[dict[str, str]] = contextlib.nullcontext({})
    if request.param == "containers":
        reason = docker_unavailable_reason()
        if reason is not None:
            pytest.skip(f"containers variant (Apache Kafka + ClickHouse server): {reason}")
        backends = container_backends()
    # A stand-in for an upstream provider (outside the product): one model always answers
    # 500, the other breaks its stream off after two chunks.
    with (
        backends as backend_env,
        fake_upstream({FAILING_MODEL, FLAKY_MODEL}, CUT_STREAM_MODEL) as upstream,
    ):
        yield stack_environ(
            tmp_path_factory.mktemp(f"govledger-{request.param}"),
            GOVLEDGER_UPSTREAM_BASE_URL=upstream,
            GOVLEDGER_UPSTREAM_MODELS=f"{FAILING_MODEL},{CUT_STREAM_MODEL},{FLAKY_MODEL}",
            GOVLEDGER_FALLBACKS=f"{FLAKY_MODEL}=sim-small",
            GOVLEDGER_RETRY_BACKOFF_MS="10",
            GOVLEDGER_UPSTREAM_TIMEOUT_S="2",
            GOVLEDGER_MAX_BODY_BYTES="65536",
            **backend_env,
        )


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> Iterator[RunningStack]:
    with running_stack(stack_env) as running:
        yield running
