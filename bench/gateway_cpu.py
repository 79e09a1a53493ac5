"""CPU per call through the gateway, in-process: the component tier's gateway (aiohttp
under a TestClient, the in-memory lineage publisher, an httpx MockTransport upstream;
tests/component/support.py) driven by the same process, one call at a time. The figure
is the process's CPU time per call (gateway, client and upstream double together), the
best of several repetitions: on a shared machine this is steadier than bench/gateway.py's
wall-clock figures, so it is the one to compare two versions of the pipeline with (run it
from each worktree in turn).

Run from the repository root:  .venv/bin/python -m bench.gateway_cpu [--calls N] [--reps R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog

from tests.component.support import CAPTURE_MODEL, Component, running_component

HELLO = [{"role": "user", "content": "Hello ledger"}]
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat upstream": ("/v1/chat/completions", {"model": CAPTURE_MODEL, "messages": HELLO}),
    "chat sim": ("/v1/chat/completions", {"model": "sim-small", "messages": HELLO}),
    "chat sim stream": (
        "/v1/chat/completions",
        {"model": "sim-small", "messages": HELLO, "stream": True},
    ),
    "embeddings sim": ("/v1/embeddings", {"model": "sim-embed", "input": "Hello ledger"}),
    "completions sim": ("/v1/completions", {"model": "sim-small", "prompt": "Hello ledger"}),
}
WARMUP_CALLS = 50


async def cpu_us_per_call(
    stack: Component,
    headers: dict[str, str],
    path: str,
    body: dict[str, Any],
    calls: int,
    reps: int,
) -> float:
    """The best of `reps` runs of `calls` calls: CPU microseconds per call."""

    async def call() -> None:
        response = await stack.client.post(path, json=body, headers=headers)
        assert response.status == 200, await response.text()
        await response.read()

    for _ in range(WARMUP_CALLS):
        await call()
    best = float("inf")
    for _ in range(reps):
        started = time.process_time()
        for _ in range(calls):
            await call()
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


async def measure(calls: int, reps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_component(Path(tmp)) as stack:
            stack.publish_balance("bench", "1000")
            secret = (await stack.create_key("bench"))["key"]
            headers = {"Authorization": f"Bearer {secret}"}
            return {
                name: round(await cpu_us_per_call(stack, headers, path, body, calls, reps), 1)
                for name, (path, body) in CALLS.items()
            }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per repetition")
    parser.add_argument("--reps", type=int, default=5, help="repetitions; the best is kept")
    parser.add_argument(
        "--log-format",
        choices=("off", "console", "json"),
        default="off",
        help="off: warnings only; else info lines (one access line per call) to /dev/null",
    )
    args = parser.parse_args()
    if args.log_format == "off":
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    else:
        from govledger.logs import configure

        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's life
        configure("info", "gateway", args.log_format)
    figures = asyncio.run(measure(args.calls, args.reps))
    for name, cpu_us in figures.items():
        print(f"{name:<18} {cpu_us:8.1f} µs CPU per call")
    print(json.dumps({"cpu_us_per_call": figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
