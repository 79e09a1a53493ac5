"""Export schedules, the pure part: a cadence (`every` a duration, or a 5-field cron
expression read in UTC), validated as hostile input; the next run after a moment; and what
is due now, with the runs missed while nobody ran them collapsed into one. No clock, no
ids, no I/O: the runner (`sinks/exports/scheduler.py`) passes the time in.

Cron text is parsed here with an allow-list before croniter (a well-kept library, already
installed with faust-streaming) computes times from it: croniter also accepts seconds and
year fields, `L`, `W`, `#`, hashed `H` fields, `@daily` macros and month or day names, none
of which we need or want to reason about. What passes is the classic subset: exactly five
fields (minute, hour, day of month, month, day of week, 0 or 7 is Sunday) of `*`, numbers,
ranges `a-b`, steps `*/n` or `a-b/n`, and comma lists. As in every cron, when both the day
of month and the day of week are restricted, a day matching either fires. Times are UTC,
so there is no daylight-saving gap or repeat."""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from schemas.durations import parse_duration_ms

MAX_CRON_CHARS = 100
# Consecutive runs sampled when judging a cron expression's shortest interval. A cron's
# pattern within a day is the same on every day it fires, so its tightest pair shows early;
# the runner also never starts two runs closer than the minimum (`following_run_ms`).
GAP_SAMPLES = 100
# Missed cron slots counted (for the run's record) before the count stops: counting walks
# the slots one by one on the event loop, so it is bounded.
MAX_MISSED_COUNTED = 100
# (name, lowest, highest) of each cron field, in order.
CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_CRON_CHARS = re.compile(r"[0-9*/,\- ]+")
_CRON_ITEM = re.compile(r"(?:(\*)|([0-9]{1,2})(?:-([0-9]{1,2}))?)(?:/([0-9]{1,2}))?")


class ScheduleInputError(ValueError):
    """A schedule's input is refused: a stable error code and a message for the caller."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _check_cron_field(field: str, name: str, lowest: int, highest: int) -> None:
    for item in field.split(","):
        matched = _CRON_ITEM.fullmatch(item)
        if matched is None:
            raise ScheduleInputError("invalid_cron", f"cron {name} field: {item[:20]!r}")
        star, start, end, step = matched.groups()
        if start is not None:
            first, last = int(start), int(end if end is not None else start)
            if not lowest <= first <= last <= highest:
                raise ScheduleInputError(
                    "invalid_cron", f"cron {name} must be within {lowest}-{highest}: {item!r}"
                )
            if step is not None and end is None:
                raise ScheduleInputError(
                    "invalid_cron", f"cron {name}: a step needs * or a range: {item!r}"
                )
        if step is not None and not 0 < int(step) <= highest:
            raise ScheduleInputError(
                "invalid_cron", f"cron {name}: the step must be 1-{highest}: {item!r}"
            )
        assert star is not None or start is not None


def parse_cron(text: str) -> str:
    """The expression, its fields joined by single spaces; ScheduleInputError for anything
    outside the subset, or an expression that never fires (31 February)."""
    if len(text) > MAX_CRON_CHARS or _CRON_CHARS.fullmatch(text) is None:
        raise ScheduleInputError(
            "invalid_cron",
            f"cron must be at most {MAX_CRON_CHARS} characters of digits, spaces and * / , -",
        )
    fields = [part for part in text.split(" ") if part]
    if len(fields) != len(CRON_FIELDS):
        raise ScheduleInputError(
            "invalid_cron",
            "cron must have 5 fields: minute hour day-of-month month day-of-week",
        )
    for part, (name, lowest, highest) in zip(fields, CRON_FIELDS, strict=True):
        _check_cron_field(part, name, lowest, highest)
    expression = " ".join(fields)
    try:
        _cron_next(expression, 0)
    except CroniterBadDateError:
        raise ScheduleInputError("invalid_cron", f"cron {expression!r} never fires") from None
    except CroniterBadCronError as exc:  # the allow-list should leave none; fail closed
        raise ScheduleInputError("invalid_cron", f"cron {expression!r}: {exc}") from None
    return expression


def parse_every(text: str) -> int:
    """An `every` duration ('1d', '6h', '30s') in milliseconds (schemas.durations)."""
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        raise ScheduleInputError("invalid_every", str(exc)) from None


def _cron_next(expression: str, after_ms: int) -> int:
    start = datetime.fromtimestamp(after_ms / 1000, tz=UTC)
    following: datetime = croniter(expression, start).get_next(datetime)
    return int(following.timestamp()) * 1000


@dataclass(frozen=True, slots=True)
class Cadence:
    """When a schedule runs: every `every_ms` from `anchor_ms` (its creation; the first run
    is one interval after it), or at the times of a cron expression (UTC)."""

    anchor_ms: int
    every_ms: int | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        assert (self.every_ms is None) != (self.cron is None), self
        assert self.every_ms is None or self.every_ms > 0

    def next_after(self, after_ms: int) -> int:
        """The first run time strictly after `after_ms`."""
        if self.cron is not None:
            return _cron_next(self.cron, after_ms)
        assert self.every_ms is not None
        slots = max(0, (after_ms - self.anchor_ms) // self.every_ms) + 1
        return self.anchor_ms + slots * self.every_ms

    def shortest_gap_ms(self) -> int:
        """The shortest time between two runs (for cron, over the next GAP_SAMPLES runs
        from the anchor)."""
        if self.every_ms is not None:
            return self.every_ms
        assert self.cron is not None
        start = datetime.fromtimestamp(self.anchor_ms / 1000, tz=UTC)
        runs = croniter(self.cron, start)
        times = [runs.get_next(float) for _ in range(GAP_SAMPLES)]
        return int(min(later - earlier for earlier, later in itertools.pairwise(times)) * 1000)


@dataclass(frozen=True, slots=True)
class Due:
    """A run due now: the slot it is for, how many earlier slots passed unrun and are
    collapsed into it (a stack down for a week runs a daily export once, not seven times),
    and when the run after it is."""

    slot_ms: int
    missed: int
    next_run_ms: int


def following_run_ms(cadence: Cadence, slot_ms: int, now_ms: int, min_interval_ms: int) -> int:
    """The next run after one for `slot_ms` that runs at `now_ms`: the first slot after now,
    and never closer than `min_interval_ms` to the slot just run."""
    return cadence.next_after(max(now_ms, slot_ms + min_interval_ms - 1))


def due(cadence: Cadence, next_run_ms: int, now_ms: int, min_interval_ms: int) -> Due | None:
    """The run due at `now_ms`, if `next_run_ms` has come: ONE run however many slots have
    passed since, with the count of the others."""
    if next_run_ms > now_ms:
        return None
    latest = next_run_ms
    if cadence.every_ms is not None:
        missed = (now_ms - next_run_ms) // cadence.every_ms
        latest = next_run_ms + missed * cadence.every_ms
    else:
        missed = 0
        while missed < MAX_MISSED_COUNTED:
            following = cadence.next_after(latest)
            if following > now_ms:
                break
            latest, missed = following, missed + 1
    return Due(
        slot_ms=next_run_ms,
        missed=missed,
        next_run_ms=following_run_ms(cadence, latest, now_ms, min_interval_ms),
    )


# --- the records ------------------------------------------------------------------------

RunStatus = Literal["queued", "running", "succeeded", "failed", "skipped"]
RUN_FINISHED: tuple[RunStatus, ...] = ("succeeded", "failed", "skipped")


@dataclass(slots=True)
class ScheduleRun:
    """One run of a schedule: the slot it was for, the slots collapsed into it, the export
    job it submitted and, once that job is done, its outcome."""

    slot_ms: int
    missed: int
    submitted_at_ms: int
    status: RunStatus
    job_id: str | None = None
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    rows: int | None = None
    manifest_sha256: str | None = None
    error: str | None = None


@dataclass(slots=True)
class ExportSchedule:
    """A schedule: what to export (as `POST /v1/exports` asks), when, by whom; the next run
    and the last runs (at most the runner's `runs_kept`, oldest first)."""

    id: str
    tenant: str | None
    type: str
    format: str
    since: str
    description: str
    created_by: str
    created_at_ms: int
    every: str | None
    cron: str | None
    next_run_ms: int
    runs_total: int = 0
    runs: list[ScheduleRun] = field(default_factory=list)

    def cadence(self) -> Cadence:
        """When it runs (its text was validated when it was created)."""
        every_ms = parse_every(self.every) if self.every is not None else None
        return Cadence(anchor_ms=self.created_at_ms, every_ms=every_ms, cron=self.cron)

    def record(self) -> dict[str, Any]:
        """The schedule as kept on disk."""
        return asdict(self)

    @classmethod
    def from_record(cls, kept: dict[str, Any]) -> ExportSchedule:
        """A schedule read back (TypeError or ValueError if the record is not one)."""
        runs = [ScheduleRun(**run) for run in kept.get("runs", [])]
        schedule = cls(**{**kept, "runs": runs})
        if (schedule.every is None) == (schedule.cron is None):
            raise ValueError("a schedule has exactly one of every and cron")
        schedule.cadence()  # its every or cron still parses
        if schedule.cron is not None and parse_cron(schedule.cron) != schedule.cron:
            raise ValueError(f"cron {schedule.cron!r} is not normalized")
        return schedule

    @property
    def last_run(self) -> ScheduleRun | None:
        """The most recent run, if any."""
        return self.runs[-1] if self.runs else None

    def public(self, *, with_runs: bool) -> dict[str, Any]:
        """The schedule as the API shows it: the last run always, every kept run (newest
        first) on request."""
        shown = self.record()
        runs = shown.pop("runs")
        shown["last_run"] = runs[-1] if runs else None
        if with_runs:
            shown["runs"] = runs[::-1]
        return shown


def run_outcome(schedule: ExportSchedule, run: ScheduleRun) -> dict[str, Any]:
    """What a notification of a finished run says: the schedule (tenant, what, why) and the
    run's outcome (export id, status, times, rows, manifest SHA-256, error). Plain JSON
    values, no secret: the description is the creator's text, bounded and printable."""
    return {
        "schedule_id": schedule.id,
        "tenant": schedule.tenant,
        "type": schedule.type,
        "format": schedule.format,
        "description": schedule.description,
        "export_id": run.job_id,
        "status": run.status,
        "slot_ms": run.slot_ms,
        "missed": run.missed,
        "started_at_ms": run.started_at_ms,
        "finished_at_ms": run.finished_at_ms,
        "rows": run.rows,
        "manifest_sha256": run.manifest_sha256,
        "error": run.error,
        "download_url": f"/v1/exports/{run.job_id}/download" if run.status == "succeeded" else None,
    }
