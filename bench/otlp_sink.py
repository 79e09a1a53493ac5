"""A stand-in OTLP/HTTP trace receiver for the gateway benchmark (and a test's receiver):
`POST /v1/traces` decodes the protobuf ExportTraceServiceRequest, counts its spans and
answers an empty ExportTraceServiceResponse; `GET /count` says how many requests and
spans arrived. It keeps nothing else: the benchmark measures what tracing costs the
gateway, and this process's CPU is not the gateway's.

Run:  .venv/bin/python bench/otlp_sink.py --port 14318
It prints one line `listening on http://HOST:PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass, field

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"


@dataclass
class OtlpSink:
    """The receiver's handlers; `spans` keeps the decoded spans when `keep` is set."""

    keep: bool = False
    requests: int = 0
    span_count: int = 0
    spans: list[Span] = field(default_factory=list)

    async def traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        self.requests += 1
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                self.span_count += len(scope.spans)
                if self.keep:
                    self.spans.extend(scope.spans)
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type=PROTOBUF)

    async def count(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "spans": self.span_count})

    def application(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([web.post(TRACES_PATH, self.traces), web.get("/count", self.count)])
        return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(OtlpSink().application(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()  # until SIGTERM/SIGINT cancels the run
    finally:
        await runner.cleanup()


def main() -> None:
    import signal

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
