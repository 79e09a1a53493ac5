"""`govledger --help` starts fast because each command group imports its heavy libraries
only when its command runs (bench/cli_start.py measures the time; this checks the cause,
without timing): asking any group for help loads none of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# The demo's SDK, the replay and export engines, the stream processors, the embedded
# store and the record keys' crypto: none is needed to print a help screen.
HEAVY = (
    "openai",
    "pyarrow",
    "numpy",
    "faust",
    "chdb",
    "aiokafka",
    "clickhouse_connect",
    "cryptography",
)

HELP_SCREENS = [
    ["--help"],
    ["keys", "list", "--help"],
    ["keys", "create", "--help"],
    ["wallets", "fund", "--help"],
    ["policy", "lint", "--help"],
    ["policy", "baseline", "show", "--help"],
    ["escalations", "list", "--help"],
    ["sql", "--help"],
    ["audit", "verify", "--help"],
    ["audit", "who", "--help"],
    ["root", "rotate", "--help"],
    ["replay", "--help"],
    ["export", "create", "--help"],
    ["demo", "--help"],
    ["up", "--help"],
    ["doctor", "--help"],
]

# Prints, for each help screen in turn, the heavy modules loaded so far.
PROBE = """
import contextlib, io, json, sys
from govledger.cli import main
heavy, screens, loaded = json.loads(sys.argv[1]), json.loads(sys.argv[2]), {}
for argv in screens:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(argv)
    loaded[" ".join(argv)] = sorted(m for m in heavy if m in sys.modules)
print(json.dumps(loaded))
"""


def _heavy_loaded_by_help() -> dict[str, list[str]]:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            json.dumps(HEAVY),
            json.dumps(HELP_SCREENS),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded: dict[str, list[str]] = json.loads(result.stdout)
    return loaded


def test_no_help_screen_imports_a_heavy_library() -> None:
    loaded = _heavy_loaded_by_help()
    assert list(loaded) == [" ".join(argv) for argv in HELP_SCREENS]
    assert {screen: modules for screen, modules in loaded.items() if modules} == {}


def test_the_probe_sees_a_heavy_import() -> None:
    """The probe above would notice: running a command that needs pyarrow loads it."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom govledger.commands import replay\nreplay._moment('now')\n"
            "print('pyarrow' in sys.modules)",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "True"
