"""Escalation queues survive a worker restart, a SIGKILL included: the restarted worker
rebuilds them from the topics, so each escalation's SLA breach is paged exactly once.

Real parts: Tansu and the worker (`python -m govledger worker`) as subprocesses. A gateway
and the admin API are played by two publishers sealing records into their hash chains
(`ChainedPublisher`), so each record's `occurred_at` (and so each deadline) is chosen
here. What the worker holds is read from what it pages: an escalation it forgot is never
paged, one it does not know was paged is paged twice, a reassign it lost pages the old
queue, and a resolve it lost pages a decided escalation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from govledger.broker import start_tansu
from schemas import authn, codec
from schemas.ids import now_ms
from schemas.kafka import TopicTailer, ensure_topics
from schemas.publisher import ChainedPublisher
from schemas.records import EscalationSlaBreached
from schemas.topics import ALERTS, CONTROL, ESCALATIONS
from streams.escalations.logic import breach_alert_id
from tests.integration.stack import free_port
from tests.unit import builders

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 2
# The SIGKILLed worker's partitions go to the next one once its session expires: 2 s of
# waiting (and 1 s group joins); the deadlines below still pass while it is out.
SESSION_TIMEOUT_MS = 2_000
P1_SLA_S = 8
TENANT = "acme"
WAIT_S = 90.0


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("tansu") / "broker.log").open("ab")
    broker = start_tansu(port, log)
    try:
        asyncio.run(ensure_topics(f"127.0.0.1:{port}", PARTITIONS))
        yield f"127.0.0.1:{port}"
    finally:
        broker.terminate()
        broker.wait(timeout=10)
        log.close()


class Workers:
    """The worker processes this test starts; any left running are stopped at the end."""

    def __init__(self, bootstrap: str, data_dir: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GOVLEDGER_")}
        self.env.update(
            {
                "GOVLEDGER_KAFKA_BOOTSTRAP": bootstrap,
                "GOVLEDGER_DATA_DIR": str(data_dir),
                "GOVLEDGER_TOPIC_PARTITIONS": str(PARTITIONS),
                "GOVLEDGER_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
                "GOVLEDGER_WORKER_WEB_PORT": "0",
                "GOVLEDGER_WORKER_APP_ID": "govledger-escalations-restart",
                "GOVLEDGER_ESCALATION_SLA_S": f"P1={P1_SLA_S},P2=7200,P3=28800,P4=86400",
                "GOVLEDGER_ESCALATION_TICK_S": "0.2",
                "GOVLEDGER_LOG_LEVEL": "info",
            }
        )
        self.log_path = data_dir / "worker.log"
        # The org keyring, made before any worker starts; this test's own gateway and
        # admin publishers sign with it, as the stack's would.
        authn.install(authn.resolve_keyring(data_dir, "", create=True))
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "govledger", "worker"],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            if worker.poll() is None:
                worker.terminate()
        for worker in self.started:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)


@pytest.fixture
def workers(bootstrap: str, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(bootstrap, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
async def pages(bootstrap: str) -> AsyncIterator[list[EscalationSlaBreached]]:
    """Every escalation breach on the alerts topic, as it arrives."""
    seen: list[EscalationSlaBreached] = []

    def keep(message: Any) -> None:
        record = codec.decode(message.value)
        if isinstance(record, EscalationSlaBreached):
            seen.append(record)

    tailer = TopicTailer(bootstrap, [ALERTS.name], keep)
    await tailer.start()
    try:
        yield seen
    finally:
        await tailer.stop()


class Reviewers:
    """A gateway opening escalations and the admin API acting on them."""

    def __init__(self, bootstrap: str) -> None:
        self.gateway = ChainedPublisher(bootstrap, "gateway-restart-test")
        self.admin = ChainedPublisher(bootstrap, "admin-restart-test")

    async def open(self, escalation_id: str, opened_at: int) -> None:
        record = builders.escalation_opened(
            escalation_id=escalation_id, occurred_at=opened_at, tenant_id=TENANT, priority="P1"
        )
        await self.gateway.publish_and_wait(ESCALATIONS.name, TENANT, record)

    async def claim(self, escalation_id: str, actor: str) -> None:
        record = builders.escalation_claimed(
            escalation_id=escalation_id, occurred_at=now_ms(), tenant_id=TENANT, actor=actor
        )
        await self.admin.publish_and_wait(CONTROL.name, TENANT, record)

    async def reassign(self, escalation_id: str, queue: str, reviewer: str) -> None:
        claim = builders.escalation_claimed(
            escalation_id=escalation_id,
            occurred_at=now_ms(),
            tenant_id=TENANT,
            actor="lead",
            queue=queue,
            reviewer=reviewer,
        )
        record = dataclasses.replace(claim, event_type="escalation.reassigned")
        await self.admin.publish_and_wait(CONTROL.name, TENANT, record)

    async def resolve(self, escalation_id: str) -> None:
        record = builders.escalation_resolved(
            escalation_id=escalation_id, occurred_at=now_ms(), tenant_id=TENANT
        )
        await self.admin.publish_and_wait(CONTROL.name, TENANT, record)


def tail_of(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


async def paged(pages: list[EscalationSlaBreached], *ids: str, log: Path) -> None:
    """Wait until every one of these escalations has been paged."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not set(ids) <= {p.escalation_id for p in pages}:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not paged within {WAIT_S}s: {ids}; log:\n{tail_of(log)}")
        await asyncio.sleep(0.1)


async def test_a_restarted_worker_keeps_its_queues_and_pages_each_breach_once(
    bootstrap: str, workers: Workers, pages: list[EscalationSlaBreached]
) -> None:
    reviewers = Reviewers(bootstrap)
    await reviewers.gateway.start()
    await reviewers.admin.start()
    try:
        first = workers.start()
        # Overdue from the start: the first worker pages it, which shows it is running.
        await reviewers.open("esc_paged", now_ms() - 60_000)
        await paged(pages, "esc_paged", log=workers.log_path)

        # Open, claimed then reassigned, and decided in time: all before the deadline.
        opened_at = now_ms()
        for escalation_id in ("esc_waiting", "esc_claimed", "esc_decided"):
            await reviewers.open(escalation_id, opened_at)
        await reviewers.claim("esc_claimed", "dana")
        await reviewers.reassign("esc_claimed", "central", "lee")
        await reviewers.resolve("esc_decided")
        # Paged, then killed at once: its offset is most likely not committed (Faust
        # commits every few seconds), so the next worker reads its open again.
        await reviewers.open("esc_overdue", now_ms() - 60_000)
        await paged(pages, "esc_overdue", log=workers.log_path)

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        # The group waits out the dead member's session; the deadlines pass meanwhile or
        # soon after, and the new worker must page them from what it rebuilt.
        second = workers.start()
        await paged(pages, "esc_waiting", "esc_claimed", log=workers.log_path)
        await asyncio.sleep(1.0)  # five more ticks
        assert sorted(p.escalation_id for p in pages) == [
            "esc_claimed",
            "esc_overdue",
            "esc_paged",
            "esc_waiting",
        ]

        # Opened now, due after an orderly restart (offsets committed on the way out).
        await reviewers.open("esc_later", now_ms() - (P1_SLA_S - 6) * 1_000)
        await asyncio.sleep(1.0)
        second.terminate()
        second.wait(timeout=30)
        workers.start()
        await paged(pages, "esc_later", log=workers.log_path)
        await reviewers.open("esc_probe", now_ms() - 60_000)  # the third worker ticks
        await paged(pages, "esc_probe", log=workers.log_path)
        await asyncio.sleep(2.0)  # ten more ticks: nothing else may page
    finally:
        await reviewers.gateway.stop()
        await reviewers.admin.stop()

    by_id: dict[str, list[EscalationSlaBreached]] = {}
    for page in pages:
        by_id.setdefault(page.escalation_id, []).append(page)
    assert {k: len(v) for k, v in by_id.items()} == {
        "esc_paged": 1,
        "esc_overdue": 1,
        "esc_waiting": 1,
        "esc_claimed": 1,
        "esc_later": 1,
        "esc_probe": 1,
    }
    assert by_id["esc_claimed"][0].queue == "central"  # the reassign survived the SIGKILL
    assert by_id["esc_waiting"][0].queue == "team:search"
    assert by_id["esc_waiting"][0].deadline_at == opened_at + P1_SLA_S * 1_000
    assert all(v[0].event_id == breach_alert_id(k) for k, v in by_id.items())
