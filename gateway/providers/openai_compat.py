"""Any OpenAI-compatible upstream (sent with upstream_client.py): base URL and API key
from settings.

Variants that speak the same API with a different address, auth or body (Azure OpenAI,
Mistral, Ollama) subclass this and override `_path` and `_body`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

import httpx
import orjson

from gateway.providers.base import (
    ApiCall,
    ChatCall,
    Completion,
    Delta,
    UpstreamError,
    Usage,
    choice_texts,
)
from gateway.providers.upstream_client import upstream_client
from gateway.providers.upstream_http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_SSE_EVENT_CHARS,
    fetch_body,
    read_error_body,
    sse_events,
    status_error,
)
from schemas.pricing import openai_usage


def _usage(data: Any) -> Usage | None:
    return openai_usage(data)


def _first_finish(choices: list[Any]) -> str | None:
    for choice in choices:
        if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
            return str(choice["finish_reason"])
    return None


def _choices(data: dict[str, Any], *, required: bool) -> list[Any]:
    choices = data.get("choices")
    if choices is None and not required:
        return []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise TypeError("'choices' is not an array of objects")
    return choices


class OpenAICompatProvider:
    """Chat completions against `{base_url}/chat/completions`.

    `headers` and `params` are added to every request (e.g. another auth header, an API
    version); the limits bound what is held in memory per response. `transport`: an
    httpx transport to send through instead of the gateway's aiohttp client (tests).
    """

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        api_key: str,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_chars: int = DEFAULT_MAX_SSE_EVENT_CHARS,
    ) -> None:
        assert max_response_bytes > 0 and max_event_chars > 0, "limits must be positive"
        self.name = name
        self._max_response_bytes = max_response_bytes
        self._max_event_chars = max_event_chars
        all_headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        all_headers.update(headers or {})
        self._client = upstream_client(
            base_url=base_url,
            headers=all_headers,
            params=params or {},
            timeout_s=timeout_s,
            transport=transport,
        )

    def _path(self, call: ChatCall) -> str:
        """Where the call goes, relative to the base URL; may raise UpstreamError."""
        del call
        return "/chat/completions"

    def _body(self, call: ChatCall, *, stream: bool) -> dict[str, Any]:
        """The request body as the upstream expects it: the caller's body as sent, with
        the upstream's model name, the messages as the policy chain left them and, on a
        stream, a request for usage (the caller gets that chunk only when it asked)."""
        payload: dict[str, Any] = dict(call.body)
        if not payload:  # a call built without a caller's body (tests, other adapters)
            payload = dict(call.extra)
            if call.max_tokens is not None:
                payload["max_tokens"] = call.max_tokens
            if call.temperature is not None:
                payload["temperature"] = call.temperature
        payload["model"] = call.upstream_model
        payload["messages"] = call.messages
        if stream:
            payload["stream"] = True
            options = payload.get("stream_options")
            # Ask for usage so a streamed call is priced from what the provider reports.
            payload["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return payload

    async def complete(self, call: ChatCall) -> Completion:
        """One completion; non-2xx and transport failures raise UpstreamError."""
        body = orjson.dumps(self._body(call, stream=False))
        status, content = await fetch_body(
            self._client, self._path(call), body, limit=self._max_response_bytes
        )
        try:
            data = orjson.loads(content)
            if not isinstance(data, dict):
                raise TypeError("the reply is not a JSON object")
            choices = _choices(data, required=True)
            if not choices:
                raise TypeError("the reply has no choices")
            usage = _usage(data.get("usage"))
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise UpstreamError(status, "bad_response", str(exc)) from exc
        text = choice_texts(choices, "message")
        return Completion(text, _first_finish(choices) or "stop", usage, data)

    async def stream(self, call: ChatCall) -> AsyncGenerator[Delta, None]:
        """Server-sent events from the upstream, re-yielded as deltas."""
        chunks = self._chunks(self._path(call), self._body(call, stream=True))
        async with aclosing(chunks):  # the response is closed however the stream ends
            async for chunk in chunks:
                try:
                    choices = _choices(chunk, required=False)
                    text = choice_texts(choices, "delta")
                    usage = _usage(chunk.get("usage"))
                except (AttributeError, TypeError) as exc:
                    raise UpstreamError(200, "bad_response", str(exc)) from exc
                yield Delta(text, _first_finish(choices), usage, chunk)

    async def _chunks(
        self, path: str, body: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Each JSON chunk of a server-sent event stream, up to [DONE]."""
        response = await self._client.post(path, orjson.dumps(body), stream=True)
        try:
            if response.status_code >= 400:
                raise status_error(response, await read_error_body(response))
            async for event in sse_events(response, max_event_chars=self._max_event_chars):
                if event.data.strip() == "[DONE]":
                    break
                chunk = orjson.loads(event.data)
                if not isinstance(chunk, dict):
                    raise UpstreamError(response.status_code, "bad_response", "chunk not an object")
                yield chunk
        except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
            raise UpstreamError(response.status_code, "bad_response", str(exc)) from exc
        finally:
            await response.aclose()

    def _api_path(self, call: ApiCall) -> str:
        """Where a call to another endpoint goes, relative to the base URL."""
        return "/" + call.api

    def _api_body(self, call: ApiCall, *, stream: bool) -> dict[str, Any]:
        """The caller's body as sent, with the upstream's model name and, on a stream, a
        request for usage."""
        payload = {**call.body, "model": call.upstream_model}
        # The Responses API reports usage in its terminal event, and has no include_usage.
        if stream and call.api != "responses":
            options = payload.get("stream_options")
            payload["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return payload

    async def call_api(self, call: ApiCall) -> dict[str, Any]:
        """The upstream's whole reply to a call to another endpoint (ApiProvider)."""
        body = orjson.dumps(self._api_body(call, stream=False))
        status, content = await fetch_body(
            self._client, self._api_path(call), body, limit=self._max_response_bytes
        )
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(status, "bad_response", str(exc)) from exc
        if not isinstance(data, dict):
            raise UpstreamError(status, "bad_response", "the reply is not a JSON object")
        return data

    def stream_api(self, call: ApiCall) -> AsyncGenerator[dict[str, Any], None]:
        """Each chunk of a streamed call to another endpoint (ApiProvider)."""
        return self._chunks(self._api_path(call), self._api_body(call, stream=True))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
