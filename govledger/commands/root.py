"""`govledger root rotate | list` and `govledger audit pubkey`: the org keyring that
authenticates records (see schemas.authn and docs/security-records.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from schemas.settings import CommonSettings, load


def _keyring_path(settings: CommonSettings) -> Any:
    from schemas import authn

    return authn.keyring_path(settings.data_path, settings.root_secret_file)


def cmd_pubkey(_args: argparse.Namespace) -> int:
    """Print each root's id and org Ed25519 public key (hex), oldest first; the newest
    signs. An outside auditor checks checkpoint signatures with these alone."""
    from schemas import authn

    settings = load(CommonSettings)
    try:
        keyring = authn.resolve_keyring(settings.data_path, settings.root_secret_file, create=False)
    except authn.KeyringError as exc:
        sys.stderr.write(f"govledger: {exc}\n")
        return 2
    for root_id, public in keyring.org_public_keys().items():
        role = "signing" if root_id == keyring.signing_id else "verify-only"
        sys.stdout.write(f"{root_id}\ted25519:{public.hex()}\t{role}\n")
    return 0


def cmd_root(args: argparse.Namespace) -> int:
    """List the roots' ids, or add a new root that signs from each producer's next start."""
    from schemas import authn

    settings = load(CommonSettings)
    path = _keyring_path(settings)
    try:
        if args.root_command == "rotate":
            root_id = authn.rotate_root(path)
            sys.stdout.write(
                f"{root_id}\n"
                f"added to {path}; producers sign with it from their next start (restart "
                "the stack); records and checkpoints under older roots still verify\n"
            )
            return 0
        keyring = authn.resolve_keyring(settings.data_path, settings.root_secret_file, create=False)
    except authn.KeyringError as exc:
        sys.stderr.write(f"govledger: {exc}\n")
        return 2
    for root_id in keyring.ids:
        sys.stdout.write(
            f"{root_id}\t{'signing' if root_id == keyring.signing_id else 'verify-only'}\n"
        )
    return 0


def add_parser(commands: Any) -> None:
    """`govledger root list | rotate`."""
    root = commands.add_parser("root", help="the org root secrets that register producers")
    root_commands = root.add_subparsers(dest="root_command", required=True)
    root_commands.add_parser("list", help="root key ids (never the secrets), oldest first")
    root_commands.add_parser(
        "rotate", help="add a new root; older ones stay to verify what they signed"
    )
    root.set_defaults(func=cmd_root)


def add_audit_commands(audit_commands: Any) -> None:
    """`govledger audit pubkey`."""
    pubkey = audit_commands.add_parser(
        "pubkey", help="print the org public key(s) that certify checkpoint signatures"
    )
    pubkey.set_defaults(func=cmd_pubkey)
