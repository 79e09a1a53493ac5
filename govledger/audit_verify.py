"""`govledger audit verify`: every producer's hash chain and checkpoints, read from the
store through the query API (the store owner holds the embedded engine), verified by
`replay.verify`; and every record's authentication (`replay.forged`: records consumers
refused as forged, stored rows whose auth header does not verify, checkpoints whose
signature fails), with the org keyring. Exit code 1 when any chain shows tampering or any
record is forged."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from replay.forged import forged_findings, read_org_keys
from replay.verify import KINDS, KnownHead, Query, heads_of_manifest, verify_store
from schemas import authn
from schemas.settings import SinkSettings, load

QUERY_TIMEOUT_S = 300.0


class QueryError(Exception):
    """The query API refused or could not be reached."""


def query_api(url: str, token: str) -> Query:
    """Runs SQL through the query API, rows as JSON arrays."""
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


def _known_heads(paths: list[str]) -> list[KnownHead]:
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
        report = verify_store(query, tenant_id=args.tenant, heads=heads)
        report.findings.extend(
            forged_findings(query, verifier, tenant_id=args.tenant, org_public_keys=org_keys)
        )
        report.findings.sort(key=lambda f: (f.producer_id, f.seq, KINDS.index(f.kind)))
    except (FileNotFoundError, QueryError, authn.KeyringError) as exc:
        sys.stderr.write(f"govledger: {exc}\n")
        return 2
    for finding in report.findings:
        sys.stdout.write(finding.line() + "\n")
    sys.stdout.write(("TAMPERED: " if report.findings else "OK: ") + report.summary() + "\n")
    return 0 if report.clean else 1
