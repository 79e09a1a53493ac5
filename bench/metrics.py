"""What Prometheus metrics cost the gateway per call, in-process: `GatewayMetrics.call_done`
(every instrument a call touches: the call counter, latency and overhead histograms,
lineage emit time, the tenant's counters, one counter per upstream attempt, a fallback)
with GOVLEDGER_METRICS_ENABLED on and off, for a realistic lineage record (two attempts,
one fallback); and what one scrape of `/metrics` costs with many series.

On a shared 2-core machine an end-to-end difference (bench/gateway.py) is within the noise;
this isolates the metrics' own work, as bench/outbox.py does for the outbox.

Run from the repository root:  .venv/bin/python -m bench.metrics [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.call_record import CallRecord
from gateway.catalogue import Target
from gateway.metrics import GatewayMetrics
from schemas.settings import GatewaySettings, load
from tests.unit import builders

MODELS = [f"model-{i}" for i in range(20)]


def call_done_cpu_us(enabled: bool, calls: int) -> float:
    """CPU microseconds per recorded call."""
    settings = load(GatewaySettings, environ={}, metrics_enabled=enabled)
    metrics = GatewayMetrics(settings, models=["gpt-4o-mini", *MODELS], providers=["openai"])
    record = builders.call(api="chat.completions")
    call = CallRecord(0.0, "", record.trace_id, None)
    call.target = Target("gpt-4o-mini", "openai", "gpt-4o-mini", 150, 600)
    started = time.process_time()
    for _ in range(calls):
        metrics.call_done(call, record, 0.0002)
    return (time.process_time() - started) / calls * 1e6


def scrape_ms(series_calls: int) -> tuple[float, int]:
    """Milliseconds of one scrape after calls over 20 models, 10 statuses, 20 tenants."""
    settings = load(GatewaySettings, environ={})
    metrics = GatewayMetrics(settings, models=MODELS, providers=["openai"])
    for i in range(series_calls):
        record = builders.call(
            api="chat.completions",
            model_requested=MODELS[i % 20],
            http_status=200 + i % 10,
            tenant_id=f"tenant-{i % 20}",
        )
        call = CallRecord(0.0, "", record.trace_id, None)
        metrics.call_done(call, record, 0.0002)
    started = time.perf_counter()
    body = asyncio.run(metrics.metrics.exposition())
    return (time.perf_counter() - started) * 1000, body.count(b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    on = min(call_done_cpu_us(True, args.calls) for _ in range(3))
    off = min(call_done_cpu_us(False, args.calls) for _ in range(3))
    took_ms, lines = scrape_ms(4_000)
    figures = {
        "call_done_on_us": round(on, 2),
        "call_done_off_us": round(off, 3),
        "scrape_ms": round(took_ms, 1),
        "scrape_lines": lines,
    }
    print(f"metrics on:  {on:.2f} µs CPU per call")
    print(f"metrics off: {off:.3f} µs CPU per call")
    print(f"one scrape:  {took_ms:.1f} ms for {lines} lines")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
