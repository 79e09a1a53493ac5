"""Where a webhook may go: the org's host allow-list and the address checks (pure; the
resolver is passed in). Every URL is hostile until proven otherwise:

- https only, unless the allow-list names the host with `http://`;
- no userinfo (`https://allowed.example@evil.example/`), no fragment, a host of ASCII
  letters, digits, hyphens and dots only (an IDN is refused: list its `xn--` form), no
  trailing dot, no numeric last label (`0x7f.1`, `2130706433`, `127.1` are not names and
  are not canonical addresses either), an IP literal only in its canonical form;
- the host must match the allow-list (`name` exactly, `*.suffix` for names under it);
- every address the name resolves to must be public (not private, loopback, link-local,
  multicast, reserved, unspecified, shared or IPv4-mapped onto one of those), unless the
  host is also in the private-host list. The sender checks again at delivery (a name may
  resolve elsewhere by then: DNS rebinding) and connects only to the addresses it checked.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefusedError(ValueError):
    """A webhook URL the org does not allow, with the reason for the caller."""


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked webhook URL: scheme, lower-case host, port, and whether the host may
    resolve to private addresses."""

    url: str
    scheme: str
    host: str
    port: int
    private_ok: bool


@dataclass(frozen=True, slots=True)
class AllowList:
    """The org's allow-list: exact names, `*.suffix` patterns, and which names may use
    plain http or private addresses."""

    exact: frozenset[str]
    suffixes: tuple[str, ...]
    http_hosts: frozenset[str]
    private_hosts: frozenset[str]

    @classmethod
    def parse(cls, allowed: str, private: str = "") -> AllowList:
        """From GOVLEDGER_NOTIFY_ALLOWED_HOSTS and GOVLEDGER_NOTIFY_PRIVATE_HOSTS."""
        exact: set[str] = set()
        suffixes: list[str] = []
        http_hosts: set[str] = set()
        for raw in (e.strip().lower() for e in allowed.split(",")):
            if not raw:
                continue
            entry = raw
            if entry.startswith("http://"):
                entry = entry.removeprefix("http://").rstrip("/")
                http_hosts.add(entry)
            entry = entry.removeprefix("https://").rstrip("/")
            if entry.startswith("*."):
                suffixes.append(entry[1:])
            else:
                exact.add(entry)
        privates = frozenset(p.strip().lower() for p in private.split(",") if p.strip())
        return cls(frozenset(exact), tuple(suffixes), frozenset(http_hosts), privates)

    def allows(self, host: str) -> bool:
        """Whether the host is on the list."""
        return host in self.exact or any(
            host.endswith(suffix) and len(host) > len(suffix) for suffix in self.suffixes
        )


def _host_of(text: str) -> str:
    """The host, lower-cased and checked to be a DNS name or a canonical IP literal."""
    if not text.isascii():
        raise DestinationRefusedError("host is not ASCII (list an IDN in its xn-- form)")
    host = text.lower()
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise DestinationRefusedError("host is not a valid IPv6 literal") from None
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        if str(address) != host:
            raise DestinationRefusedError("host is an IPv4 address in a non-canonical form")
        return host
    if host.endswith("."):
        raise DestinationRefusedError("host ends with a dot")
    labels = host.split(".")
    if not all(LABEL.match(label) for label in labels) or len(host) > 253:
        raise DestinationRefusedError("host is not a valid DNS name")
    if NUMERIC_LABEL.match(labels[-1]):
        raise DestinationRefusedError("host looks like a numeric address, not a name")
    return host


def destination(url: str, allow: AllowList) -> Destination:
    """The checked destination of a webhook URL; DestinationRefusedError saying why not."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise DestinationRefusedError(f"url must be a string of 1..{MAX_URL_CHARS} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in url):
        raise DestinationRefusedError("url holds whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DestinationRefusedError(f"url does not parse: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise DestinationRefusedError("url must be https")
    if "@" in parts.netloc or parts.username is not None:
        raise DestinationRefusedError("url may not carry user information")
    if parts.fragment:
        raise DestinationRefusedError("url may not carry a fragment")
    raw_host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    host = _host_of(raw_host)
    if not allow.allows(host):
        raise DestinationRefusedError(f"host {host} is not in GOVLEDGER_NOTIFY_ALLOWED_HOSTS")
    if scheme == "http" and host not in allow.http_hosts:
        raise DestinationRefusedError(
            f"url must be https (http is allowed only for hosts listed as http://{host})"
        )
    default_port = 443 if scheme == "https" else 80
    return Destination(url, scheme, host, port or default_port, host in allow.private_hosts)


def public_address(address: IPAddress) -> bool:
    """Whether an address is on the public internet (an IPv4-mapped or 6to4-embedded IPv4
    address is judged as that IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return public_address(embedded)
    return address.is_global and not address.is_multicast


def refused_addresses(addresses: Iterable[str], private_ok: bool) -> list[str]:
    """The resolved addresses a delivery may not connect to; every one must pass, or a name
    that resolves to one public and one private address could be steered to the latter.
    A private-host entry still refuses multicast and unspecified addresses."""
    refused = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            refused.append(text)
            continue
        never = address.is_unspecified or address.is_multicast
        if never or not (private_ok or public_address(address)):
            refused.append(text)
    return refused


def display_url(where: Destination) -> str:
    """What listings and records show of a destination: scheme, host and port, the path
    and query hidden (they may carry a credential, as a Slack webhook URL does)."""
    default_port = 443 if where.scheme == "https" else 80
    port = "" if where.port == default_port else f":{where.port}"
    host = f"[{where.host}]" if ":" in where.host else where.host
    return f"{where.scheme}://{host}{port}/…"
