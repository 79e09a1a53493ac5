"""The floor of issue 18's item 1: the least a Python proxy on our stack can spend a call.

An aiohttp server on uvloop that reads the request, parses its JSON, forwards the bytes to
the upstream with one aiohttp client session, parses the answer and its `usage`, and
returns the answer's bytes. No keys, no policy, no lineage, no logs, no metrics. The
gateway benchmark measures it beside the gateway at the same rate, so the gateway's CPU a
call can be read against what a proxy cannot avoid on this machine.

Run:  .venv/bin/python bench/floor_proxy.py --port 18001 --upstream http://127.0.0.1:18000/v1
"""

from __future__ import annotations

import argparse

import aiohttp
import orjson
import uvloop
from aiohttp import web


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://h:p/v1")
    return parser.parse_args()


class FloorProxy:
    """`POST /v1/chat/completions` forwarded; `tokens` counts the usage it parsed."""

    def __init__(self, upstream: str) -> None:
        self.url = f"{upstream.rstrip('/')}/chat/completions"
        self.tokens = 0
        self.session: aiohttp.ClientSession | None = None

    async def start(self, _app: web.Application) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), skip_auto_headers=("User-Agent",)
        )

    async def stop(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def chat(self, request: web.Request) -> web.Response:
        assert self.session is not None, "started"
        body = await request.read()
        if not orjson.loads(body).get("model"):  # what a router must read at least
            return web.Response(status=400, text='{"error":{"message":"model is required"}}')
        async with self.session.post(
            self.url, data=body, headers={"Content-Type": "application/json"}
        ) as answer:
            data = await answer.read()
            status = answer.status
        usage = orjson.loads(data).get("usage") or {}
        self.tokens += int(usage.get("total_tokens", 0))
        return web.Response(status=status, body=data, content_type="application/json")


def main() -> None:
    args = parse_args()
    proxy = FloorProxy(args.upstream)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", proxy.chat)
    app.on_startup.append(proxy.start)
    app.on_cleanup.append(proxy.stop)
    print(f"listening on http://{args.host}:{args.port}", flush=True)
    uvloop.install()
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
