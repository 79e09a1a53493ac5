"""A raw HTTP/1.1 reply as the tests read it off a socket: for the checks an HTTP client
would hide (headers as sent, pipelining, a connection kept or closed)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def parse_response(raw: bytes) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, body)


async def read_raw(reader: asyncio.StreamReader, timeout_s: float = 5) -> bytes:
    """The next reply on a connection, head and body (by its Content-Length), as sent."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await asyncio.wait_for(reader.readexactly(length), timeout_s)


async def read_response(reader: asyncio.StreamReader, timeout_s: float = 5) -> RawResponse:
    """The next reply on a connection, parsed."""
    return parse_response(await read_raw(reader, timeout_s))
