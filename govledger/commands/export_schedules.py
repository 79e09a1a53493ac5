"""`govledger export schedule | schedules | unschedule`: exports the sink runs on a schedule
(`--every 1d` or `--cron '0 6 * * 1'`, UTC), through its query API
(`/v1/exports/schedules`, see `sinks/export_schedules_api.py`). Each run is an ordinary
export: `export download ID` fetches and verifies it. `export schedules` lists the
schedules with their last and next run; `export schedules ID` lists that schedule's runs
with their outcome. The HTTP helpers are `export`'s, handed in by `add_schedule_parsers`
(this module imports nothing of it: the command group registers us)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from sinks.exports.formats import EXTENSIONS

if TYPE_CHECKING:
    import httpx

SCHEDULES_PATH = "/v1/exports/schedules"


@dataclass(frozen=True, slots=True)
class QueryApi:
    """How `export` talks to the query API: a client, a checked call, the exit code of an
    unreachable API, and how a time is printed."""

    client: Callable[[], httpx.Client]
    call: Callable[..., Any]
    guarded: Callable[[Callable[[], int]], int]
    when: Callable[[int | None], str]


def _cadence(schedule: dict[str, Any]) -> str:
    if schedule.get("every"):
        return f"every {schedule['every']}"
    return f"cron {schedule['cron']}"


def _last_run(api: QueryApi, run: dict[str, Any] | None) -> str:
    if run is None:
        return "-"
    return f"{run['status']} {api.when(run['submitted_at_ms'])} {run['job_id'] or ''}".rstrip()


def _schedule(api: QueryApi, args: argparse.Namespace) -> int:
    def run() -> int:
        body: dict[str, Any] = {
            "type": args.type,
            "format": args.format,
            "since": args.since,
            "description": args.description,
        }
        body["every" if args.every else "cron"] = args.every or args.cron
        if args.tenant:
            body["tenant"] = args.tenant
        with api.client() as client:
            schedule = api.call(client, "POST", SCHEDULES_PATH, json=body)
        next_run = api.when(schedule["next_run_ms"])
        sys.stdout.write(f"{schedule['id']}\t{_cadence(schedule)}\tnext run {next_run}\n")
        return 0

    return api.guarded(run)


def _list(api: QueryApi, args: argparse.Namespace) -> int:
    def run() -> int:
        with api.client() as client:
            if args.schedule_id:
                shown = api.call(client, "GET", f"{SCHEDULES_PATH}/{args.schedule_id}")
            else:
                shown = api.call(client, "GET", SCHEDULES_PATH)
        if args.json:
            sys.stdout.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode() + "\n")
        elif args.schedule_id:
            sys.stdout.write("slot\tstatus\texport\tstarted\tfinished\trows\tsha256\tmissed\n")
            for done in shown["runs"]:
                sys.stdout.write(
                    f"{api.when(done['slot_ms'])}\t{done['status']}\t{done['job_id'] or '-'}\t"
                    f"{api.when(done['started_at_ms'])}\t{api.when(done['finished_at_ms'])}\t"
                    f"{'-' if done['rows'] is None else done['rows']}\t"
                    f"{done['manifest_sha256'] or done['error'] or '-'}\t{done['missed']}\n"
                )
        else:
            sys.stdout.write(
                "id\ttenant\twhen\ttype\tformat\tsince\tlast run\tnext run\tdescription\n"
            )
            for schedule in shown["schedules"]:
                sys.stdout.write(
                    f"{schedule['id']}\t{schedule['tenant'] or '*'}\t{_cadence(schedule)}\t"
                    f"{schedule['type']}\t{schedule['format']}\t{schedule['since']}\t"
                    f"{_last_run(api, schedule['last_run'])}\t"
                    f"{api.when(schedule['next_run_ms'])}\t{schedule['description']}\n"
                )
        return 0

    return api.guarded(run)


def _unschedule(api: QueryApi, args: argparse.Namespace) -> int:
    def run() -> int:
        with api.client() as client:
            removed = api.call(client, "DELETE", f"{SCHEDULES_PATH}/{args.schedule_id}")
        sys.stdout.write(f"removed schedule {removed['id']} ({_cadence(removed)})\n")
        return 0

    return api.guarded(run)


def add_schedule_parsers(export_commands: Any, api: QueryApi) -> None:
    """`export schedule`, `export schedules` and `export unschedule`."""
    schedule = export_commands.add_parser(
        "schedule", help="have the sink run an export on a schedule (UTC)"
    )
    when = schedule.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", help="interval such as 1d, 12h, 30m (first run one later)")
    when.add_argument("--cron", help="5-field cron expression in UTC, e.g. '0 6 * * 1'")
    schedule.add_argument("--type", required=True, help="what to export, as `export create --type`")
    schedule.add_argument("--format", default="csv", choices=sorted(EXTENSIONS))
    schedule.add_argument("--since", default="30d", help="each run's window back from its start")
    schedule.add_argument("--description", default="", help="why (kept in each manifest)")
    schedule.add_argument("--tenant", help="only this tenant (default: every tenant)")
    schedule.set_defaults(func=lambda args: _schedule(api, args))
    listing = export_commands.add_parser(
        "schedules", help="schedules with their last and next run; with an ID, its runs"
    )
    listing.add_argument("schedule_id", nargs="?", help="list this schedule's runs")
    listing.add_argument("--json", action="store_true", help="print the API's JSON")
    listing.set_defaults(func=lambda args: _list(api, args))
    remove = export_commands.add_parser("unschedule", help="remove a schedule (its exports stay)")
    remove.add_argument("schedule_id")
    remove.set_defaults(func=lambda args: _unschedule(api, args))
