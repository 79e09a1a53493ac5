"""`govledger doctor`'s checks over probes this test feeds (govledger.doctor.probes'
protocol): a healthy stack passes every check; a stopped worker, sink or broker, a commit
stall, a skewed clock, an exposed secret and contradicting settings each fail the check
that names them, with its hint; a probe that hangs costs its check's timeout, not the run.
The same checks against a real stack: tests/integration/test_doctor.py."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping, Sequence
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from govledger.admin_token import resolve_admin_token
from govledger.doctor.checks import (
    CheckResult,
    FileStat,
    GroupView,
    PartitionOffsets,
    Status,
    TopicView,
    exit_code,
)
from govledger.doctor.probes import HttpReply, NotAllowedError, ProbeError
from govledger.doctor.run import CHECKS, Context, run_checks
from schemas import authn
from schemas.settings import (
    DoctorSettings,
    GatewaySettings,
    RuntimeSettings,
    SinkSettings,
    StreamSettings,
    load,
)
from schemas.topics import CATALOGUE
from sinks.store import migrations

NOW_MS = int(time.time()) * 1000
INTAKE = "govledger-streams-intake"
SINK = "govledger-sink"
UNREACHABLE = ProbeError("cannot reach the broker at 127.0.0.1:19092: KafkaConnectionError")


def reply(status: int = 200, body: bytes = b"{}", skew_ms: int = 0) -> HttpReply:
    return HttpReply(
        status, body, formatdate((NOW_MS + skew_ms) / 1000, usegmt=True), NOW_MS, NOW_MS + 5
    )


def healthy_group(group_id: str) -> GroupView:
    return GroupView(group_id, "Stable", 1, {"govledger.lineage[0]": PartitionOffsets(5, 5)})


@dataclasses.dataclass
class FedProbes:
    """Answers as a stack would give them; each field can be changed to a failure
    (a ProbeError is raised, `hang` never answers)."""

    settings: RuntimeSettings
    topic_views: dict[str, TopicView] | ProbeError = dataclasses.field(
        default_factory=lambda: {
            t.name: TopicView(4, "compact" if t.compacted else "delete") for t in CATALOGUE
        }
    )
    groups: dict[str, GroupView | ProbeError] = dataclasses.field(
        default_factory=lambda: {INTAKE: healthy_group(INTAKE), SINK: healthy_group(SINK)}
    )
    replies: dict[str, HttpReply | ProbeError] = dataclasses.field(default_factory=dict)
    applied: list[int] | ProbeError = dataclasses.field(
        default_factory=lambda: [number for number, _, _ in migrations()]
    )
    hang: set[str] = dataclasses.field(default_factory=set)

    async def _maybe_hang(self, what: str) -> None:
        if what in self.hang:
            await asyncio.Event().wait()

    async def topics(self, names: Sequence[str]) -> dict[str, TopicView]:
        await self._maybe_hang("kafka")
        if isinstance(self.topic_views, ProbeError):
            raise self.topic_views
        return {n: v for n, v in self.topic_views.items() if n in names}

    async def group(self, group_id: str, topics: Sequence[str]) -> GroupView:
        await self._maybe_hang("kafka")
        if isinstance(self.topic_views, ProbeError):
            raise self.topic_views
        found = self.groups[group_id]
        if isinstance(found, ProbeError):
            raise found
        return found

    async def get(self, url: str) -> HttpReply:
        await self._maybe_hang(url)
        found = self.replies.get(url, reply())
        if isinstance(found, ProbeError):
            raise found
        return found

    async def query(self, sql: str) -> list[list[Any]]:
        assert sql.startswith("SELECT number FROM schema_migrations")
        if isinstance(self.applied, ProbeError):
            raise self.applied
        return [[n] for n in self.applied]

    def stat(self, path: Path) -> FileStat | None:
        try:
            found = path.stat()
        except FileNotFoundError:
            return None
        return FileStat(found.st_mode, found.st_uid)

    def now_ms(self) -> int:
        return NOW_MS


def environ(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "GOVLEDGER_DATA_DIR": str(data_dir),
        "GOVLEDGER_GATEWAY_PORT": "18080",
        "GOVLEDGER_QUERY_PORT": "18124",
        "GOVLEDGER_WORKER_WEB_PORT": "16066",
        **extra,
    }


def context(probes: FedProbes, env: Mapping[str, str]) -> Context:
    runtime = load(RuntimeSettings, env)
    return Context(
        runtime=runtime,
        gateway=load(GatewaySettings, env),
        sink=load(SinkSettings, env),
        stream=load(StreamSettings, env),
        doctor=load(DoctorSettings, env),
        probes=probes,
        admin_token=resolve_admin_token(runtime, create=False),
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A data dir as `govledger up` leaves it: the admin token and the root keyring."""
    made = environ(tmp_path)
    settings = load(RuntimeSettings, made)
    resolve_admin_token(settings, create=True)
    authn.resolve_keyring(settings.data_path, settings.root_secret_file, create=True)
    return made


def run(probes: FedProbes, env: Mapping[str, str]) -> dict[str, CheckResult]:
    results = asyncio.run(run_checks(context(probes, env)))
    assert [r.name for r in results] == [name for name, _ in CHECKS]
    return {r.name: r for r in results}


def failed(results: dict[str, CheckResult]) -> set[str]:
    return {name for name, r in results.items() if r.status is Status.FAIL}


def fed(env: Mapping[str, str]) -> FedProbes:
    return FedProbes(load(RuntimeSettings, env))


def test_a_healthy_stack_passes_every_check(env: dict[str, str]) -> None:
    results = run(fed(env), env)
    assert {name: r.status for name, r in results.items() if r.status is not Status.OK} == {}
    assert exit_code(list(results.values())) == 0
    assert results["store"].detail == f"all {len(migrations())} migrations applied"
    assert results["schemas"].detail.endswith("match published.json, versions compatible")


def test_a_stopped_worker_fails_the_worker_check_with_its_hint(env: dict[str, str]) -> None:
    probes = fed(env)
    probes.replies["http://127.0.0.1:16066/ready/"] = ProbeError("no answer: ConnectError")
    probes.groups[INTAKE] = GroupView(INTAKE, "Empty", 0, {})
    results = run(probes, env)
    assert failed(results) == {"worker"}
    assert "no member (state Empty)" in results["worker"].detail
    assert (
        results["worker"]
        .line()
        .endswith(
            "fix: start the worker (`govledger worker`); a stall clears with a worker restart"
        )
    )


def test_a_commit_stall_fails_the_worker_check(env: dict[str, str]) -> None:
    probes = fed(env)
    stalled = PartitionOffsets(3, 40, oldest_uncommitted_ms=NOW_MS - 600_000)
    probes.groups[INTAKE] = GroupView(INTAKE, "Stable", 1, {"govledger.control[1]": stalled})
    results = run(probes, env)
    assert failed(results) == {"worker"}
    assert "commits stalled on 1 partition(s), govledger.control[1]" in results["worker"].detail


def test_a_stopped_sink_fails_the_store_and_query_api_checks(env: dict[str, str]) -> None:
    probes = fed(env)
    probes.applied = ProbeError(
        "cannot reach the query API at http://127.0.0.1:18124: ConnectError"
    )
    probes.replies["http://127.0.0.1:18124/ping"] = ProbeError("no answer: ConnectError")
    results = run(probes, env)
    assert failed(results) == {"store", "query-api"}
    assert "fix: start the sink" in results["store"].line()


def test_a_store_missing_a_migration_fails_naming_it(env: dict[str, str]) -> None:
    probes = fed(env)
    shipped = [number for number, _, _ in migrations()]
    probes.applied = shipped[:-1]
    results = run(probes, env)
    assert failed(results) == {"store"}
    assert results["store"].detail == f"migrations not applied: {shipped[-1]:03d}"


def test_a_stopped_broker_fails_the_broker_check_with_its_hint(env: dict[str, str]) -> None:
    probes = fed(env)
    probes.topic_views = UNREACHABLE
    results = run(probes, env)
    assert failed(results) == {"broker", "topics", "sink", "worker"}
    assert results["broker"].line() == (
        f"fail  broker      {UNREACHABLE}; fix: start the stack (`govledger up`)"
    )


def test_a_skewed_clock_fails_the_clock_check(env: dict[str, str]) -> None:
    probes = fed(env)
    probes.replies["http://127.0.0.1:18080/healthz"] = reply(skew_ms=30_000)
    results = run(probes, env)
    assert failed(results) == {"clock"}
    assert "gateway +" in results["clock"].detail


def test_secrets_readable_by_others_fail(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "admin.token").chmod(0o644)
    (tmp_path / "root.keys").chmod(0o640)
    results = run(fed(env), env)
    assert failed(results) == {"admin-token", "root-secret"}
    assert "chmod 600" in results["root-secret"].hint


def test_contradicting_settings_fail_the_settings_check(tmp_path: Path) -> None:
    env = environ(tmp_path, GOVLEDGER_SLA_GRACE_MS="90000", GOVLEDGER_SLA_RETENTION_MS="60000")
    settings = load(RuntimeSettings, env)
    resolve_admin_token(settings, create=True)
    authn.resolve_keyring(settings.data_path, "", create=True)
    results = run(fed(env), env)
    assert failed(results) == {"settings"}
    assert results["settings"].detail.startswith(
        "GOVLEDGER_SLA_GRACE_MS, GOVLEDGER_SLA_RETENTION_MS"
    )


def test_outside_the_embedded_stack_an_unreachable_worker_page_only_warns(tmp_path: Path) -> None:
    # compose: the worker's web page is on the worker's own loopback; the group decides.
    env = environ(tmp_path, GOVLEDGER_KAFKA_BOOTSTRAP="kafka:9092", GOVLEDGER_ADMIN_TOKEN="t" * 40)
    authn.resolve_keyring(tmp_path, "", create=True)
    probes = fed(env)
    probes.replies["http://127.0.0.1:16066/ready/"] = ProbeError("no answer: ConnectError")
    probes.groups[SINK] = NotAllowedError(
        "the broker refused this user: GroupAuthorizationFailedError"
    )
    results = run(probes, env)
    assert failed(results) == set()
    assert results["worker"].status is Status.WARN
    assert results["sink"].status is Status.WARN


def test_a_hanging_probe_costs_its_check_timeout_and_the_run_stays_bounded(
    env: dict[str, str],
) -> None:
    run(fed(env), env)  # the checks' imports (store, schemas) out of the timed runs
    probes = fed(env)
    probes.hang = {"http://127.0.0.1:18080/healthz"}
    quick = {**env, "GOVLEDGER_DOCTOR_CHECK_TIMEOUT_S": "0.5"}
    started = time.monotonic()
    results = run(probes, quick)
    assert time.monotonic() - started < 2.5
    assert failed(results) == {"gateway"}
    assert results["gateway"].detail == "no answer within 0.5 s"
    # The whole run's limit ends checks still waiting (here every Kafka one).
    probes.hang = {"kafka"}
    bounded = {**env, "GOVLEDGER_DOCTOR_CHECK_TIMEOUT_S": "5", "GOVLEDGER_DOCTOR_TIMEOUT_S": "0.5"}
    started = time.monotonic()
    results = run(probes, bounded)
    assert time.monotonic() - started < 2.5
    assert failed(results) == {"broker", "topics", "sink", "worker"}
    assert results["worker"].detail == "not done within the run's 0.5 s"
