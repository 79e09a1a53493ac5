"""The HTTP client the provider adapters send with: one POST of bytes to a path under the
upstream's base URL, the answer streamed back. Transport failures, whenever they happen
(connecting, waiting for the head, reading the body), surface as UpstreamError of the
same classes whichever client sends: `timeout`, `connect` or `transport`.

Two clients serve the one interface (UpstreamClient):

- AiohttpUpstream, what the gateway runs: an aiohttp ClientSession. Profiles put httpx's
  request building and connection pool (which scans every pooled connection per
  request) at 35-50 % of the gateway's CPU per call; aiohttp's client costs about a
  fifth of httpx's per call (`python -m bench.gateway_cpu --variant "upstream over TCP"`).
- HttpxUpstream, when the adapter is given an httpx transport: the test doubles are
  httpx.MockTransport handlers, and `httpx.AsyncHTTPTransport` measures the old client.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlencode

import aiohttp
import httpx
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from gateway.providers.base import UpstreamError
from gateway.providers.upstream_http import (
    UPSTREAM_POOL,
    UpstreamClient,
    UpstreamReply,
    classify_transport_error,
)

JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json"}
STREAM_HEADERS: Mapping[str, str] = {**JSON_HEADERS, "Accept": "text/event-stream"}
MAX_CACHED_URLS = 64
"""Request URLs kept parsed per client; the paths a provider posts to are a handful."""


def upstream_client(
    *,
    base_url: str,
    headers: Mapping[str, str],
    params: Mapping[str, str],
    timeout_s: float,
    transport: httpx.AsyncBaseTransport | None,
) -> UpstreamClient:
    """The gateway's aiohttp client, or an httpx one over `transport` when given one."""
    if transport is not None:
        return HttpxUpstream(
            base_url=base_url,
            headers=headers,
            params=params,
            timeout_s=timeout_s,
            transport=transport,
        )
    return AiohttpUpstream(base_url=base_url, headers=headers, params=params, timeout_s=timeout_s)


def classify_aiohttp_error(exc: BaseException) -> UpstreamError:
    """An aiohttp failure with no usable answer, in the classes httpx's get."""
    if isinstance(exc, TimeoutError):  # aiohttp's socket and connect timeouts included
        return UpstreamError(0, "timeout", f"upstream timed out: {exc!r}")
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake
        return UpstreamError(0, "connect", f"upstream unreachable: {exc}")
    return UpstreamError(0, "transport", f"upstream transport error: {exc!r}")


class _AiohttpReply:
    """An aiohttp response as an UpstreamReply."""

    __slots__ = ("_finished", "_response")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._finished = False

    @property
    def status_code(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            # Whatever has arrived, at once: a stream's events are relayed as they come.
            while chunk := await content.readany():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise classify_aiohttp_error(exc) from exc
        self._finished = True

    async def aclose(self) -> None:
        if self._finished:
            self._response.release()  # read to the end: the connection is kept for reuse
        else:
            self._response.close()  # a body left unread: the connection cannot be reused


class AiohttpUpstream:
    """UpstreamClient over an aiohttp ClientSession (made on first use, in the loop).

    Timeouts as httpx's single timeout set them: connecting (waiting for a pooled
    connection included) and each read each get `timeout_s`; there is no total, so a
    long stream lives as long as the upstream keeps sending. Redirects are not followed;
    cookies are neither kept nor sent.
    The proxy (HTTP(S)_PROXY, NO_PROXY) and CA bundle (SSL_CERT_FILE, SSL_CERT_DIR) are
    read from the environment once, as httpx reads them, not on every request.
    """

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        timeout_s: float,
    ) -> None:
        self._base_url = str(URL(base_url.rstrip("/")))
        self._query = f"?{urlencode(dict(params))}" if params else ""
        self._headers = {False: {**headers, **JSON_HEADERS}, True: {**headers, **STREAM_HEADERS}}
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s
        )
        self._urls: dict[str, URL] = {}
        self._session: aiohttp.ClientSession | None = None
        self._proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None
        with contextlib.suppress(LookupError):  # LookupError: no proxy for this URL
            self._proxy, self._proxy_auth = get_env_proxy_for_url(URL(self._base_url))

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = URL(f"{self._base_url}{path}{self._query}", encoded=True)
            if len(self._urls) < MAX_CACHED_URLS:
                self._urls[path] = url
        return url

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=UPSTREAM_POOL.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=UPSTREAM_POOL.keepalive_expiry or 30.0,
            ssl=_ssl_context() if self._base_url.startswith("https:") else True,
        )
        # No cookie jar: one client serves every tenant, so nothing an upstream sets for
        # one call is sent back on another's.
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def post(self, path: str, body: bytes, *, stream: bool) -> UpstreamReply:
        session = self._session
        if session is None or session.closed:
            session = self._session = self._open()
        try:
            response = await session.post(
                self._url(path),
                data=body,
                headers=self._headers[stream],
                allow_redirects=False,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise classify_aiohttp_error(exc) from exc
        return _AiohttpReply(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _ssl_context() -> ssl.SSLContext:
    """The CA bundle httpx verifies with (certifi, or SSL_CERT_FILE / SSL_CERT_DIR)."""
    return httpx.create_ssl_context(trust_env=True)


class _HttpxReply:
    """An httpx response as an UpstreamReply, its transport errors as UpstreamError."""

    __slots__ = ("_response",)

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status_code(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxUpstream:
    """UpstreamClient over an httpx.AsyncClient with the given transport."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        timeout_s: float,
        transport: httpx.AsyncBaseTransport,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=dict(headers),
            params=dict(params),
            timeout=timeout_s,
            limits=UPSTREAM_POOL,
            transport=transport,
        )

    async def post(self, path: str, body: bytes, *, stream: bool) -> UpstreamReply:
        request = self._client.build_request(
            "POST", path, content=body, headers=STREAM_HEADERS if stream else JSON_HEADERS
        )
        try:
            # Streamed so the body is read under a limit instead of whole, whatever its size.
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc) from exc
        return _HttpxReply(response)

    async def aclose(self) -> None:
        await self._client.aclose()
