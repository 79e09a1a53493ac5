"""What doctor reads from the running parts, behind one protocol (`Probes`) so the checks
run as well on answers a test feeds them (tests/component/test_doctor.py). `LiveProbes`
asks the broker (Kafka admin calls), the services (HTTP) and the store (SQL through the
query API, as `govledger sql` and `audit verify` read it: for the embedded stack the sink
process owns the engine)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from govledger.doctor.checks import FileStat, GroupView, PartitionOffsets, TopicView
from schemas.kafka_security import KafkaSecurity

MAX_BODY_BYTES = 65_536  # of an HTTP answer doctor looks at
MAX_STALL_LOOKUPS = 64  # lagging partitions whose oldest record's age is fetched
FETCH_WAIT_S = 1.0  # longest wait for those records


class ProbeError(Exception):
    """A part could not be asked, with why (no secret in the text)."""


class NotAllowedError(ProbeError):
    """The broker refused the question to this user (ACLs), not a fault of the part."""


@dataclasses.dataclass(frozen=True, slots=True)
class HttpReply:
    """An HTTP answer: status, body (bounded), `Date` header, and our clock around it."""

    status: int
    body: bytes
    date: str
    sent_ms: int
    received_ms: int


class Probes(Protocol):
    """Everything doctor reads from outside its own code."""

    async def topics(self, names: Sequence[str]) -> dict[str, TopicView]:
        """Those of `names` that exist on the broker (never creates one)."""
        ...

    async def group(self, group_id: str, topics: Sequence[str]) -> GroupView:
        """A consumer group: its state, members and positions on `topics`."""
        ...

    async def get(self, url: str) -> HttpReply:
        """GET a URL; ProbeError when nothing answers."""
        ...

    async def query(self, sql: str) -> list[list[Any]]:
        """Rows of a read through the query API."""
        ...

    def stat(self, path: Path) -> FileStat | None:
        """A file's mode and owner; None when it does not exist."""
        ...

    def now_ms(self) -> int:
        """This host's clock."""
        ...


def wall_ms() -> int:
    """Epoch milliseconds (doctor compares clocks; the pure checks never read one)."""
    return time.time_ns() // 1_000_000


class LiveProbes:
    """Probes of a running stack. One admin client and one group-less consumer, started
    on first use and shared by the checks; `close` at the end."""

    def __init__(
        self,
        bootstrap: str,
        security: KafkaSecurity,
        query_url: str,
        token: str | None,
        http_timeout_s: float,
    ) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._query_url = query_url
        self._token = token
        self._http_timeout_s = http_timeout_s
        self._lock = asyncio.Lock()
        self._admin: Any = None
        self._consumer: Any = None
        self._http: Any = None

    async def _kafka(self) -> tuple[Any, Any]:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import KafkaError

        from schemas.kafka_security import client_options

        async with self._lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self._bootstrap,
                    client_id="govledger-doctor",
                    **client_options(self._security),
                )
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self._bootstrap,
                    client_id="govledger-doctor",
                    enable_auto_commit=False,
                    **client_options(self._security),
                )
                try:
                    await admin.start()
                    await consumer.start()
                except (KafkaError, OSError) as exc:
                    await admin.close()
                    await consumer.stop()
                    raise ProbeError(
                        f"cannot reach the broker at {self._bootstrap} ({exc.__class__.__name__})"
                    ) from None
                self._admin, self._consumer = admin, consumer
            return self._admin, self._consumer

    async def _existing(self, names: Sequence[str]) -> list[str]:
        # Listed first: on some brokers (Tansu) describing a topic creates it.
        admin, _ = await self._kafka()
        listed = set(await _allowed(admin.list_topics()))
        return [n for n in names if n in listed]

    async def topics(self, names: Sequence[str]) -> dict[str, TopicView]:
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        admin, _ = await self._kafka()
        existing = await self._existing(names)
        if not existing:
            return {}
        described = await _allowed(admin.describe_topics(existing))
        partitions = {t["topic"]: len(t["partitions"]) for t in described}
        policies: dict[str, str] = {}
        resources = [
            # Every config (`configs=None`): Tansu drops the connection on a named one.
            ConfigResource(ConfigResourceType.TOPIC, name)
            for name in existing
        ]
        for response in await _allowed(admin.describe_configs(resources)):
            for resource in response.resources:
                for entry in resource[4]:
                    if entry[0] == "cleanup.policy" and entry[1] is not None:
                        policies[resource[3]] = entry[1]
        return {name: TopicView(partitions.get(name, 0), policies.get(name)) for name in existing}

    async def group(self, group_id: str, topics: Sequence[str]) -> GroupView:
        from aiokafka import TopicPartition

        admin, consumer = await self._kafka()
        state, members = "", 0
        for response in await _allowed(admin.describe_consumer_groups([group_id])):
            for described in response.groups:
                if described[1] == group_id:
                    state, members = str(described[2]), len(described[5])
        existing = await self._existing(topics)
        described = await _allowed(admin.describe_topics(existing)) if existing else []
        partitions = [
            TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]
        ]
        if not partitions:
            return GroupView(group_id, state, members, {})
        committed = await _allowed(
            admin.list_consumer_group_offsets(group_id, partitions=partitions)
        )
        # -1: the group has committed nothing there yet; it reads from the beginning
        # (the groups start at the earliest offset), so that is its position.
        consumed = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
        fresh = [tp for tp in partitions if tp not in consumed]
        if fresh:
            consumed.update(await _allowed(consumer.beginning_offsets(fresh)))
        ends = await _allowed(consumer.end_offsets(list(consumed))) if consumed else {}
        behind = [tp for tp, offset in consumed.items() if ends.get(tp, 0) > offset]
        oldest = await self._oldest_uncommitted(consumer, behind[:MAX_STALL_LOOKUPS], consumed)
        return GroupView(
            group_id,
            state,
            members,
            {
                f"{tp.topic}[{tp.partition}]": PartitionOffsets(
                    offset, ends.get(tp, 0), oldest.get(tp)
                )
                for tp, offset in sorted(consumed.items())
            },
        )

    async def _oldest_uncommitted(
        self, consumer: Any, behind: list[Any], committed: dict[Any, int]
    ) -> dict[Any, int]:
        """When each lagging partition's first uncommitted record was written."""
        if not behind:
            return {}
        async with self._lock:  # the one consumer's assignment is ours for a moment
            consumer.assign(behind)
            for tp in behind:
                consumer.seek(tp, committed[tp])
            found: dict[Any, int] = {}
            deadline = time.monotonic() + FETCH_WAIT_S
            while len(found) < len(behind) and time.monotonic() < deadline:
                batches = await _allowed(consumer.getmany(timeout_ms=200, max_records=len(behind)))
                for tp, records in batches.items():
                    if records and tp not in found:
                        found[tp] = int(records[0].timestamp)
            consumer.assign([])
            return found

    async def _client(self) -> Any:
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._http_timeout_s)
        return self._http

    async def get(self, url: str) -> HttpReply:
        import httpx

        client = await self._client()
        sent_ms = wall_ms()
        try:
            response = await client.get(url)
        except httpx.HTTPError as exc:
            raise ProbeError(f"no answer from {url}: {exc.__class__.__name__}") from None
        received_ms = wall_ms()
        return HttpReply(
            response.status_code,
            response.content[:MAX_BODY_BYTES],
            response.headers.get("date", ""),
            sent_ms,
            received_ms,
        )

    async def query(self, sql: str) -> list[list[Any]]:
        import httpx

        if self._token is None:
            raise ProbeError("no admin token to read the store with")
        client = await self._client()
        try:
            response = await client.post(
                f"{self._query_url}/",
                content=f"{sql} FORMAT JSONCompactEachRow".encode(),
                headers={"Authorization": f"Bearer {self._token}"},
            )
        except httpx.HTTPError as exc:
            raise ProbeError(
                f"cannot reach the query API at {self._query_url}: {exc.__class__.__name__}"
            ) from None
        if response.status_code >= 400:
            raise ProbeError(
                f"the query API answered {response.status_code}: {response.text[:300]}"
            )
        return [orjson.loads(line) for line in response.content.splitlines() if line.strip()]

    def stat(self, path: Path) -> FileStat | None:
        try:
            found = path.stat()
        except FileNotFoundError:
            return None
        return FileStat(found.st_mode, found.st_uid)

    def now_ms(self) -> int:
        return wall_ms()

    async def close(self) -> None:
        """Stop the clients that were started."""
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()
        if self._http is not None:
            await self._http.aclose()


async def _allowed(call: Any) -> Any:
    """Await a Kafka call; an ACL refusal becomes NotAllowedError, another Kafka error a
    ProbeError."""
    from aiokafka.errors import (
        ClusterAuthorizationFailedError,
        GroupAuthorizationFailedError,
        KafkaError,
        TopicAuthorizationFailedError,
    )

    try:
        return await call
    except (
        ClusterAuthorizationFailedError,
        GroupAuthorizationFailedError,
        TopicAuthorizationFailedError,
    ) as exc:
        raise NotAllowedError(f"the broker refused this user: {exc.__class__.__name__}") from None
    except KafkaError as exc:
        raise ProbeError(f"the broker failed the call: {exc!r}") from None


def my_uid() -> int:
    """This process's user id."""
    return os.getuid()
