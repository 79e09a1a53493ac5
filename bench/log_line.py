"""CPU per gateway access line (gateway/call_log.py), per GOVLEDGER_LOG_FORMAT, written to
/dev/null: what logging adds to each call. `off` is the call with info lines filtered out
(the arguments are still built). The best of several repetitions of process CPU time, so a
shared machine's load matters little.

Run from the repository root:  .venv/bin/python -m bench.log_line
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LINES = 20_000
REPS = 7
ONE_FORMAT = """
import os, sys, time, timeit
sys.stderr = open(os.devnull, "w")
from govledger.logs import configure
log_format = sys.argv[1]
configure("warning" if log_format == "off" else "info", "gateway",
          "json" if log_format == "off" else log_format)
from gateway.call_log import log_call
from tests.unit import builders
record = builders.call()
best = min(timeit.repeat(lambda: log_call(record, "gk_abcdefg"), number={lines},
                         repeat={reps}, timer=time.process_time))
print(best / {lines} * 1e6)
"""


def cpu_us_per_line(log_format: str) -> float:
    """Measured in a child process: configuring logs is process-wide."""
    code = ONE_FORMAT.format(lines=LINES, reps=REPS)
    finished = subprocess.run(
        [sys.executable, "-c", code, log_format],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    return round(float(finished.stdout), 1)


def main() -> int:
    figures = {log_format: cpu_us_per_line(log_format) for log_format in ("off", "json", "console")}
    for log_format, cpu_us in figures.items():
        print(f"{log_format:<8} {cpu_us:6.1f} µs CPU per access line")
    print(json.dumps({"cpu_us_per_access_line": figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
