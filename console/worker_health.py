"""The workers' side of the Overview's pipeline health: commit stalls, the Faust agents' and
the intake's consumer lag, each processor's fold lag and dead letters, read from each
worker's Prometheus `/metrics` (streams/metrics.py, docs/metrics.md) with
prometheus_client's own parser. The worker logs nowhere else that its commits stall, and
its metrics page is what Prometheus reads too, so this is the least fragile source: the
names are the ones docs/metrics.md promises. A worker that does not answer, or answers
something that is not the exposition format, is shown as unknown, never as 0."""

from __future__ import annotations

import asyncio
import socket
import urllib.parse
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

# A worker's page is a few kilobytes; more than this is not a page we read.
MAX_METRICS_BYTES = 4 * 1024 * 1024
# `dns+http://name:port/metrics`: every IPv4 address the name resolves to, as Prometheus's
# dns_sd (type A) finds a scaled compose service's replicas; at most this many.
DNS_PREFIX = "dns+"
MAX_RESOLVED_WORKERS = 64
STALLS = "govledger_commit_stalls_total"
LAG = "govledger_consumer_lag"
FOLD_LAG = "govledger_processor_fold_lag_seconds"
DEAD_LETTERS = "govledger_dead_letters_total"


@dataclass
class WorkerHealth:
    """What one worker's page says (`known` False: it did not answer; `error` says why)."""

    url: str
    known: bool = True
    error: str = ""
    commit_stalls: int = 0
    dead_letters: int = 0
    # (service, topic) -> records behind, summed over the partitions the worker holds.
    consumer_lag: dict[tuple[str, str], int] = field(default_factory=dict)
    # processor -> seconds.
    fold_lag_s: dict[str, float] = field(default_factory=dict)


def parse_worker_metrics(url: str, text: str) -> WorkerHealth:
    """The figures of one worker's exposition text; ValueError if it is not one."""
    health = WorkerHealth(url)
    lag: dict[tuple[str, str], int] = defaultdict(int)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == STALLS:
                health.commit_stalls += int(sample.value)
            elif sample.name == DEAD_LETTERS:
                health.dead_letters += int(sample.value)
            elif sample.name == LAG:
                labels = sample.labels
                lag[(labels.get("service", ""), labels.get("topic", ""))] += int(sample.value)
            elif sample.name == FOLD_LAG:
                health.fold_lag_s[sample.labels.get("processor", "")] = float(sample.value)
    health.consumer_lag = dict(sorted(lag.items()))
    health.fold_lag_s = dict(sorted(health.fold_lag_s.items()))
    return health


async def read_worker(http: aiohttp.ClientSession, url: str, timeout_s: float) -> WorkerHealth:
    """One worker's figures, or an unknown one saying why."""
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            if response.status != 200:
                return WorkerHealth(url, known=False, error=f"HTTP {response.status}")
            body = await response.content.read(MAX_METRICS_BYTES + 1)
        if len(body) > MAX_METRICS_BYTES:
            return WorkerHealth(url, known=False, error="the page is too large")
        return parse_worker_metrics(url, body.decode())
    except (aiohttp.ClientError, TimeoutError) as exc:
        return WorkerHealth(url, known=False, error=type(exc).__name__)
    except (ValueError, IndexError, KeyError, UnicodeDecodeError):
        return WorkerHealth(url, known=False, error="not a Prometheus metrics page")


async def resolved(url: str, timeout_s: float) -> list[str]:
    """The URL itself, or for `dns+` one URL per IPv4 address of its host (sorted);
    OSError or TimeoutError when the name does not resolve, ValueError for a bad port."""
    if not url.startswith(DNS_PREFIX):
        return [url]
    parsed = urllib.parse.urlsplit(url.removeprefix(DNS_PREFIX))
    if not parsed.hostname:
        raise OSError("no host name")
    found = await asyncio.wait_for(
        asyncio.get_running_loop().getaddrinfo(
            parsed.hostname, parsed.port, family=socket.AF_INET, type=socket.SOCK_STREAM
        ),
        timeout_s,
    )
    addresses = sorted({str(info[4][0]) for info in found})[:MAX_RESOLVED_WORKERS]
    port = f":{parsed.port}" if parsed.port else ""
    return [parsed._replace(netloc=f"{address}{port}").geturl() for address in addresses]


async def _read_named(
    http: aiohttp.ClientSession, url: str, timeout_s: float
) -> list[WorkerHealth]:
    try:
        urls = await resolved(url, timeout_s)
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a port out of range
        return [WorkerHealth(url, known=False, error=f"no address: {type(exc).__name__}")]
    if not urls:
        return [WorkerHealth(url, known=False, error="no address")]
    return list(await asyncio.gather(*(read_worker(http, u, timeout_s) for u in urls)))


async def read_workers(
    http: aiohttp.ClientSession, urls: Sequence[str], timeout_s: float
) -> list[WorkerHealth]:
    """Every configured worker's figures (each replica behind a `dns+` name), read at once."""
    named = await asyncio.gather(*(_read_named(http, url, timeout_s) for url in urls))
    return [health for found in named for health in found]
