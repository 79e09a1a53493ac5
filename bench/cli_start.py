"""How long the command line takes to start, beside `python -c "import httpx"` measured in
the same run: each round starts every command once, in turn, so the machine's load falls
on all of them alike.

Bar (issue 12): `govledger --help` and `govledger keys list --help` start in at most 5x
the time of `python -c "import httpx"` (median against median).

    .venv/bin/python bench/cli_start.py [--rounds N] [--repo PATH]

`--repo` times another checkout's command line (e.g. main's, for a before/after figure).

Exit code 1 when a command misses the bar.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BAR_TIMES_BASELINE = 5.0
DEFAULT_ROUNDS = 10
BASELINE = "import httpx"
COMMANDS: dict[str, list[str]] = {
    BASELINE: ["-c", "import httpx"],
    "govledger --help": ["-m", "govledger", "--help"],
    "govledger keys list --help": ["-m", "govledger", "keys", "list", "--help"],
}


def start_s(arguments: list[str], repo: Path) -> float:
    """Seconds from starting the interpreter to its exit (run from the repository, so
    its code is the one imported)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, *arguments], cwd=repo, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="checkout to time")
    args = parser.parse_args()
    for arguments in COMMANDS.values():  # warm the file cache and the bytecode
        start_s(arguments, args.repo)
    times_s: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, arguments in COMMANDS.items():
            times_s[name].append(start_s(arguments, args.repo))
    base_median_s = statistics.median(times_s[BASELINE])
    base_best_s = min(times_s[BASELINE])
    print(f"{args.rounds} rounds, {sys.executable}, code of {args.repo.resolve()}")
    print(f"{'command':<30}{'median ms':>10}{'best ms':>10}{'x median':>10}{'x best':>8}")
    missed = []
    for name, runs in times_s.items():
        median_s, best_s = statistics.median(runs), min(runs)
        ratio = median_s / base_median_s
        print(
            f"{name:<30}{median_s * 1000:>10.0f}{best_s * 1000:>10.0f}"
            f"{ratio:>10.2f}{best_s / base_best_s:>8.2f}"
        )
        if ratio > BAR_TIMES_BASELINE:
            missed.append(name)
    verdict = f"not met by {', '.join(missed)}" if missed else "met"
    print(f"bar: at most {BAR_TIMES_BASELINE:g}x `python -c 'import httpx'` (median): {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
