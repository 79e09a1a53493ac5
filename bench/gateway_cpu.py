"""CPU per call through the gateway, in-process: the component tier's gateway (aiohttp
under a TestClient, the in-memory lineage publisher, an httpx MockTransport upstream;
tests/component/support.py) driven by the same process, one call at a time. The figure
is the process's CPU time per call (gateway, client and upstream double together), the
best of several repetitions: on a shared machine this is steadier than bench/gateway.py's
wall-clock figures, so it is the one to compare two versions of the pipeline with (run it
from each worktree in turn).

Each variant (VARIANTS) is one gateway built with its own settings overrides and its own
tracing: off, on with spans kept in memory (what making the spans costs), and on with
spans sent over OTLP/HTTP to a local receiver in another process (bench/otlp_sink.py:
making, encoding and sending them; the receiver's CPU is not counted). The "upstream over
TCP" variants send "chat upstream" to bench/upstream.py in another process (its CPU not
counted) instead of the in-process MockTransport double: with the gateway's own client
(aiohttp), and with httpx and its connection pool (the client before issue 18), so the
two clients are compared in one run.

Run from the repository root:
  .venv/bin/python -m bench.gateway_cpu [--calls N] [--reps R] [--variant NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import structlog

from bench.gateway_procs import free_port
from gateway.providers.openai_compat import OpenAICompatProvider
from gateway.providers.upstream_http import UPSTREAM_POOL
from gateway.tracing import NO_TRACING, Tracing
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
# Only where the upstream is bench/upstream.py, which streams (the in-process double does not).
TCP_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat upstream stream": (
        "/v1/chat/completions",
        {"model": CAPTURE_MODEL, "messages": HELLO, "stream": True},
    ),
}
WARMUP_CALLS = 50
OTLP_SINK = Path(__file__).resolve().parent / "otlp_sink.py"
UPSTREAM = Path(__file__).resolve().parent / "upstream.py"


@dataclass(frozen=True)
class Variant:
    """One gateway configuration measured: GatewaySettings overrides by field name (e.g.
    {"metrics_enabled": False}), and where its spans go: None (tracing off), "memory"
    (the SDK's in-memory exporter) or "otlp" (OTLP/HTTP to bench/otlp_sink.py)."""

    settings: Mapping[str, Any] = field(default_factory=dict)
    spans: str | None = None
    upstream: str | None = None  # "aiohttp" or "httpx": over TCP to bench/upstream.py


VARIANTS: dict[str, Variant] = {
    "tracing off": Variant(),
    "tracing on, in memory": Variant(spans="memory"),
    "tracing on, OTLP": Variant(spans="otlp"),
    # Against "tracing off" (metrics on, the default): what Prometheus metrics cost a call.
    "metrics off": Variant(settings={"metrics_enabled": False}),
    "upstream over TCP": Variant(upstream="aiohttp"),
    "upstream over TCP, httpx": Variant(upstream="httpx"),
}


@contextlib.contextmanager
def variant_tracing(variant: Variant) -> Iterator[tuple[Tracing, str]]:
    """The variant's tracing, and where to read what its OTLP receiver counted."""
    if variant.spans is None:
        yield NO_TRACING, ""
        return
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gateway.tracing_otel import OtelTracing

    if variant.spans == "memory":
        memory = InMemorySpanExporter()
        yield OtelTracing.exporting(memory, service_name="bench", latest=False, batched=True), ""
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from govledger.broker import wait_for_port

    port = free_port()
    argv = [sys.executable, str(OTLP_SINK), "--port", str(port)]
    sink = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, 20)
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
        tracing = OtelTracing.exporting(exporter, service_name="bench", latest=False, batched=True)
        yield tracing, f"http://127.0.0.1:{port}/count"
    finally:
        sink.terminate()
        sink.wait(timeout=10)


@contextlib.contextmanager
def variant_upstream(variant: Variant) -> Iterator[str]:
    """The base URL of bench/upstream.py in another process ("" when the variant keeps
    the in-process double)."""
    if variant.upstream is None:
        yield ""
        return
    from govledger.broker import wait_for_port

    port = free_port()
    argv = [sys.executable, str(UPSTREAM), "--port", str(port), "--delay-ms", "0"]
    upstream = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, 20)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


def tcp_provider(variant: Variant, base_url: str) -> OpenAICompatProvider:
    """The gateway's OpenAI-compatible provider at `base_url`, over the variant's client."""
    transport = None
    if variant.upstream == "httpx":
        transport = httpx.AsyncHTTPTransport(limits=UPSTREAM_POOL)
    return OpenAICompatProvider(
        name="openai", base_url=base_url, api_key="bench", timeout_s=30, transport=transport
    )


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
    provider = getattr(stack.gateway.tracing, "provider", None)
    for _ in range(reps):
        started = time.process_time()
        for _ in range(calls):
            await call()
        if provider is not None:  # these calls' spans exported (encoded, sent) in the count
            await asyncio.to_thread(provider.force_flush)
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


async def measure(
    variant: Variant, tracing: Tracing, upstream_url: str, calls: int, reps: int
) -> dict[str, float]:
    """CPU µs per call of each of CALLS (and TCP_CALLS over TCP) through a gateway of this
    variant."""
    with tempfile.TemporaryDirectory() as tmp:
        async with running_component(Path(tmp), **variant.settings) as stack:
            stack.gateway.tracing = tracing
            if upstream_url:
                double = stack.gateway.providers["openai"]
                stack.gateway.providers["openai"] = tcp_provider(variant, upstream_url)
                await double.close()
            stack.publish_balance("bench", "1000")
            secret = (await stack.create_key("bench"))["key"]
            headers = {"Authorization": f"Bearer {secret}"}
            return {
                name: round(await cpu_us_per_call(stack, headers, path, body, calls, reps), 1)
                for name, (path, body) in (CALLS | (TCP_CALLS if upstream_url else {})).items()
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
    parser.add_argument(
        "--variant",
        action="append",
        choices=list(VARIANTS),
        help="measure only this variant (repeatable; default: all, in order)",
    )
    args = parser.parse_args()
    if args.log_format == "off":
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    else:
        from govledger.logs import configure

        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's life
        configure("info", "gateway", args.log_format)
    names = args.variant or list(VARIANTS)
    results: dict[str, dict[str, float]] = {}
    for name in names:
        variant = VARIANTS[name]
        with variant_tracing(variant) as (tracing, count_url), variant_upstream(variant) as url:
            results[name] = asyncio.run(measure(variant, tracing, url, args.calls, args.reps))
            tracing.shutdown()
            received = httpx.get(count_url, timeout=10).text if count_url else ""
        print(f"[{name}] measured" + (f"; OTLP receiver counted {received}" if received else ""))
    print(f"{'µs CPU per call':<20}" + "".join(f"{name:>24}" for name in names))
    for call in [*CALLS, *TCP_CALLS]:
        figures = [results[name].get(call) for name in names]
        if any(f is not None for f in figures):
            cells = "".join(f"{'-' if f is None else f'{f:.1f}':>24}" for f in figures)
            print(f"{call:<20}" + cells)
    first = names[0]
    for name in names[1:]:
        common = [c for c in results[first] if c in results[name]]
        extra = [results[name][c] - results[first][c] for c in common]
        print(f"{name} minus {first}: {sum(extra) / len(extra):+.1f} µs CPU per call, mean")
    print(json.dumps({"cpu_us_per_call": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
