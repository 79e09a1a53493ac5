"""The export schedule routes of the query API (`sinks/exports/scheduler.py` runs them):

- `POST /v1/exports/schedules` {every | cron, type, format, since, description, tenant?}
  → 201 and the schedule;
- `GET /v1/exports/schedules` the schedules the reader may see, each with its last run
  and its next run;
- `GET /v1/exports/schedules/{id}` one schedule with its kept runs, newest first;
- `DELETE /v1/exports/schedules/{id}` → the removed schedule (its exports stay).

What is exported is checked by the export routes' own rule (`ExportRoutes.order`), and the
readers are theirs: the org level schedules any tenant or every tenant; a tenant admin only
its own tenant, and another tenant's schedule answers 404, as one that never existed. A
malformed id answers 400 `invalid_schedule_id`; bad cron text, durations and descriptions
400 with their own codes (docs/exports.md lists them)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sinks.access import Reader
from sinks.exports.job import JOB_ID
from sinks.exports.scheduler import ExportSchedules, ScheduleOrder
from sinks.exports.schedules import (
    ExportSchedule,
    ScheduleInputError,
    parse_cron,
    parse_every,
)
from sinks.exports_api import FIELDS as EXPORT_FIELDS
from sinks.exports_api import ExportRoutes
from sinks.http_layer import BadRequestError, Guard, json_response

FIELDS = EXPORT_FIELDS | {"every", "cron"}
MAX_ID_CHARS = 64


def _printable(description: str) -> bool:
    """No control characters: a description is shown in terminals and tab-separated lists
    (an escape sequence or a newline there would forge lines)."""
    return all(ch.isprintable() for ch in description)


def _cadence(body: dict[str, Any]) -> tuple[str | None, str | None]:
    every, cron = body.get("every"), body.get("cron")
    if (every is None) == (cron is None):
        raise BadRequestError(400, "invalid_schedule", "give exactly one of every or cron")
    try:
        if every is not None:
            if not isinstance(every, str):
                raise ScheduleInputError("invalid_every", "every must be a string like 1d")
            parse_every(every)
            return every, None
        if not isinstance(cron, str):
            raise ScheduleInputError("invalid_cron", "cron must be a string like '0 6 * * 1'")
        return None, parse_cron(cron)
    except ScheduleInputError as exc:
        raise BadRequestError(400, exc.code, exc.message) from None


class ScheduleRoutes:
    """Handlers over an `ExportSchedules`."""

    def __init__(self, schedules: ExportSchedules) -> None:
        self.schedules = schedules

    def routes(self, guard: Guard) -> list[web.RouteDef]:
        """The routes, each behind the query API's guard (added before the export routes:
        `/v1/exports/{id}` would otherwise take `schedules` for an export id)."""
        return [
            web.post("/v1/exports/schedules", guard(self.create)),
            web.get("/v1/exports/schedules", guard(self.listing)),
            web.get("/v1/exports/schedules/{id}", guard(self.show)),
            web.delete("/v1/exports/schedules/{id}", guard(self.remove)),
        ]

    async def create(self, request: web.Request, reader: Reader) -> web.StreamResponse:
        """Add a schedule for the reader's tenant (or, for the org level, for `tenant` or
        for every tenant)."""
        body = await ExportRoutes.json_object(request, FIELDS)
        every, cron = _cadence(body)
        order = ExportRoutes.order(body, reader)
        if not _printable(order.description):
            raise BadRequestError(
                400, "invalid_description", "description must not hold control characters"
            )
        try:
            schedule = self.schedules.create(
                ScheduleOrder(
                    type_name=order.type_name,
                    fmt=order.fmt,
                    since=order.since,
                    description=order.description,
                    tenant=order.tenant,
                    every=every,
                    cron=cron,
                ),
                created_by=reader.identity,
            )
        except ScheduleInputError as exc:
            status = 429 if exc.code == "too_many_schedules" else 400
            raise BadRequestError(status, exc.code, exc.message) from None
        return json_response(schedule.public(with_runs=False), status=201)

    async def listing(self, request: web.Request, reader: Reader) -> web.StreamResponse:
        """The schedules the reader may see, oldest first, with their last and next runs."""
        shown = [s.public(with_runs=False) for s in self.schedules.visible(reader)]
        return json_response({"schedules": shown})

    def _id(self, request: web.Request) -> str:
        schedule_id = request.match_info["id"]
        if len(schedule_id) > MAX_ID_CHARS or not JOB_ID.fullmatch(schedule_id):
            raise BadRequestError(
                400, "invalid_schedule_id", "a schedule id is a UUID as `export schedules` lists"
            )
        return schedule_id

    @staticmethod
    def _found(schedule: ExportSchedule | None, schedule_id: str) -> ExportSchedule:
        if schedule is None:
            raise BadRequestError(404, "schedule_not_found", f"no export schedule {schedule_id}")
        return schedule

    async def show(self, request: web.Request, reader: Reader) -> web.StreamResponse:
        """One schedule with its kept runs, newest first."""
        schedule_id = self._id(request)
        schedule = self._found(self.schedules.get(schedule_id, reader), schedule_id)
        return json_response(schedule.public(with_runs=True))

    async def remove(self, request: web.Request, reader: Reader) -> web.StreamResponse:
        """Delete a schedule; the exports it made stay."""
        schedule_id = self._id(request)
        schedule = self._found(self.schedules.remove(schedule_id, reader), schedule_id)
        return json_response(schedule.public(with_runs=False))
