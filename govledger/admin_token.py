"""The admin token: from settings, else made once and kept (mode 0600) in data_dir."""

from __future__ import annotations

import os
import secrets

from schemas.settings import CommonSettings

TOKEN_FILE = "admin.token"  # noqa: S105 - a file name, not a secret


def resolve_admin_token(settings: CommonSettings, *, create: bool) -> str:
    """The configured token, or the one kept in data_dir (made if `create`)."""
    if settings.admin_token:
        return settings.admin_token
    path = settings.data_path / TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    if not create:
        raise FileNotFoundError(
            f"no admin token: set GOVLEDGER_ADMIN_TOKEN or start the stack (looked in {path})"
        )
    settings.data_path.mkdir(parents=True, exist_ok=True)
    token = "adm_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token
