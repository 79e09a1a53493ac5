"""One gateway per core (GOVLEDGER_GATEWAY_PROCESSES, gateway/processes.py): `govledger
gateway` with N=2 against the shared stack's broker and store runs two processes on one
port; each answers, and each call lands in the store exactly once, under the producer of
the process that answered, and each serves its own /metrics. It boots no stack: its cost
is two gateway processes starting and stopping, and 16 calls (21 s measured on this
2-core machine at load 15, most of it the two processes' imports competing for the
cores)."""

from __future__ import annotations

import contextlib
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.replies import EVENT_ID_HEADER
from schemas.authn import keyring_path
from tests.integration.stack import RunningStack, free_port, wait_for

pytestmark = pytest.mark.integration

TENANT = f"procs-{secrets.token_hex(3)}"
CALLS = 16  # on new connections: all on one process by chance once in 2**15 runs


@pytest.fixture(scope="module")
def stack(shared_stack: RunningStack) -> RunningStack:
    return shared_stack


def two_free_ports() -> int:
    """A port such that it and the next one are free (each process's own /metrics)."""
    while True:
        base = free_port()
        with contextlib.suppress(OSError), socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", base))
            second.bind(("127.0.0.1", base + 1))
            return base


@contextlib.contextmanager
def two_process_gateway(stack: RunningStack, data_dir: Path, metrics_port: int) -> Iterator[str]:
    """`govledger gateway` with two processes on a port of its own, on the shared stack's
    broker, keyring and admin token, its outboxes in a data dir of its own; its URL."""
    port = free_port()
    env = {
        **stack.env,
        "GOVLEDGER_DATA_DIR": str(data_dir),
        "GOVLEDGER_KAFKA_BOOTSTRAP": stack.stack.bootstrap,
        "GOVLEDGER_GATEWAY_PORT": str(port),
        "GOVLEDGER_ADMIN_TOKEN": stack.token,
        "GOVLEDGER_ROOT_SECRET_FILE": str(keyring_path(stack.settings.data_path, "")),
        "GOVLEDGER_GATEWAY_PROCESSES": "2",
        "GOVLEDGER_GATEWAY_METRICS_PORT": str(metrics_port),
    }
    log = (data_dir / "gateway.log").open("wb")
    parent = subprocess.Popen(
        [sys.executable, "-m", "govledger", "gateway"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=40) == 0, "the parent stops its processes and exits 0"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        log.close()


def health(url: str) -> dict[str, object]:
    """One /healthz on a new connection (the kernel picks the process per connection)."""
    try:
        response = httpx.get(f"{url}/healthz", timeout=5)
    except httpx.TransportError:
        return {}
    return dict(response.json()) if response.status_code == 200 else {}


def test_two_processes_share_one_port_and_each_call_is_stored_once_under_its_producer(
    stack: RunningStack, tmp_path: Path
) -> None:
    key = stack.create_key("procs", tenant=TENANT)
    stack.fund("procs", "1", tenant=TENANT)
    metrics_port = two_free_ports()
    with two_process_gateway(stack, tmp_path, metrics_port) as url:
        # Each process answers on the shared port, as a producer of its own.
        producers: dict[object, object] = {}

        def both_answered() -> bool:
            body = health(url)
            if body:
                producers[body["process"]] = body["producer_id"]
            return set(producers) == {1, 2}

        wait_for(both_answered, timeout_s=60, every_s=0.05)
        assert len(set(producers.values())) == 2, producers
        # The key the shared stack's admin API issued reached both processes' views.
        headers = {"Authorization": f"Bearer {key['key']}"}
        body = {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}

        def call() -> str:
            response = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            assert response.status_code in (200, 401), response.text
            return response.headers.get(EVENT_ID_HEADER, "") if response.is_success else ""

        event_ids = [wait_for(call, timeout_s=30)]
        event_ids += [call() for _ in range(CALLS - 1)]  # each on a new connection
        assert all(event_ids) and len(set(event_ids)) == CALLS
        # Each process serves its own /metrics on a port of its own, its calls counted there.
        calls_counted = 0.0
        for index in (1, 2):
            own = f"http://127.0.0.1:{metrics_port + index - 1}"
            assert health(own)["process"] == index
            text = httpx.get(f"{own}/metrics", timeout=10).text
            calls_counted += sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith(f'govledger_gateway_tenant_calls_total{{tenant="{TENANT}"}}')
            )
        assert calls_counted == CALLS

    # In the store: every answered call once, under the two processes' producers only.
    def stored() -> list[list[str]]:
        rows = stack.sql(
            f"SELECT event_id, producer_id FROM lineage WHERE tenant_id = '{TENANT}' "
            "ORDER BY event_id"
        )
        return rows if len(rows) >= CALLS else []

    rows = wait_for(stored, timeout_s=20)
    assert sorted(row[0] for row in rows) == sorted(event_ids)
    by_producer = {row[1] for row in rows}
    assert by_producer == set(producers.values()), "both processes served, each its own chain"
