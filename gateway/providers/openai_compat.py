"""Any OpenAI-compatible upstream over httpx: base URL and API key from settings."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson

from gateway.providers.base import ChatCall, Completion, Delta, UpstreamError, Usage


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    return Usage(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


def _classify(exc: httpx.HTTPError) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(0, "timeout", f"upstream timed out: {exc}")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError(0, "connect", f"upstream unreachable: {exc}")
    return UpstreamError(0, "transport", f"upstream transport error: {exc}")


def _status_error(response: httpx.Response, body: bytes) -> UpstreamError:
    status = response.status_code
    kind = "http_5xx" if status >= 500 else ("rate_limited" if status == 429 else "http_4xx")
    return UpstreamError(status, kind, f"upstream answered {status}: {body[:200]!r}")


class OpenAICompatProvider:
    """Chat completions against `{base_url}/chat/completions`."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        api_key: str,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout_s,
            transport=transport,
        )

    def _payload(self, call: ChatCall, *, stream: bool) -> bytes:
        payload: dict[str, Any] = {**call.extra, "model": call.upstream_model}
        payload["messages"] = call.messages
        if call.max_tokens is not None:
            payload["max_tokens"] = call.max_tokens
        if call.temperature is not None:
            payload["temperature"] = call.temperature
        if stream:
            payload["stream"] = True
            # Ask for usage so a streamed call is priced from what the provider reports.
            payload["stream_options"] = {"include_usage": True}
        return orjson.dumps(payload)

    async def complete(self, call: ChatCall) -> Completion:
        """One completion; non-2xx and transport failures raise UpstreamError."""
        try:
            response = await self._client.post(
                "/chat/completions",
                content=self._payload(call, stream=False),
                headers={"Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise _classify(exc) from exc
        if response.status_code >= 400:
            raise _status_error(response, response.content)
        try:
            data = orjson.loads(response.content)
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
            finish = choice.get("finish_reason") or "stop"
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise UpstreamError(response.status_code, "bad_response", str(exc)) from exc
        return Completion(content, finish, _usage(data.get("usage")))

    async def stream(self, call: ChatCall) -> AsyncGenerator[Delta, None]:
        """Server-sent events from the upstream, re-yielded as deltas."""
        request = self._client.build_request(
            "POST",
            "/chat/completions",
            content=self._payload(call, stream=True),
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _classify(exc) from exc
        try:
            if response.status_code >= 400:
                raise _status_error(response, await response.aread())
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = orjson.loads(data)
                usage = _usage(chunk.get("usage"))
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    yield Delta(delta.get("content") or "", choice.get("finish_reason"), None)
                if usage is not None:
                    yield Delta("", None, usage)
        except httpx.HTTPError as exc:
            raise _classify(exc) from exc
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(response.status_code, "bad_response", str(exc)) from exc
        finally:
            await response.aclose()

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
