"""`govledger replay --dsn` and `audit reconcile --dsn` on a chDB store no stack runs (the
real ClickHouse engine, in child processes: chDB holds one engine per process). A store
whose published balance agrees with its journal reconciles and shows no difference; a
settlement the processors never folded makes both exit 1 and name the wallet."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SETUP = """
import sys
sys.path.insert(0, {root!r})
from bench.replay import insert
from schemas import codec
from schemas.codec import HashChain
from sinks.store import Store
from streams.wallets import logic as wallets
from tests.unit import builders

store = Store({dsn!r})
store.migrate()
gateway, admin, processor = HashChain("gateway-a"), HashChain("admin-a"), HashChain("worker-a")
funding = admin.seal(builders.funding(producer_id="", seq=0))
calls = [gateway.seal(builders.call(producer_id="", seq=0, occurred_at=builders.T0 + i))
         for i in range(3)]
wallet = wallets.fold(calls, wallets.fold([funding]))[builders.WALLET]
balance = processor.seal(wallets.to_balance(wallet, event_id=builders.uuid7(builders.T0 + 9),
                                            occurred_at=builders.T0 + 9, producer_id="", seq=0))
insert(store, [codec.encode(r) for r in (funding, *calls, balance)])
"""

UNSEEN = """
import sys
sys.path.insert(0, {root!r})
from bench.replay import insert
from schemas import codec
from schemas.codec import HashChain
from sinks.store import Store
from tests.unit import builders

store = Store({dsn!r})
call = builders.call(producer_id="", seq=0, occurred_at=builders.T0 + 5)
unseen = HashChain("gateway-b").seal(call)
insert(store, [codec.encode(unseen)])
"""

ROOT = str(Path(__file__).resolve().parents[2])


def child(code: str, dsn: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code).format(root=ROOT, dsn=dsn)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def govledger(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "govledger", *args, "--dsn", dsn],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip


def test_reconcile_and_diff_live_find_a_settlement_never_folded(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'chdb'}"
    child(SETUP, dsn)
    clean = govledger(dsn, "audit", "reconcile")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "all 1 wallets reconcile" in clean.stdout
    same = govledger(dsn, "replay", "--diff-live")
    assert same.returncode == 0, same.stdout + same.stderr

    child(UNSEEN, dsn)
    bad = govledger(dsn, "audit", "reconcile")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "acme/search" in bad.stdout and "MISMATCH" in bad.stdout
    assert "1 of 1 wallets do not reconcile" in bad.stdout
    differs = govledger(dsn, "replay", "--diff-live")
    assert differs.returncode == 1, differs.stdout + differs.stderr
    assert "wallet acme/search: balance_nanousd" in differs.stdout
