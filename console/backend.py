"""The console's only way to data: the admin API (gateway) and the query API (sink), over
HTTP, with the session's key as the bearer credential. Whatever those APIs refuse, the
console shows as refused; it never reads or writes a topic or the store itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from console.worker_health import WorkerHealth, read_workers

# What the console shows of an answer that is not the API's JSON error.
ERROR_TEXT_CHARS = 300
RELAY_CHUNK_BYTES = 256 * 1024
# The headers of a relayed file the browser gets.
RELAYED_HEADERS = ("Content-Type", "Content-Disposition", "Content-Length", "X-Govledger-Sha256")


class ApiError(Exception):
    """An API answered with an error (or could not be reached: status 502)."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        # The error object's other fields (a pack's lint `lines`, org rule `violations`).
        self.details = details or {}


def _error_of(status: int, body: bytes) -> ApiError:
    """The API's OpenAI-style error (`{"error": {"code", "message", ...}}`), else its text."""
    try:
        error = orjson.loads(body)["error"]
        code = str(error.get("code") or error.get("type"))
        return ApiError(status, code, str(error["message"]), dict(error))
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return ApiError(status, "error", body[:ERROR_TEXT_CHARS].decode(errors="replace"))


@dataclass
class Backend:
    """HTTP calls to the two APIs; one client session for the process."""

    admin_url: str
    query_url: str
    timeout_s: float
    _http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP client (connection pool)."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            await self._http.close()

    async def _call(
        self,
        key: str,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        assert self._http is not None, "Backend.start first"
        headers = {**(headers or {}), "Authorization": f"Bearer {key}"}
        try:
            async with self._http.request(
                method, url, params=params, json=json, data=data, headers=headers
            ) as response:
                body = await response.read()
                if response.status >= 400:
                    raise _error_of(response.status, body)
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(
                502, "unreachable", f"{url.split('?', maxsplit=1)[0]}: {exc!r}"
            ) from None

    async def admin(
        self,
        key: str,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """A JSON call to the admin API."""
        answer = await self._call(
            key, method, self.admin_url + path, params=params, json=body, headers=headers
        )
        return orjson.loads(answer)

    async def query(self, key: str, path: str, params: dict[str, str] | None = None) -> Any:
        """A JSON report of the query API."""
        return orjson.loads(await self._call(key, "GET", self.query_url + path, params=params))

    async def query_post(self, key: str, path: str, body: Any) -> Any:
        """A JSON POST to the query API (an export)."""
        return orjson.loads(await self._call(key, "POST", self.query_url + path, json=body))

    async def sql(
        self, key: str, text: str, parameters: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Rows of a read-only query, its values bound by the engine (`{name:Type}` in the
        text, `param_name` in the URL): no value is ever spliced into the SQL."""
        params = {"default_format": "JSON"}
        params.update({f"param_{name}": value for name, value in (parameters or {}).items()})
        answer = await self._call(
            key, "POST", self.query_url + "/", params=params, data=text.encode()
        )
        rows: list[dict[str, Any]] = orjson.loads(answer)["data"]
        return rows

    async def workers(self, urls: tuple[str, ...], timeout_s: float) -> list[WorkerHealth]:
        """The workers' pipeline figures from their /metrics (no credential: the page is
        the one Prometheus reads)."""
        assert self._http is not None, "Backend.start first"
        return await read_workers(self._http, urls, timeout_s)

    async def relay(
        self, key: str, path: str, request: web.Request, headers: dict[str, str]
    ) -> web.StreamResponse:
        """Stream a file of the query API (an export) to the browser, chunk by chunk,
        with `headers` added (the console's own)."""
        assert self._http is not None, "Backend.start first"
        url = self.query_url + path
        timeout = aiohttp.ClientTimeout(total=None, sock_read=self.timeout_s)
        try:
            async with self._http.get(
                url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
            ) as upstream:
                if upstream.status >= 400:
                    raise _error_of(upstream.status, await upstream.read())
                response = web.StreamResponse(
                    headers={
                        **{
                            h: upstream.headers[h] for h in RELAYED_HEADERS if h in upstream.headers
                        },
                        **headers,
                    }
                )
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(RELAY_CHUNK_BYTES):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(502, "unreachable", f"{path}: {exc!r}") from None
