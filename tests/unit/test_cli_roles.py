"""`govledger keys create --role` offers exactly the roles the records know
(schemas.records.ROLES, least privileged first), not a list of its own."""

from __future__ import annotations

import contextlib
import io

import pytest

from govledger.cli import build_parser
from schemas.records import ROLES


@pytest.mark.parametrize("role", ROLES)
def test_every_role_of_the_records_is_accepted(role: str) -> None:
    args = build_parser().parse_args(["keys", "create", "--team", "t", "--role", role])
    assert args.role == role


def test_a_role_the_records_do_not_know_is_refused() -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["keys", "create", "--team", "t", "--role", "admin"])
    assert exited.value.code == 2
    assert f"choose from {', '.join(repr(r) for r in ROLES)}" in stderr.getvalue()


def test_the_default_role_is_a_known_one() -> None:
    assert build_parser().parse_args(["keys", "create", "--team", "t"]).role == "developer"
    assert "developer" in ROLES
