"""A stand-in OpenAI-compatible upstream for the gateway benchmark.

`POST /v1/chat/completions` (also `/chat/completions`) answers after a fixed delay with a
small completion that reports `usage`; `stream: true` gets the same answer as server-sent
events, with the usage chunk last. `GET /v1/models` and `GET /healthz` answer at once.

Run:  .venv/bin/python bench/upstream.py --port 18000 --delay-ms 50
It prints one line `listening on http://HOST:PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import orjson
from aiohttp import web

CONTENT = "Spend of the cost centre is within its monthly budget."
PROMPT_TOKENS = 24
COMPLETION_TOKENS = 11
USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": COMPLETION_TOKENS,
    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=50.0, help="fixed answer delay")
    return parser.parse_args()


class Upstream:
    """The handlers; `served` counts completions answered."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.served = 0
        self._ids = 0

    def _next_id(self) -> str:
        self._ids += 1
        return f"chatcmpl-bench{self._ids:012d}"

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
            model = str(body.get("model") or "unknown")
            stream = bool(body.get("stream"))
        except (orjson.JSONDecodeError, AttributeError):
            return web.Response(status=400, text='{"error":{"message":"bad json"}}')
        await asyncio.sleep(self.delay_s)
        self.served += 1
        created = int(time.time())
        completion_id = self._next_id()
        if not stream:
            return web.Response(
                body=orjson.dumps(
                    {
                        "id": completion_id,
                        "object": "chat.completion",
                        "created": created,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": CONTENT},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": USAGE,
                    }
                ),
                content_type="application/json",
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        head = {"id": completion_id, "object": "chat.completion.chunk", "created": created}
        chunks = (
            {**head, "model": model, "choices": [{"index": 0, "delta": {"content": CONTENT}}]},
            {
                **head,
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            },
            {**head, "model": model, "choices": [], "usage": USAGE},
        )
        for chunk in chunks:
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "bench"}]
        return web.json_response({"object": "list", "data": data})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "served": self.served})


async def serve(args: argparse.Namespace) -> None:
    upstream = Upstream(args.delay_ms / 1000)
    app = web.Application()
    app.add_routes(
        [
            web.post("/v1/chat/completions", upstream.chat),
            web.post("/chat/completions", upstream.chat),
            web.get("/v1/models", upstream.models),
            web.get("/healthz", upstream.healthz),
        ]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port, backlog=4096).start()
    print(f"listening on http://{args.host}:{args.port}", flush=True)
    try:
        await asyncio.Event().wait()  # until SIGTERM/SIGINT cancels the run
    finally:
        await runner.cleanup()


def main() -> None:
    import signal

    import uvloop

    args = parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
