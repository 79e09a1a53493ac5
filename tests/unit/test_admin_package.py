"""The admin API as a package: the authentication rule imports alone (the sink process
needs it, not the handlers), and a key secret is made and stored by the two rules of
`schemas.auth` that the views look a presented secret up with."""

from __future__ import annotations

import subprocess
import sys

from gateway.views import LocalViews
from schemas.auth import check_secret, key_sha256, new_key_secret
from schemas.topics import CONTROL
from tests.unit import builders

HANDLER_MODULES = [
    "gateway.admin.api",
    "gateway.admin.context",
    "gateway.admin.keys",
    "gateway.admin.wallets",
    "gateway.admin.policies",
    "gateway.admin.escalations",
    "gateway.pipeline",
    "gateway.views",
]


def test_the_principal_rule_imports_without_the_handlers() -> None:
    probe = (
        "import sys, gateway.admin.principals as p; "
        f"print([m for m in {HANDLER_MODULES!r} if m in sys.modules]); "
        "print(p.principal_for.__module__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["[]", "gateway.admin.principals"]


def test_a_new_secret_is_well_formed_unique_and_found_by_its_hash() -> None:
    secrets = {new_key_secret() for _ in range(100)}
    assert len(secrets) == 100
    secret = next(iter(secrets))
    check_secret(secret)
    assert secret.startswith("gk_") and len(secret) == 46
    views = LocalViews()
    issued = builders.key_issued(key_sha256=key_sha256(secret))
    views.apply(builders.signed_message(CONTROL.name, issued))
    found = views.key_for_secret(secret)
    assert found is not None and found.key_id == issued.key_id
    assert views.key_for_secret(new_key_secret()) is None
