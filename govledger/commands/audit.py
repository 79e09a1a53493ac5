"""`govledger audit verify | verify-export` (and the audit group, whose `pubkey` is in
`root`, `reconcile` and `who` in `replay`).

`audit verify`: every producer's hash chain and checkpoints, read from the
store through the query API (the store owner holds the embedded engine), verified by
`replay.verify`; every typed column of every row against its raw (`replay.columns`);
and every record's authentication (`replay.forged`: records consumers refused as forged,
stored rows whose auth header does not verify, checkpoints whose signature fails), with
the org keyring. Exit code 1 when any chain or column shows tampering or any record is
forged."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from govledger.commands import replay as replay_group
from govledger.commands import root as root_group
from replay.settle import MAX_SETTLE_S, SETTLE_S
from schemas.settings import SinkSettings, load

if TYPE_CHECKING:  # imported by the commands that run: pyarrow, cryptography
    from replay.stored import Query
    from replay.verify import KnownHead

QUERY_TIMEOUT_S = 300.0
MAX_JOBS = 32
# One: on the 2-core machine the bench ran on, worker processes did not beat one
# (bench/replay.py --columns prints both); more cores may.
DEFAULT_JOBS = 1


class QueryError(Exception):
    """The query API refused or could not be reached."""


def query_api(url: str, token: str) -> Query:
    """Runs SQL through the query API, rows as JSON arrays."""
    import httpx

    client = httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=QUERY_TIMEOUT_S
    )

    def run(sql: str) -> list[list[Any]]:
        try:
            response = client.post("/", content=f"{sql} FORMAT JSONCompactEachRow".encode())
        except httpx.HTTPError as exc:
            raise QueryError(f"cannot reach the query API at {url}: {exc}") from exc
        if response.status_code >= 400:
            raise QueryError(f"query API answered {response.status_code}: {response.text[:500]}")
        return [orjson.loads(line) for line in response.content.splitlines() if line.strip()]

    return run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument(
        "--tenant",
        help="only chains carrying this tenant's records (checked whole), and only "
        "findings on its records or on missing records",
    )
    parser.add_argument(
        "--heads",
        action="append",
        default=[],
        metavar="MANIFEST",
        help="an export's manifest.json (repeatable): the store must still hold each chain "
        "head it lists, which also finds a chain re-sealed after the export",
    )
    parser.add_argument(
        "--org-keys",
        metavar="FILE",
        help="verify as an outside auditor, without the org root: the org public keys "
        "(`govledger audit pubkey` output) check every checkpoint's signature; record MACs "
        "need the root and are not checked",
    )
    parser.add_argument(
        "--jobs",
        type=_jobs,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"worker processes that decode raw for the column check (default "
        f"{DEFAULT_JOBS}, at most {MAX_JOBS})",
    )
    parser.add_argument(
        "--settle-s",
        type=_settle_s,
        default=SETTLE_S,
        metavar="S",
        help=f"a gap in a chain is a finding only if it is still there S seconds later: "
        f"records the sink has not stored yet fill theirs (default {SETTLE_S:g}; 0 on a "
        f"stopped stack, at most {MAX_SETTLE_S:g})",
    )


def _settle_s(text: str) -> float:
    seconds = float(text)
    if not 0 <= seconds <= MAX_SETTLE_S:
        raise argparse.ArgumentTypeError(f"between 0 and {MAX_SETTLE_S:g}")
    return seconds


def _jobs(text: str) -> int:
    jobs = int(text)
    if not 1 <= jobs <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_JOBS}")
    return jobs


def _known_heads(paths: list[str]) -> list[KnownHead]:
    from replay.verify import heads_of_manifest

    heads: list[KnownHead] = []
    for path in paths:
        try:
            manifest = orjson.loads(Path(path).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read a manifest: {exc}") from exc
        heads.extend(heads_of_manifest(manifest if isinstance(manifest, dict) else {}, path))
    return heads


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify the chains; one line per finding, then a summary. 1 if tampered."""
    from govledger.admin_token import resolve_admin_token
    from replay.columns import check_store
    from replay.forged import forged_findings, read_org_keys
    from replay.settle import settle_gaps
    from replay.sources import http_reader
    from replay.verify import KINDS, verify_store
    from schemas import authn

    settings = load(SinkSettings)
    try:
        heads = _known_heads(args.heads)
        org_keys = read_org_keys(Path(args.org_keys).read_text()) if args.org_keys else {}
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"govledger: {exc}\n")
        return 2
    try:
        token = resolve_admin_token(settings, create=False)
        verifier = None
        if not org_keys:
            keyring = authn.resolve_keyring(
                settings.data_path, settings.root_secret_file, create=False
            )
            verifier = authn.Verifier(keyring)
        query = query_api(settings.query_url, token)
        report = verify_store(
            query,
            tenant_id=args.tenant,
            heads=heads,
            settle=lambda first, walk: settle_gaps(first, walk, time.sleep, args.settle_s),
        )
        report.findings.extend(
            forged_findings(query, verifier, tenant_id=args.tenant, org_public_keys=org_keys)
        )
        # What users read: every typed column against the row's raw (replay.columns).
        columns = check_store(
            http_reader(settings.query_url, token), tenant_id=args.tenant, jobs=args.jobs
        )
    except (
        FileNotFoundError,
        QueryError,
        ConnectionError,
        RuntimeError,
        authn.KeyringError,
    ) as exc:
        sys.stderr.write(f"govledger: {exc}\n")
        return 2
    report.findings.extend(columns.findings)
    report.findings.sort(key=lambda f: (f.producer_id, f.seq, KINDS.index(f.kind)))
    for finding in report.findings:
        sys.stdout.write(finding.line() + "\n")
    summary = f"{report.summary()}; {columns.rows} rows' typed columns checked against raw"
    sys.stdout.write(("TAMPERED: " if report.findings else "OK: ") + summary + "\n")
    return 0 if report.clean else 1


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `audit verify-export`."""
    parser.add_argument("file", help="an export file (.csv, .jsonl or .parquet)")
    parser.add_argument(
        "--manifest",
        metavar="MANIFEST",
        help="the export's manifest.json: the file's SHA-256, row count and chain heads "
        "are checked against it too",
    )


def cmd_verify_export(args: argparse.Namespace) -> int:
    """Check an export file on its own (no stack needed): each row's typed columns against
    its raw bytes, each row's hash, and with its manifest the file itself. 1 if tampered."""
    from replay.exported import check_export
    from replay.verify import KINDS

    try:
        manifest = None
        if args.manifest:
            manifest = orjson.loads(Path(args.manifest).read_bytes())
            if not isinstance(manifest, dict):
                raise ValueError(f"{args.manifest}: not a manifest")
        report = check_export(Path(args.file), manifest)
    except (OSError, ValueError, orjson.JSONDecodeError) as exc:
        sys.stderr.write(f"govledger: {exc}\n")
        return 2
    report.findings.sort(key=lambda f: (f.producer_id, f.seq, KINDS.index(f.kind)))
    for finding in report.findings:
        sys.stdout.write(finding.line() + "\n")
    verdict = "TAMPERED: " if report.findings else "OK: "
    sys.stdout.write(
        f"{verdict}{report.rows} rows checked against their raw bytes"
        f"{', and the manifest' if manifest is not None else ''}, "
        f"{len(report.findings)} findings\n"
    )
    return 1 if report.findings else 0


def add_parser(commands: Any) -> None:
    """`govledger audit`."""
    audit = commands.add_parser("audit", help="audit the ledger")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="verify every producer's hash chain; exit 1 if tampered"
    )
    add_arguments(verify)
    verify.set_defaults(func=cmd_verify)
    verify_export = audit_commands.add_parser(
        "verify-export",
        help="check an export file against its rows' raw bytes (and its manifest); exit 1 "
        "if tampered",
    )
    add_export_arguments(verify_export)
    verify_export.set_defaults(func=cmd_verify_export)
    root_group.add_audit_commands(audit_commands)
    replay_group.add_audit_commands(audit_commands)
