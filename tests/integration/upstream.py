"""A misbehaving OpenAI-compatible upstream on loopback, standing in for a provider."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
from aiohttp import web

from tests.integration.stack import free_port


def _chunk(text: str) -> bytes:
    body = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "cut-stream",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


ECHO_MODEL = "echo"
OUTAGE_MODEL = "outage-primary"


def _echo(payload: dict[str, Any]) -> web.Response:
    """Answer with exactly the text the upstream received, so tests see what it saw."""
    seen = "\n".join(str(m.get("content")) for m in payload["messages"])
    return web.json_response(
        {
            "id": "chatcmpl-echo",
            "object": "chat.completion",
            "created": 0,
            "model": ECHO_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": seen},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }
    )


@contextlib.contextmanager
def fake_upstream(failing_models: set[str], cut_stream_model: str) -> Iterator[str]:
    """Serve /v1/chat/completions: `failing_models` get a 500, `cut_stream_model` streams
    two chunks and then drops the connection, `echo` answers with what it received, and
    `outage-primary` fails while an outage is on (POST /outage/on or /outage/off).
    Yields the base URL."""
    outage = {"on": False}

    async def switch(request: web.Request) -> web.Response:
        outage["on"] = request.match_info["state"] == "on"
        return web.json_response(outage)

    async def chat(request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        if payload.get("model") == ECHO_MODEL:
            return _echo(payload)
        if payload.get("model") == OUTAGE_MODEL:
            if outage["on"]:
                return web.json_response({"error": {"message": "outage"}}, status=503)
            return _echo(payload)
        if payload.get("model") != cut_stream_model:
            assert payload.get("model") in failing_models
            return web.json_response({"error": {"message": "boom"}}, status=500)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_chunk("The first part of an answer"))
        await response.write(_chunk(" that never finishes because"))
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/outage/{state}", switch)
    with serving(app) as base_url:
        yield base_url


@contextlib.contextmanager
def serving(app: web.Application) -> Iterator[str]:
    """Serve `app` on a loopback port from a thread of its own; yields its /v1 base URL."""
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)

    async def serve() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(timeout=10)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@contextlib.contextmanager
def recording_upstream(handle: Callable[[httpx.Request], httpx.Response]) -> Iterator[str]:
    """A component fake's `handle` (tests/component/*_upstream.py: it answers as the
    provider does and keeps what it received) served over real HTTP, for a stack's gateway
    to call; every POST under /v1 reaches it. Yields the base URL."""

    async def answer(request: web.Request) -> web.Response:
        asked = httpx.Request(
            request.method,
            str(request.url),
            headers=dict(request.headers),
            content=await request.read(),
        )
        # The fake is synchronous and quick: it runs on this server's own loop thread.
        answered = handle(asked)
        content_type = answered.headers.get("content-type", "application/json")
        return web.Response(
            status=answered.status_code,
            body=answered.read(),
            headers={"Content-Type": content_type},
        )

    app = web.Application()
    app.router.add_post("/v1/{path:.+}", answer)
    with serving(app) as base_url:
        yield base_url
