"""The export schedules' runner over real export jobs and the fake store of test_exports:
a due run is an export job with its manifest; a run's outcome is followed into the
schedule; schedules survive a restart and a run missed while down runs once; a run whose
previous one has not finished is skipped; history, count and hook failures are bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from sinks.access import Reader
from sinks.exports.jobs import ExportJobs
from sinks.exports.scheduler import ExportSchedules, ScheduleLimits, ScheduleOrder
from sinks.exports.schedules import ExportSchedule, ScheduleInputError, ScheduleRun, run_outcome
from tests.unit.test_exports import T0, FakeStore, _rows

ORG = Reader("org", None)
MINUTE_MS = 60_000
START_MS = T0 + 200_000  # after every row of _rows()


class Clock:
    def __init__(self) -> None:
        self.now_ms = START_MS

    def __call__(self) -> int:
        return self.now_ms


def _order(tenant: str | None = "acme", **overrides: str | None) -> ScheduleOrder:
    fields: dict[str, str | None] = {
        "type_name": "events",
        "fmt": "jsonl",
        "since": "1d",
        "description": "minutely",
        "tenant": tenant,
        "every": "1m",
        "cron": None,
        **overrides,
    }
    return ScheduleOrder(**fields)  # type: ignore[arg-type]


def _status(run: ScheduleRun) -> str:
    """A run's status, read afresh (the runner changes it between awaits)."""
    return run.status


async def _settled(jobs: ExportJobs, schedules: ExportSchedules, schedule: ExportSchedule) -> None:
    """Tick until the schedule's last run has finished (the job runs meanwhile)."""
    for _ in range(2_000):
        await schedules.tick()
        last = schedule.last_run
        if last is not None and last.status in ("succeeded", "failed", "skipped"):
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"run still {schedule.last_run}")


@pytest.fixture
async def jobs(tmp_path: Path) -> AsyncIterator[ExportJobs]:
    exports = ExportJobs(FakeStore(_rows()), tmp_path)  # type: ignore[arg-type]
    await exports.start()
    yield exports
    await exports.stop()


async def test_a_due_run_is_an_export_with_its_manifest_and_outcome(
    jobs: ExportJobs, tmp_path: Path
) -> None:
    clock = Clock()
    finished: list[tuple[str, ScheduleRun]] = []

    async def hook(schedule: ExportSchedule, run: ScheduleRun) -> None:
        finished.append((schedule.id, run))

    schedules = ExportSchedules(
        jobs, tmp_path / "schedules", ScheduleLimits(), clock=clock, on_run_finished=hook
    )
    schedule = schedules.create(_order(), created_by="key:ops")
    assert schedule.next_run_ms == START_MS + MINUTE_MS
    await schedules.tick()
    assert schedule.runs == []

    clock.now_ms += MINUTE_MS
    await _settled(jobs, schedules, schedule)
    (run,) = schedule.runs
    assert run.status == "succeeded" and run.slot_ms == START_MS + MINUTE_MS and run.missed == 0
    job = jobs.get(run.job_id or "", ORG)
    assert job is not None and job.manifest is not None
    assert run.rows == job.manifest["rows"] == 75  # acme's rows, as the job tallied them
    assert run.manifest_sha256 == job.manifest["file"]["sha256"]
    assert (run.started_at_ms, run.finished_at_ms) == (job.started_at_ms, job.finished_at_ms)
    assert job.tenant == "acme" and job.description == "minutely"
    assert job.until_ms - job.since_ms == 86_400_000
    assert job.created_by == f"key:ops (schedule {schedule.id})"
    assert schedule.next_run_ms == START_MS + 2 * MINUTE_MS
    assert finished == [(schedule.id, run)]  # once, when it finished
    told = run_outcome(schedule, run)
    assert (told["export_id"], told["status"], told["rows"]) == (job.id, "succeeded", 75)
    assert told["manifest_sha256"] == run.manifest_sha256 and told["tenant"] == "acme"
    assert told["download_url"] == f"/v1/exports/{job.id}/download"
    await schedules.tick()
    assert len(finished) == 1
    kept = orjson.loads((tmp_path / "schedules" / f"{schedule.id}.json").read_bytes())
    assert kept["runs"][0]["manifest_sha256"] == run.manifest_sha256


async def test_a_run_missed_while_down_runs_once_at_start(jobs: ExportJobs, tmp_path: Path) -> None:
    clock = Clock()
    before = ExportSchedules(jobs, tmp_path / "schedules", clock=clock)
    schedule = before.create(_order(), created_by="ops")
    # Down for ten minutes and a half: the restarted runner runs it once, now.
    clock.now_ms += 10 * MINUTE_MS + 30_000
    after = ExportSchedules(jobs, tmp_path / "schedules", clock=clock)
    await after.start()
    try:
        reloaded = after.get(schedule.id, ORG)
        assert reloaded is not None and reloaded.runs == []
        await _settled(jobs, after, reloaded)
        for _ in range(3):
            await after.tick()
    finally:
        await after.stop()
    (run,) = reloaded.runs
    assert run.status == "succeeded"
    assert (run.slot_ms, run.missed) == (START_MS + MINUTE_MS, 9)
    assert reloaded.next_run_ms == START_MS + 11 * MINUTE_MS


async def test_a_run_is_skipped_while_the_previous_has_not_finished(
    tmp_path: Path,
) -> None:
    store = FakeStore(_rows())
    store.hold = asyncio.Event()  # the store answers nothing: the first job stays running
    jobs = ExportJobs(store, tmp_path)  # type: ignore[arg-type]
    await jobs.start()
    clock = Clock()
    schedules = ExportSchedules(jobs, tmp_path / "schedules", clock=clock)
    try:
        schedule = schedules.create(_order(), created_by="ops")
        clock.now_ms += MINUTE_MS
        await schedules.tick()
        clock.now_ms += MINUTE_MS
        await schedules.tick()
        first, second = schedule.runs
        assert first.status in ("queued", "running") and first.job_id is not None
        assert second.status == "skipped" and second.job_id is None
        assert first.job_id in (second.error or "")
        assert len(jobs.visible(ORG)) == 1
        store.hold.set()
        for _ in range(2_000):
            await schedules.tick()
            if _status(first) == "succeeded":
                break
            await asyncio.sleep(0.002)
        assert _status(first) == "succeeded" and first.rows == 75
    finally:
        store.hold.set()
        await jobs.stop()


async def test_history_and_schedules_per_tenant_are_bounded(
    jobs: ExportJobs, tmp_path: Path
) -> None:
    clock = Clock()
    limits = ScheduleLimits(max_per_tenant=2, runs_kept=3, min_interval_s=120)
    schedules = ExportSchedules(jobs, tmp_path / "schedules", limits, clock=clock)
    with pytest.raises(ScheduleInputError) as refused:
        schedules.create(_order(every="1m"), created_by="ops")
    assert refused.value.code == "schedule_too_frequent"
    with pytest.raises(ScheduleInputError) as refused:
        schedules.create(_order(every=None, cron="0,1 * * * *"), created_by="ops")
    assert refused.value.code == "schedule_too_frequent"
    schedule = schedules.create(_order(every="2m"), created_by="ops")
    schedules.create(_order(every=None, cron="0 6 * * *"), created_by="ops")
    with pytest.raises(ScheduleInputError) as refused:
        schedules.create(_order(every="1d"), created_by="ops")
    assert refused.value.code == "too_many_schedules"
    schedules.create(_order("globex", every="1d"), created_by="ops")  # another tenant's count
    schedules.create(_order(None, every="1d"), created_by="ops")  # the org-wide ones'
    for _ in range(5):
        clock.now_ms += 2 * MINUTE_MS
        await _settled(jobs, schedules, schedule)
    assert schedule.runs_total == 5
    assert [r.slot_ms for r in schedule.runs] == [START_MS + n * 2 * MINUTE_MS for n in (3, 4, 5)]


async def test_tenants_see_only_their_schedules_and_only_sound_ones_reload(
    jobs: ExportJobs, tmp_path: Path
) -> None:
    schedules = ExportSchedules(jobs, tmp_path / "schedules", clock=Clock())
    acme = schedules.create(_order("acme"), created_by="ops")
    globex = schedules.create(_order("globex"), created_by="ops")
    everyone = schedules.create(_order(None), created_by="ops")
    acme_admin = Reader("acme-admin", "acme")
    assert [s.id for s in schedules.visible(acme_admin)] == [acme.id]
    assert {s.id for s in schedules.visible(ORG)} == {acme.id, globex.id, everyone.id}
    assert schedules.get(globex.id, acme_admin) is None
    assert schedules.remove(globex.id, acme_admin) is None
    assert schedules.remove(acme.id, acme_admin) == acme
    (tmp_path / "schedules" / "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.json").write_text("{")
    (tmp_path / "schedules" / "notes.json").write_text("{}")
    unknown = {**globex.record(), "id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "type": "all"}
    (tmp_path / "schedules" / f"{unknown['id']}.json").write_bytes(orjson.dumps(unknown))
    again = ExportSchedules(jobs, tmp_path / "schedules", clock=Clock())
    await again.start()
    await again.stop()
    assert {s.id for s in again.visible(ORG)} == {globex.id, everyone.id}


async def test_a_failing_hook_does_not_stop_the_schedules(jobs: ExportJobs, tmp_path: Path) -> None:
    clock = Clock()
    calls = 0

    async def hook(schedule: ExportSchedule, run: ScheduleRun) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("the notifier is down")

    schedules = ExportSchedules(jobs, tmp_path / "schedules", clock=clock, on_run_finished=hook)
    schedule = schedules.create(_order(), created_by="ops")
    for _ in range(2):
        clock.now_ms += MINUTE_MS
        await _settled(jobs, schedules, schedule)
    assert calls == 2
    assert [r.status for r in schedule.runs] == ["succeeded", "succeeded"]
