"""The export schedules of the sink: kept as one JSON file each under `<exports>/schedules/`
(atomic writes, as the jobs keep theirs), looked at every `tick_s`, and each run submitted
to the export jobs (`ExportJobs.submit`), so a scheduled export has the same pages,
manifest, SHA-256 and chain heads as one asked for by hand.

Why files in the exports dir and not control events: the exports dir is the sink's, the
process that owns the store and serves the query API through which schedules are made; a
schedule is the sink's own work list, like the export jobs next to it. Control events are
the org's admin log, written by registered producers and signed per record; the sink
publishes none, and the gateways and processors have no use for schedules.

A run missed while the sink was down runs once when it starts (`schedules.due`), with the
count of the slots it stands for. A run whose previous run is still queued or running is
recorded as skipped rather than piled behind it. When a run's job finishes, the runner
calls `on_run_finished(schedule, run)` (the hook for notifications; failures there are
logged and never stop the schedules)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog

from schemas.durations import parse_duration_ms
from schemas.ids import now_ms, uuid7
from sinks.access import Reader
from sinks.exports.formats import FORMATS
from sinks.exports.job import JOB_ID, MAX_DESCRIPTION_CHARS, ExportQueueFullError
from sinks.exports.jobs import MAX_ERROR_CHARS, ExportJobs
from sinks.exports.manifest import write_json
from sinks.exports.queries import EXPORT_TYPES
from sinks.exports.schedules import (
    RUN_FINISHED,
    ExportSchedule,
    ScheduleInputError,
    ScheduleRun,
    due,
)

log = structlog.get_logger(__name__)

# Reads every job, whichever tenant: the runner follows the jobs it submitted.
_RUNNER = Reader(identity="export-scheduler", tenant_id=None)
HOOK_TIMEOUT_S = 10.0  # longest the run-finished hook may take before it is given up

# What the runner calls when a run's job has finished (or the run was skipped or failed to
# submit): the schedule (its tenant, description) and the run's outcome.
RunFinished = Callable[[ExportSchedule, ScheduleRun], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ScheduleLimits:
    """The limits of the schedules (settings GOVLEDGER_EXPORT_SCHEDULE_*)."""

    min_interval_s: float = 60.0
    max_per_tenant: int = 20
    runs_kept: int = 20
    tick_s: float = 1.0

    def __post_init__(self) -> None:
        assert self.min_interval_s > 0 and self.max_per_tenant > 0, self
        assert self.runs_kept > 0 and self.tick_s > 0, self

    @property
    def min_interval_ms(self) -> int:
        """The minimum interval in milliseconds."""
        return int(self.min_interval_s * 1000)


@dataclass(frozen=True, slots=True)
class ScheduleOrder:
    """What a new schedule asks for, validated by the route."""

    type_name: str
    fmt: str
    since: str
    description: str
    tenant: str | None
    every: str | None
    cron: str | None


class ExportSchedules:
    """The schedules: kept under `root`, run through `jobs`."""

    def __init__(
        self,
        jobs: ExportJobs,
        root: Path,
        limits: ScheduleLimits | None = None,
        *,
        clock: Callable[[], int] = now_ms,
        on_run_finished: RunFinished | None = None,
    ) -> None:
        self.jobs = jobs
        self.root = root
        self.limits = limits or ScheduleLimits()
        self.clock = clock
        self.on_run_finished = on_run_finished
        self._schedules: dict[str, ExportSchedule] = {}
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ---

    async def start(self) -> None:
        """Reload the schedules kept on disk and start looking at them (start the jobs
        first: the runs follow their jobs)."""
        for schedule in await asyncio.to_thread(self._load):
            self._schedules.setdefault(schedule.id, schedule)
        self._task = asyncio.create_task(self._loop(), name="export-schedules")

    async def stop(self) -> None:
        """Stop looking; the schedules stay on disk."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _load(self) -> list[ExportSchedule]:
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob("*.json")):
            if not JOB_ID.fullmatch(path.stem):
                continue
            try:
                schedule = ExportSchedule.from_record(orjson.loads(path.read_bytes()))
                if schedule.id != path.stem:
                    raise ValueError("the file's name is not the schedule's id")
                if schedule.type not in EXPORT_TYPES or schedule.format not in FORMATS:
                    raise ValueError("an export type or format this sink does not know")
                if len(schedule.description) > MAX_DESCRIPTION_CHARS:
                    raise ValueError("description too long")
                parse_duration_ms(schedule.since)
            except (OSError, TypeError, ValueError):
                log.warning("export schedule not readable; skipped", path=str(path))
                continue
            found.append(schedule)
        return found

    def _save(self, schedule: ExportSchedule) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.root / f"{schedule.id}.json", schedule.record())

    # --- the API's side ---

    def create(self, order: ScheduleOrder, created_by: str) -> ExportSchedule:
        """Add a schedule (ScheduleInputError if too frequent or one too many)."""
        now = self.clock()
        schedule = ExportSchedule(
            id=uuid7(),
            tenant=order.tenant,
            type=order.type_name,
            format=order.fmt,
            since=order.since,
            description=order.description,
            created_by=created_by,
            created_at_ms=now,
            every=order.every,
            cron=order.cron,
            next_run_ms=0,
        )
        cadence = schedule.cadence()
        if cadence.shortest_gap_ms() < self.limits.min_interval_ms:
            raise ScheduleInputError(
                "schedule_too_frequent",
                f"runs must be at least {self.limits.min_interval_s:g} s apart",
            )
        parse_duration_ms(order.since)  # the route checked it; a bad one is a bug
        mine = [s for s in self._schedules.values() if s.tenant == order.tenant]
        if len(mine) >= self.limits.max_per_tenant:
            raise ScheduleInputError(
                "too_many_schedules",
                f"{order.tenant or 'the org'} has {len(mine)} schedules, the most allowed",
            )
        schedule.next_run_ms = cadence.next_after(now)
        self._save(schedule)
        self._schedules[schedule.id] = schedule
        return schedule

    def visible(self, reader: Reader) -> list[ExportSchedule]:
        """Schedules the reader may see, oldest first: all for the org level, else those of
        the reader's tenant."""
        return sorted(
            (s for s in self._schedules.values() if self._may_see(reader, s)),
            key=lambda s: (s.created_at_ms, s.id),  # the same order after a restart
        )

    def get(self, schedule_id: str, reader: Reader) -> ExportSchedule | None:
        """A schedule the reader may see, else None (another tenant's does not exist)."""
        schedule = self._schedules.get(schedule_id)
        return schedule if schedule is not None and self._may_see(reader, schedule) else None

    def remove(self, schedule_id: str, reader: Reader) -> ExportSchedule | None:
        """Delete a schedule the reader may see (its past exports stay); None if none."""
        schedule = self.get(schedule_id, reader)
        if schedule is None:
            return None
        del self._schedules[schedule_id]
        (self.root / f"{schedule_id}.json").unlink(missing_ok=True)
        return schedule

    @staticmethod
    def _may_see(reader: Reader, schedule: ExportSchedule) -> bool:
        return reader.tenant_id is None or schedule.tenant == reader.tenant_id

    # --- running ---

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a bug here must not end the schedules for good
                log.exception("export schedules tick failed")
            await asyncio.sleep(self.limits.tick_s)

    async def tick(self) -> None:
        """Follow the unfinished runs, then start each run that is due."""
        for schedule in list(self._schedules.values()):
            try:
                await self._tick_one(schedule)
            except Exception:  # one schedule's bug must not stop the others'
                log.exception("export schedule failed", schedule_id=schedule.id)

    async def _tick_one(self, schedule: ExportSchedule) -> None:
        finished = self._follow(schedule)
        run = self._run_if_due(schedule)
        if run is not None and run.status in RUN_FINISHED:
            finished.append(run)
        if (finished or run is not None) and schedule.id in self._schedules:
            await asyncio.to_thread(self._save, schedule)
            if schedule.id not in self._schedules:  # removed while it was being saved
                (self.root / f"{schedule.id}.json").unlink(missing_ok=True)
        for done in finished:
            await self._finished(schedule, done)

    def _follow(self, schedule: ExportSchedule) -> list[ScheduleRun]:
        """Copy the state of each unfinished run's job into the run; the runs that finished."""
        finished = []
        for run in schedule.runs:
            if run.status in RUN_FINISHED or run.job_id is None:
                continue
            job = self.jobs.get(run.job_id, _RUNNER)
            if job is None:
                run.status, run.error = "failed", "the export job is no longer kept"
                run.finished_at_ms = self.clock()
                finished.append(run)
                continue
            if (job.status, job.started_at_ms) == (run.status, run.started_at_ms):
                continue
            run.status, run.started_at_ms = job.status, job.started_at_ms
            run.finished_at_ms, run.error = job.finished_at_ms, job.error
            if job.status in RUN_FINISHED:
                run.rows = job.rows_done
                if job.manifest is not None:
                    run.manifest_sha256 = str(job.manifest["file"]["sha256"])
                finished.append(run)
        return finished

    def _run_if_due(self, schedule: ExportSchedule) -> ScheduleRun | None:
        now = self.clock()
        cadence = schedule.cadence()
        slot = due(cadence, schedule.next_run_ms, now, self.limits.min_interval_ms)
        if slot is None:
            return None
        schedule.next_run_ms = slot.next_run_ms
        run = ScheduleRun(slot.slot_ms, slot.missed, submitted_at_ms=now, status="queued")
        previous = schedule.last_run
        if previous is not None and previous.status not in RUN_FINISHED:
            run.status, run.finished_at_ms = "skipped", now
            run.error = f"the previous run (export {previous.job_id}) has not finished"
        else:
            try:
                job = self.jobs.submit(
                    type_name=schedule.type,
                    fmt=schedule.format,
                    since=schedule.since,
                    since_ms=now - parse_duration_ms(schedule.since),
                    until_ms=now,
                    tenant=schedule.tenant,
                    description=schedule.description,
                    created_by=f"{schedule.created_by} (schedule {schedule.id})",
                )
                run.job_id = job.id
            except ExportQueueFullError as exc:
                run.status, run.finished_at_ms = "failed", now
                run.error = str(exc)[:MAX_ERROR_CHARS]
        schedule.runs.append(run)
        schedule.runs_total += 1
        del schedule.runs[: -self.limits.runs_kept]
        log.info(
            "export schedule ran",
            schedule_id=schedule.id,
            export_id=run.job_id,
            status=run.status,
            missed=run.missed,
        )
        return run

    async def _finished(self, schedule: ExportSchedule, run: ScheduleRun) -> None:
        log.info(
            "export schedule run finished",
            schedule_id=schedule.id,
            export_id=run.job_id,
            status=run.status,
            rows=run.rows,
            sha256=run.manifest_sha256,
            error=run.error,
        )
        if self.on_run_finished is None:
            return
        try:
            await asyncio.wait_for(self.on_run_finished(schedule, run), HOOK_TIMEOUT_S)
        except Exception:  # a notifier's failure never stops the schedules
            log.exception("export schedule hook failed", schedule_id=schedule.id)
