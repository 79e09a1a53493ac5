"""The provider adapters over the gateway's own HTTP client (aiohttp; no httpx transport
given, as build_providers makes them), against a real upstream on a local socket: what
the upstream receives (path, query, credentials, the body's bytes), answers whole and
streamed (each event relayed as it arrives), and every failure in the class the
gateway's retry and fallback read (timeout, connect, transport, 429 with Retry-After,
bad_response over the size limit; the timeout bounds each wait, not a whole stream). The
same claims over httpx.MockTransport doubles are in tests/unit/test_provider_failures.py."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.azure import AzureOpenAIProvider
from gateway.providers.base import Delta, UpstreamError
from gateway.providers.openai_compat import OpenAICompatProvider
from tests.unit.provider_support import anthropic_sse, chat_call, collect, sse, text_of
from tests.unit.test_provider_anthropic import ANTHROPIC_EVENTS, ANTHROPIC_MESSAGE

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o-mini",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }


@dataclass
class Seen:
    """What the upstream received, and a gate holding a stream after its first event."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    peers: list[Any] = field(default_factory=list)  # the client's address of each request
    release: asyncio.Event = field(default_factory=asyncio.Event)


def upstream_app(seen: Seen) -> web.Application:
    async def record(request: web.Request) -> bytes:
        body = await request.read()
        seen.requests.append((request.path, request.query_string, dict(request.headers), body))
        seen.peers.append(request.transport and request.transport.get_extra_info("peername"))
        return body

    async def chat(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await record(request))
        model = body.get("model")
        if model == "slow":
            await asyncio.sleep(5)
        if model == "limited":
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "7"}
            )
        if model == "huge":
            return web.Response(body=b'{"pad": "' + b"x" * 4096 + b'"}')
        if not body.get("stream"):
            # A cookie one tenant's call gets must not ride on the next tenant's call.
            return web.json_response(COMPLETION, headers={"Set-Cookie": "affinity=a; Path=/"})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if model == "steady":  # longer in all than the timeout, never silent that long
            for _ in range(5):
                await response.write(sse(chunk("."), done=False))
                await asyncio.sleep(0.1)
            await response.write(sse(chunk("", "stop")))
            await response.write_eof()
            return response
        await response.write(sse(chunk("first"), done=False))
        if model == "cut":
            assert request.transport is not None
            request.transport.close()  # the peer drops the connection mid-answer
            return response
        await seen.release.wait()  # the rest only once the caller has the first part
        await response.write(sse(chunk(" second", "stop")))
        await response.write_eof()
        return response

    async def messages(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await record(request))
        if not body.get("stream"):
            return web.json_response(ANTHROPIC_MESSAGE)
        return web.Response(body=anthropic_sse(*ANTHROPIC_EVENTS), content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/openai/deployments/{name}/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestServer, Seen]]:
    seen = Seen()
    server = TestServer(upstream_app(seen))
    await server.start_server()
    try:
        yield server, seen
    finally:
        seen.release.set()
        await server.close()


def openai_at(server: TestServer, **kwargs: Any) -> OpenAICompatProvider:
    settings: dict[str, Any] = {"timeout_s": 5.0, **kwargs}
    return OpenAICompatProvider(
        name="openai", base_url=str(server.make_url("/v1")), api_key="sk-upstream", **settings
    )


async def test_a_completion_reaches_the_upstream_with_its_credentials_and_body(
    served: tuple[TestServer, Seen],
) -> None:
    server, seen = served
    provider = openai_at(server, headers={"OpenAI-Organization": "org-1"})
    try:
        completion = await provider.complete(chat_call(temperature=0.5))
    finally:
        await provider.close()
    assert completion.content == "Hi"
    assert completion.usage is not None and completion.usage.prompt_tokens == 3
    ((path, query, headers, body),) = seen.requests
    assert (path, query) == ("/v1/chat/completions", "")
    assert headers["Authorization"] == "Bearer sk-upstream"
    assert headers["OpenAI-Organization"] == "org-1"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["temperature"] == 0.5


async def test_azure_sends_its_key_and_api_version_to_the_deployment(
    served: tuple[TestServer, Seen],
) -> None:
    server, seen = served
    provider = AzureOpenAIProvider(
        name="azure",
        endpoint=str(server.make_url("/")),
        api_key="azure-key",
        api_version="2024-10-21",
        deployments={"gpt-4o-mini": "my deployment"},
        timeout_s=5.0,
    )
    try:
        assert (await provider.complete(chat_call())).content == "Hi"
    finally:
        await provider.close()
    ((path, query, headers, body),) = seen.requests
    assert path == "/openai/deployments/my deployment/chat/completions"
    assert query == "api-version=2024-10-21"
    assert headers["api-key"] == "azure-key" and "Authorization" not in headers
    assert "model" not in json.loads(body)


async def test_a_stream_relays_each_event_as_it_arrives(served: tuple[TestServer, Seen]) -> None:
    server, seen = served
    provider = openai_at(server)
    try:
        stream = provider.stream(chat_call())
        # The upstream holds the rest of its answer until this first delta is read: a
        # client that buffered the body would never get here (the time to first token).
        first = await asyncio.wait_for(anext(stream), timeout=5)
        seen.release.set()
        rest = await collect(stream)
    finally:
        await provider.close()
    assert first.content == "first"
    assert text_of(rest) == " second" and rest[-1].finish_reason == "stop"
    ((_, _, headers, body),) = seen.requests
    assert headers["Accept"] == "text/event-stream"
    assert json.loads(body)["stream_options"] == {"include_usage": True}


async def test_anthropic_answers_whole_and_streamed(served: tuple[TestServer, Seen]) -> None:
    server, seen = served
    provider = AnthropicProvider(
        name="anthropic", api_key="sk-ant", timeout_s=5.0, base_url=str(server.make_url("/"))
    )
    try:
        whole = await provider.complete(chat_call(model="claude"))
        deltas: list[Delta] = await collect(provider.stream(chat_call(model="claude")))
    finally:
        await provider.close()
    assert whole.content and whole.usage is not None
    assert deltas[-1].finish_reason is not None and deltas[-1].usage is not None
    assert [r[2]["x-api-key"] for r in seen.requests] == ["sk-ant", "sk-ant"]


async def failure(provider: OpenAICompatProvider, model: str, *, stream: bool) -> UpstreamError:
    call = chat_call(model=model)
    try:
        if stream:
            with pytest.raises(UpstreamError) as raised:
                await collect(provider.stream(call))
        else:
            with pytest.raises(UpstreamError) as raised:
                await provider.complete(call)
    finally:
        await provider.close()
    return raised.value


async def test_an_upstream_slower_than_the_timeout_is_a_timeout(
    served: tuple[TestServer, Seen],
) -> None:
    error = await failure(openai_at(served[0], timeout_s=0.2), "slow", stream=False)
    assert (error.status, error.error_class) == (0, "timeout")


async def test_the_timeout_bounds_each_wait_not_a_whole_stream(
    served: tuple[TestServer, Seen],
) -> None:
    provider = openai_at(served[0], timeout_s=0.3)
    try:
        deltas = await collect(provider.stream(chat_call(model="steady")))
    finally:
        await provider.close()
    assert text_of(deltas) == "....." and deltas[-1].finish_reason == "stop"


async def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    provider = OpenAICompatProvider(
        name="openai", base_url=f"http://127.0.0.1:{port}/v1", api_key="k", timeout_s=5.0
    )
    error = await failure(provider, "any", stream=False)
    assert (error.status, error.error_class) == (0, "connect")


async def test_a_connection_dropped_mid_stream_is_a_transport_error(
    served: tuple[TestServer, Seen],
) -> None:
    error = await failure(openai_at(served[0]), "cut", stream=True)
    assert error.error_class == "transport"


async def test_a_rate_limit_keeps_its_retry_after(served: tuple[TestServer, Seen]) -> None:
    error = await failure(openai_at(served[0]), "limited", stream=False)
    assert (error.status, error.error_class, error.retry_after_s) == (429, "rate_limited", 7.0)


async def test_a_body_over_the_limit_is_a_bad_response(served: tuple[TestServer, Seen]) -> None:
    error = await failure(openai_at(served[0], max_response_bytes=1024), "huge", stream=False)
    assert error.error_class == "bad_response"


async def test_connections_are_reused_and_cookies_not_kept(
    served: tuple[TestServer, Seen],
) -> None:
    server, seen = served
    seen.release.set()
    # By name: a cookie jar would keep nothing from an address (127.0.0.1) anyway.
    url = str(server.make_url("/v1")).replace(f"//{server.host}:", "//localhost:")
    provider = OpenAICompatProvider(name="openai", base_url=url, api_key="k", timeout_s=5.0)
    try:
        for _ in range(3):
            await provider.complete(chat_call())
            await collect(provider.stream(chat_call()))
    finally:
        await provider.close()
    assert len(seen.peers) == 6 and len(set(seen.peers)) == 1, seen.peers
    assert [r[2].get("Cookie") for r in seen.requests] == [None] * 6
