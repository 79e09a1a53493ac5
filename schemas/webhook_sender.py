"""Sending one webhook request (the I/O edge of notifications, shared by the notifier and
the admin API's route test): POST the body to a checked destination, connecting only to
addresses resolved and checked at this very moment (schemas.webhook_destinations; a name
that now resolves to a private address is refused: DNS rebinding), never following a
redirect, never using a proxy from the environment, within a time limit."""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from schemas.webhook_destinations import AllowList, Destination, refused_addresses

MAX_ERROR_BODY_BYTES = 512


class AddressRefusedError(OSError):
    """The destination's name resolves to an address the org does not allow."""


class CheckedResolver(AbstractResolver):
    """Resolves as the system does, then refuses the whole answer if any address is not
    allowed for that host (all or nothing: a mixed answer is an attack, not a fallback)."""

    def __init__(self, allow: AllowList) -> None:
        self._allow = allow
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The host's addresses, each checked."""
        found = await self._inner.resolve(host, port, family)
        refused = refused_addresses(
            (r["host"] for r in found), host.lower() in self._allow.private_hosts
        )
        if refused or not found:
            raise AddressRefusedError(f"{host} resolves to refused addresses: {', '.join(refused)}")
        return found

    async def close(self) -> None:
        """Release the inner resolver."""
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class Answer:
    """How one request went: the HTTP status (0: none), why it failed ('' if 2xx)."""

    http_status: int
    error: str
    latency_ms: float

    @property
    def delivered(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.http_status < 300


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


class WebhookSender:
    """One HTTP client for every delivery of a process."""

    def __init__(self, allow: AllowList, timeout_s: float) -> None:
        self._allow = allow
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=CheckedResolver(self._allow), use_dns_cache=False, limit=32
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, trust_env=False
            )
        return self._session

    async def post(self, where: Destination, body: bytes, headers: dict[str, str]) -> Answer:
        """POST `body`; a refused address, a connection error or a timeout is an answer
        with status 0, a 3xx is a failure (redirects are not followed)."""
        started = time.monotonic()

        def took() -> float:
            return round((time.monotonic() - started) * 1000, 3)

        # aiohttp does not resolve IP literals: check those here.
        literal = _literal(where.host)
        if literal is not None and refused_addresses([literal], where.private_ok):
            return Answer(0, f"address {literal} is not allowed", took())
        try:
            async with self._client().post(
                where.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    return Answer(status, "", took())
                text = (await response.content.read(MAX_ERROR_BODY_BYTES)).decode(
                    "utf-8", "replace"
                )
                reason = "redirect not followed" if 300 <= status < 400 else "HTTP error"
                return Answer(status, f"{reason} {status}: {text[:200]}", took())
        except AddressRefusedError as exc:
            return Answer(0, str(exc), took())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Answer(0, f"{type(exc).__name__}: {exc}"[:300], took())

    async def close(self) -> None:
        """Close the client."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def sender_kwargs(settings: Any) -> dict[str, Any]:
    """The sender's arguments from NotifySettings."""
    return {
        "allow": AllowList.parse(settings.notify_allowed_hosts, settings.notify_private_hosts),
        "timeout_s": settings.notify_timeout_s,
    }
