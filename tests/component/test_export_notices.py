"""A scheduled export's finished run notified by the sink's hook (govledger/export_notices.py)
to a real webhook receiver on loopback, through the real sender (allow-list, no redirects):
one signed CloudEvent with the run's outcome per route of its tenant (and org routes),
nothing to another tenant's; a failing receiver retried; a refused destination recorded and
the schedules going on; a slow receiver never holding the schedules. Every attempt is stored
as the writer stores the notifier's: sealed into a chain of the sink's, authenticated as
role sink."""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from govledger.export_notices import BUSY, ExportRunNotices
from schemas import authn, codec
from schemas.authn import Keyring
from schemas.notify_records import NotificationAttempted
from schemas.notify_secrets import seal_route
from schemas.webhook_destinations import AllowList
from schemas.webhook_sender import WebhookSender
from sinks.exports.job import ExportQueueFullError
from sinks.exports.jobs import ExportJobs
from sinks.exports.scheduler import ExportSchedules, ScheduleLimits, ScheduleOrder
from sinks.exports.schedules import ExportSchedule, ScheduleRun, run_outcome
from sinks.notification_rows import AttemptRows
from sinks.store_faults import Backoff
from streams.notify import logic
from streams.notify.logic import Route
from streams.notify.notifier import Delivering, RetryPolicy
from tests.unit import builders
from tests.unit.test_exports import T0, FakeStore, _rows

KEYRING = Keyring([bytes(range(32))])
SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHM="
START_MS = T0 + 200_000  # after every row of _rows()
MINUTE_MS = 60_000
# The columns of migration 014 the sink inserts (raw and auth are added by the writer's rule).
NOTIFICATION_COLUMNS = [
    *(f["name"] for f in codec.schema_for(NotificationAttempted).source["fields"]),
    "raw",
    "ingested_at",
    "auth",
]


class Receiver:
    """A webhook receiver: answers the statuses given, then 200; holds while `gate` is shut."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        self.gate: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((request.path, dict(request.headers), await request.read()))
        if self.gate is not None:
            await self.gate.wait()
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


class RowStore:
    """The store's side of AttemptRows: keeps each insert; refuses the first `unwell` ones
    as an unwell store would (a connection error: waited out, not the record's fault)."""

    def __init__(self) -> None:
        self.inserts: list[tuple[str, list[str], bytes, str]] = []
        self.unwell = 0

    async def run(self, function: Any, *args: Any) -> Any:
        return function(*args)

    def table_columns(self, table: str) -> list[str]:
        assert table == "notifications"
        return NOTIFICATION_COLUMNS

    def insert_avro(self, table: str, columns: list[str], data: bytes, token: str) -> None:
        if self.unwell:
            self.unwell -= 1
            raise ConnectionRefusedError("store away")
        self.inserts.append((table, columns, data, token))

    def rows(self) -> list[dict[str, Any]]:
        """Each stored row as ClickHouse would read it from the Avro file."""
        found: list[dict[str, Any]] = []
        for _, _, data, _ in self.inserts:
            found.extend(dict(row) for row in fastavro.reader(io.BytesIO(data)))  # type: ignore[arg-type]
        return found


class Sink:
    """The hook as the sink wires it, over the receiver and a row store."""

    def __init__(self, server: TestServer, receiver: Receiver, max_deliveries: int = 10) -> None:
        self.server = server
        self.receiver = receiver
        self.store = RowStore()
        self.routes: dict[str, Route] = {}
        self.sleeps: list[float] = []
        sender = WebhookSender(AllowList.parse("http://127.0.0.1", "127.0.0.1"), timeout_s=5)
        how = Delivering(
            KEYRING,
            sender,
            AllowList.parse("http://127.0.0.1", "127.0.0.1"),
            RetryPolicy(max_attempts=4, backoff_s=0.5, backoff_max_s=2.0),
        )
        rows = AttemptRows(self.store, "sink-test", 100, Backoff(1, 2), keyring=KEYRING)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        self.notices = ExportRunNotices(
            self._routes, how, rows, max_deliveries, sleep=sleep, close=sender.close
        )

    def _routes(self) -> Any:
        return self.routes.values()

    def add_route(self, tenant: str, path: str, url: str | None = None) -> Route:
        route_id = f"route-{tenant or 'org'}-{path}"
        where = url or f"http://127.0.0.1:{self.server.port}/{path}"
        added = builders.notify_route_added(
            tenant_id=tenant,
            route_id=route_id,
            events=("export.completed",),
            url="http://127.0.0.1/…",
            occurred_at=T0,
            secret_sealed=seal_route(KEYRING, tenant, route_id, where, SECRET),
        )
        self.routes = logic.evolve(self.routes, added)
        return self.routes[route_id]

    def attempts(self) -> list[NotificationAttempted]:
        """The stored attempts, each authenticated as role sink, in chain order."""
        verifier = authn.Verifier(KEYRING)
        found = []
        for row in self.store.rows():
            assert verifier.check(None, row["raw"], row["auth"]) == "sink"
            found.append(codec.decode_as(row["raw"], NotificationAttempted))
        assert [a.seq for a in found] == list(range(1, len(found) + 1))
        for earlier, later in itertools.pairwise(found):
            assert later.prev_hash == earlier.record_hash
        return found


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/{path}", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    made = Sink(server, receiver)
    await made.notices.start()
    yield made
    if receiver.gate is not None:
        receiver.gate.set()
    await made.notices.stop()
    await server.close()


@pytest.fixture
async def jobs(tmp_path: Path) -> AsyncIterator[ExportJobs]:
    exports = ExportJobs(FakeStore(_rows()), tmp_path)  # type: ignore[arg-type]
    await exports.start()
    yield exports
    await exports.stop()


def _order(tenant: str | None) -> ScheduleOrder:
    return ScheduleOrder("events", "jsonl", "1d", "weekly <!channel>", tenant, "1m", None)


def _finished_run(
    tenant: str = "acme", status: str = "failed"
) -> tuple[ExportSchedule, ScheduleRun]:
    schedule = ExportSchedule(
        id="0190d4f0-0000-7000-8000-0000000000e1",
        tenant=tenant,
        type="events",
        format="csv",
        since="7d",
        description="weekly",
        created_by="ops",
        created_at_ms=T0,
        every="7d",
        cron=None,
        next_run_ms=T0 + 2 * 7 * 86_400_000,
    )
    run = ScheduleRun(
        slot_ms=T0 + 7 * 86_400_000,
        missed=0,
        submitted_at_ms=T0 + 7 * 86_400_000,
        status=status,  # type: ignore[arg-type]
        finished_at_ms=T0 + 7 * 86_400_000 + 5,
        error="the export queue is full",
    )
    return schedule, run


async def test_a_finished_run_is_one_signed_cloudevent_with_its_outcome_to_its_tenant_only(
    sink: Sink, jobs: ExportJobs, tmp_path: Path
) -> None:
    sink.add_route("acme", "acme")
    sink.add_route("globex", "globex")
    sink.add_route("", "org")
    now = [START_MS]
    schedules = ExportSchedules(
        jobs, tmp_path / "schedules", ScheduleLimits(), clock=lambda: now[0],
        on_run_finished=sink.notices,
    )  # fmt: skip
    schedule = schedules.create(_order("acme"), created_by="key:ops")
    now[0] += MINUTE_MS
    for _ in range(2_000):
        await schedules.tick()
        if schedule.last_run is not None and schedule.last_run.status == "succeeded":
            break
        await asyncio.sleep(0.002)
    (run,) = schedule.runs
    assert run.status == "succeeded"
    await sink.notices.settled()

    got = sorted(sink.receiver.got)
    assert [path for path, _, _ in got] == ["/acme", "/org"]  # globex's route: nothing
    event_id = logic.export_run_event_id(schedule.id, run.slot_ms)
    for _, headers, body in got:
        assert logic.verify(SECRET, headers, body, int(time.time()))
        assert headers["webhook-id"] == headers["Idempotency-Key"] == event_id
        assert headers["Content-Type"] == "application/cloudevents+json"
        event = orjson.loads(body)
        assert (event["id"], event["type"]) == (event_id, "dev.govledger.export.completed")
        assert (event["source"], event["subject"]) == (
            "/govledger/tenants/acme",
            "export.completed",
        )
        data = event["data"]
        summary = data.pop("summary")
        assert data == {**run_outcome(schedule, run), "action": "trigger", "dedup_key": event_id}
        assert data["rows"] == 75 and data["status"] == "succeeded"
        assert "succeeded" in summary and "<!channel>" not in summary  # the creator's text
    stored = sink.attempts()
    assert sorted((a.route_id, a.status, a.attempt) for a in stored) == [
        ("route-acme-acme", "delivered", 1),
        ("route-org-org", "delivered", 1),
    ]
    assert {(a.tenant_id, a.source_event_id, a.source_event_type) for a in stored} == {
        ("acme", event_id, "export.completed")
    }
    assert {a.destination_host for a in stored} == {"127.0.0.1"}
    assert {token for *_, token in sink.store.inserts} == {a.event_id for a in stored}


async def test_a_failing_receiver_is_retried_and_every_attempt_is_stored(sink: Sink) -> None:
    sink.add_route("acme", "acme")
    sink.receiver.statuses = [503, 500]
    sink.store.unwell = 2  # the store is away for a while too: waited out, no chain gap
    schedule, run = _finished_run()
    await sink.notices(schedule, run)
    await sink.notices.settled()
    assert len(sink.receiver.got) == 3
    assert {h["webhook-id"] for _, h, _ in sink.receiver.got} == {
        logic.export_run_event_id(schedule.id, run.slot_ms)
    }
    assert sink.sleeps == [0.5, 1.0]
    stored = sink.attempts()
    assert [(a.attempt, a.status, a.http_status) for a in stored] == [
        (1, "failed", 503),
        (2, "failed", 500),
        (3, "delivered", 200),
    ]
    event = orjson.loads(sink.receiver.got[-1][2])
    assert event["data"]["status"] == "failed" and "queue is full" in event["data"]["summary"]


async def test_a_refused_destination_is_recorded_and_the_schedules_go_on(
    sink: Sink, tmp_path: Path
) -> None:
    sink.add_route("acme", "elsewhere", url="https://hooks.elsewhere.example/h")

    class FullJobs:
        def submit(self, **_: Any) -> Any:
            raise ExportQueueFullError("the export queue is full")

    now = [START_MS]
    schedules = ExportSchedules(
        FullJobs(), tmp_path / "schedules", ScheduleLimits(), clock=lambda: now[0],  # type: ignore[arg-type]
        on_run_finished=sink.notices,
    )  # fmt: skip
    schedule = schedules.create(_order("acme"), created_by="ops")
    for _ in range(2):
        now[0] += MINUTE_MS
        await schedules.tick()
    await sink.notices.settled()
    assert [r.status for r in schedule.runs] == ["failed", "failed"]
    assert sink.receiver.got == []
    stored = sink.attempts()
    assert [(a.status, a.attempt, a.http_status) for a in stored] == [("refused", 1, 0)] * 2
    assert all("not in GOVLEDGER_NOTIFY_ALLOWED_HOSTS" in a.error for a in stored)
    assert len({a.source_event_id for a in stored}) == 2  # one notice per run


async def test_a_slow_receiver_never_holds_the_schedules_and_deliveries_are_bounded(
    sink: Sink,
) -> None:
    slow = Sink(sink.server, sink.receiver, max_deliveries=1)
    await slow.notices.start()
    slow.add_route("acme", "acme")
    sink.receiver.gate = asyncio.Event()  # the receiver answers nothing for now
    first, run = _finished_run()
    started = time.monotonic()
    await slow.notices(first, run)
    await slow.notices(first, replace(run, slot_ms=run.slot_ms + 1))  # one more than allowed
    assert time.monotonic() - started < 0.5
    sink.receiver.gate.set()
    await slow.notices.settled()
    stored = slow.attempts()
    assert sorted((a.status, a.error) for a in stored) == [("delivered", ""), ("refused", BUSY)]
    await slow.notices.stop()
