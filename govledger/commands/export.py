"""`govledger export create | list | status | download`: exports run by the sink (see
`sinks/exports.py`), asked for and fetched through its query API with the admin token.
`create` waits for the job with a progress bar, downloads the file and its manifest, and
checks the file's SHA-256 against the manifest. Exit code 1 when the job failed or the
file does not match, 2 when the query API cannot be reached."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from govledger.cli_support import CliError, checked
from replay.progress import Bar
from schemas.settings import SinkSettings, load
from sinks.exports.formats import EXTENSIONS

if TYPE_CHECKING:
    import httpx

HTTP_TIMEOUT_S = 30.0
POLL_EVERY_S = 0.5
DEFAULT_WAIT_S = 3_600.0
DOWNLOAD_CHUNK_BYTES = 1024 * 1024


class ApiUnreachableError(Exception):
    """The query API did not answer (stack not running, no admin token)."""


def _client() -> httpx.Client:
    import httpx

    from govledger.admin_token import resolve_admin_token

    settings = load(SinkSettings)
    try:
        token = resolve_admin_token(settings, create=False)
    except FileNotFoundError as exc:
        raise ApiUnreachableError(str(exc)) from exc
    return httpx.Client(
        base_url=settings.query_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=HTTP_TIMEOUT_S,
    )


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    try:
        response = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise ApiUnreachableError(
            f"cannot reach the query API at {client.base_url}: {exc} (is the stack running?)"
        ) from exc
    return checked(response)


def _guarded(run: Callable[[], int]) -> int:
    try:
        return run()
    except ApiUnreachableError as exc:
        sys.stderr.write(f"govledger: {exc}\n")
        return 2


def _when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def wait_for_job(client: httpx.Client, job: dict[str, Any], wait_s: float) -> dict[str, Any]:
    """Poll a job until it finishes, drawing rows done against rows counted."""
    bar = Bar(f"export {job['id'][:13]}", total=job.get("rows_total"))
    deadline = time.monotonic() + wait_s
    try:
        while job["status"] not in ("succeeded", "failed"):
            if time.monotonic() > deadline:
                raise CliError(
                    f"export {job['id']} is still {job['status']} after {wait_s:g} s; "
                    f"see `govledger export status {job['id']}`"
                )
            time.sleep(POLL_EVERY_S)
            job = _call(client, "GET", f"/v1/exports/{job['id']}")
            bar.total = job.get("rows_total")
            bar.update(int(job.get("rows_done") or 0))
    finally:
        bar.close()
    return job


def download(client: httpx.Client, job_id: str, output: Path | None) -> int:
    """Fetch a finished export and its manifest; check the SHA-256; print a summary."""
    import httpx

    manifest = _call(client, "GET", f"/v1/exports/{job_id}/manifest")
    extension = EXTENSIONS.get(str(manifest.get("format")), "")
    target = output or Path(f"govledger-export-{job_id}{extension}")
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    size = 0
    bar = Bar("download", total=int(manifest["file"]["bytes"]))
    try:
        with client.stream("GET", f"/v1/exports/{job_id}/download") as response:
            if response.status_code >= 400:
                response.read()
                checked(response)
            with partial.open("wb") as out:
                for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    bar.update(size)
    except httpx.TransportError as exc:
        partial.unlink(missing_ok=True)
        raise ApiUnreachableError(f"download of export {job_id} broke off: {exc}") from exc
    finally:
        bar.close()
    os.replace(partial, target)
    manifest_path = target.with_name(target.stem + ".manifest.json")
    manifest_path.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    expected = str(manifest["file"]["sha256"])
    if digest.hexdigest() != expected or size != int(manifest["file"]["bytes"]):
        sys.stderr.write(
            f"govledger: {target} does not match its manifest: sha256 {digest.hexdigest()} "
            f"({size} bytes), manifest says {expected} ({manifest['file']['bytes']} bytes)\n"
        )
        return 1
    span = manifest["time_range"]
    sys.stdout.write(
        f"export {job_id}: {manifest['rows']:,} {manifest['type']} rows of "
        f"{manifest['tenant'] or 'every tenant'}, {_when(span['first_ms'])} .. "
        f"{_when(span['last_ms'])}\n"
        f"file {target} ({size:,} bytes), sha256 {expected} verified\n"
        f"manifest {manifest_path} ({len(manifest['chain_heads'])} chain heads)\n"
    )
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    """Ask for an export; unless --no-wait, wait for it and download it."""

    def run() -> int:
        body: dict[str, Any] = {
            "type": args.type,
            "format": args.format,
            "since": args.since,
            "description": args.description,
        }
        if args.tenant:
            body["tenant"] = args.tenant
        with _client() as client:
            job = _call(client, "POST", "/v1/exports", json=body)
            if args.no_wait:
                sys.stdout.write(job["id"] + "\n")
                return 0
            job = wait_for_job(client, job, args.wait_timeout)
            if job["status"] == "failed":
                sys.stderr.write(f"govledger: export {job['id']} failed: {job['error']}\n")
                return 1
            return download(client, job["id"], args.output)

    return _guarded(run)


def cmd_list(args: argparse.Namespace) -> int:
    """The exports, newest first, as tab-separated lines."""

    def run() -> int:
        with _client() as client:
            jobs = _call(client, "GET", "/v1/exports")["exports"]
        sys.stdout.write("id\tstatus\ttype\tformat\ttenant\trows\tcreated\tdescription\n")
        for job in jobs:
            rows = job["rows_done"] if job["status"] != "queued" else "-"
            sys.stdout.write(
                f"{job['id']}\t{job['status']}\t{job['type']}\t{job['format']}\t"
                f"{job['tenant'] or '*'}\t{rows}\t{_when(job['created_at_ms'])}\t"
                f"{job['description']}\n"
            )
        return 0

    return _guarded(run)


def cmd_status(args: argparse.Namespace) -> int:
    """One export as JSON (with its manifest once done); exit 1 if it failed."""

    def run() -> int:
        with _client() as client:
            job = _call(client, "GET", f"/v1/exports/{args.export_id}")
        sys.stdout.write(orjson.dumps(job, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 1 if job["status"] == "failed" else 0

    return _guarded(run)


def cmd_download(args: argparse.Namespace) -> int:
    """Download a finished export and its manifest, checking the SHA-256."""

    def run() -> int:
        with _client() as client:
            return download(client, args.export_id, args.output)

    return _guarded(run)


def add_parser(commands: Any) -> None:
    """`govledger export`."""
    export = commands.add_parser(
        "export",
        help="export events, escalations, wallets or FOCUS spend with a verifiable manifest",
    )
    export_commands = export.add_subparsers(dest="export_command", required=True)
    create = export_commands.add_parser(
        "create", help="run an export, wait for it, download it and check its SHA-256"
    )
    create.add_argument(
        "--type",
        required=True,
        choices=["events", "escalations", "wallets", "focus"],
        help="focus: spend as FinOps FOCUS 1.2 cost and usage rows (docs/exports.md)",
    )
    create.add_argument("--format", default="csv", choices=sorted(EXTENSIONS))
    create.add_argument("--since", default="30d", help="window such as 90d, 12h, 30m")
    create.add_argument("--description", default="", help="why (kept in the manifest)")
    create.add_argument("--tenant", help="only this tenant (default: every tenant)")
    create.add_argument(
        "--output", type=Path, help="file to write (default ./govledger-export-<id>.<ext>)"
    )
    create.add_argument("--no-wait", action="store_true", help="print the export id and exit")
    create.add_argument(
        "--wait-timeout", type=float, default=DEFAULT_WAIT_S, help="seconds to wait for the job"
    )
    create.set_defaults(func=cmd_create)
    export_commands.add_parser("list", help="exports, newest first").set_defaults(func=cmd_list)
    status = export_commands.add_parser("status", help="an export's state and manifest (JSON)")
    status.add_argument("export_id")
    status.set_defaults(func=cmd_status)
    fetch = export_commands.add_parser(
        "download", help="download a finished export and its manifest; check the SHA-256"
    )
    fetch.add_argument("export_id")
    fetch.add_argument("--output", type=Path, help="file to write")
    fetch.set_defaults(func=cmd_download)
