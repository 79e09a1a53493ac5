"""`govledger doctor`: checks the running stack and its configuration, one line per check
(status, name, what was seen, and how to fix a failure), or `--json`; exit 0 when every
check passes (warnings pass), 1 when any fails. The checks are in `govledger.doctor`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

import orjson

from schemas.settings import (
    DoctorSettings,
    GatewaySettings,
    RuntimeSettings,
    SettingsError,
    SinkSettings,
    StreamSettings,
    load,
)

if TYPE_CHECKING:
    from govledger.doctor.checks import CheckResult


def _admin_token(settings: RuntimeSettings) -> str | None:
    from govledger.admin_token import resolve_admin_token

    try:
        return resolve_admin_token(settings, create=False)
    except (OSError, UnicodeDecodeError):
        return None


async def _doctor() -> list[CheckResult]:
    from govledger.doctor.probes import LiveProbes
    from govledger.doctor.run import Context, bootstrap_of, run_checks
    from schemas.kafka_security import KafkaSecurity

    runtime = load(RuntimeSettings)
    doctor = load(DoctorSettings)
    token = _admin_token(runtime)
    sink = load(SinkSettings)
    probes = LiveProbes(
        bootstrap_of(runtime),
        KafkaSecurity.of(runtime),
        sink.query_url,
        token,
        http_timeout_s=doctor.doctor_check_timeout_s,
    )
    ctx = Context(
        runtime=runtime,
        gateway=load(GatewaySettings),
        sink=sink,
        stream=load(StreamSettings),
        doctor=doctor,
        probes=probes,
        admin_token=token,
    )
    try:
        return await run_checks(ctx)
    finally:
        await probes.close()


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run every check; print one line each (or JSON); 1 if any failed."""
    from govledger.doctor.checks import CheckResult, Status, exit_code

    # A broker that is down is one `fail` line; aiokafka would add a log line per try.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        results = asyncio.run(_doctor())
    except SettingsError as exc:
        # Settings a service would refuse to start with: nothing else can be checked.
        hint = "fix the variable named (docs/configuration.md lists them all)"
        results = [CheckResult("settings", Status.FAIL, str(exc), hint)]
    code = exit_code(results)
    if args.json:
        document = {"ok": code == 0, "checks": [r.as_json() for r in results]}
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for result in results:
            sys.stdout.write(result.line() + "\n")
    return code


def add_parser(commands: Any) -> None:
    """`govledger doctor`."""
    doctor = commands.add_parser(
        "doctor", help="check the broker, store, services, clocks, secrets and settings"
    )
    doctor.add_argument("--json", action="store_true", help="print the results as JSON")
    doctor.set_defaults(func=cmd_doctor)
