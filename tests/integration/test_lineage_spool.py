"""Lineage is never lost: while the broker is down the gateway's publisher keeps taking
records (spooling them on disk) and, when the broker is back, sends every record the
broker did not acknowledge exactly once, each key's records in seq order."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiokafka import AIOKafkaConsumer
from openai.types.chat import ChatCompletionMessageParam

from govledger.broker import tansu_binary, wait_for_port
from schemas import codec
from schemas.ids import uuid7
from schemas.kafka import ensure_topics
from schemas.publisher import ChainedPublisher
from schemas.records import LineageRecord
from schemas.spool import Spool
from schemas.topics import LINEAGE
from tests.integration.stack import free_port, running_stack, stack_environ, wait_for
from tests.unit import builders

TENANTS = ("acme", "globex", "initech")


class Outage:
    """Tansu behind a TCP proxy the test can cut and restore: a broker outage as clients
    see it, while the broker keeps its log (as a persistent Kafka would)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.broker_port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_broker(self) -> None:
        self.process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.broker_port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.port}",  # clients always come through the proxy
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=(self.folder / "tansu.log").open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.broker_port, 20)

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _link(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.broker_port)
        self._links.update({client_w, broker_w})

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.transport.abort()

        await asyncio.gather(pipe(client_r, broker_w), pipe(broker_r, client_w))


@pytest.fixture
async def outage(tmp_path: Path) -> AsyncIterator[Outage]:
    running = Outage(tmp_path)
    running.start_broker()
    await running.restore()
    try:
        yield running
    finally:
        await running.cut()
        assert running.process is not None
        running.process.terminate()
        running.process.wait(timeout=10)


def record(i: int) -> LineageRecord:
    return builders.call(
        event_id=uuid7(), tenant_id=TENANTS[i % len(TENANTS)], seq=0, producer_id=""
    )


async def publish_for(publisher: ChainedPublisher, first: int, count: int) -> list[float]:
    """Publish `count` records at about 200/s; how long each publish call took."""
    took = []
    for i in range(first, first + count):
        started = time.perf_counter()
        sealed = await publisher.publish(LINEAGE.name, TENANTS[i % len(TENANTS)], record(i))
        took.append(time.perf_counter() - started)
        assert sealed.seq == i + 1
        await asyncio.sleep(0.005)
    return took


async def read_all(
    bootstrap: str, expected: int, timeout_s: float = 30.0
) -> list[tuple[str, int, bytes]]:
    """(key, seq, bytes) of every lineage record on the broker, in log order per partition."""
    consumer = AIOKafkaConsumer(
        LINEAGE.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    seen: list[tuple[str, int, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(seen) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                seen.extend((m.key.decode(), codec.decode(m.value).seq, m.value) for m in messages)
        await asyncio.sleep(1.0)  # and nothing more arrives
        for messages in (await consumer.getmany(timeout_ms=500)).values():
            seen.extend((m.key.decode(), codec.decode(m.value).seq, m.value) for m in messages)
    finally:
        await consumer.stop()
    return seen


def assert_once_each_in_order(seen: list[tuple[str, int, bytes]], expected: range) -> None:
    """Every expected record is on the broker; each key's records first appear in seq
    order; a record seen twice is the same bytes (a retry the consumers drop by seq and
    the sink by event_id)."""
    first: dict[int, bytes] = {}
    by_key: dict[str, list[int]] = defaultdict(list)
    for key, seq, value in seen:
        if seq in first:
            assert first[seq] == value, f"seq {seq} seen twice with different bytes"
            continue
        first[seq] = value
        by_key[key].append(seq)
    assert sorted(first) == list(expected)
    for key, key_seqs in by_key.items():
        assert key_seqs == sorted(key_seqs), key


async def test_records_the_broker_missed_are_spooled_and_sent_in_order(
    outage: Outage, tmp_path: Path
) -> None:
    await ensure_topics(outage.bootstrap, 2)
    spool = Spool(tmp_path / "spool", "gateway-test", 64 * 1024 * 1024)
    publisher = ChainedPublisher(outage.bootstrap, "gateway-test", spool=spool)
    await publisher.start()
    try:
        await publish_for(publisher, 0, 100)
        await outage.cut()
        during = await publish_for(publisher, 100, 600)  # about 3 s without a broker
        assert publisher.degraded
        assert spool.size_bytes > 0
        # The caller never waits on the broker: publishing stays a local operation. A
        # publish that waited would take up to the outage's 3 s; 1 s leaves room for a busy
        # machine's scheduling (0.5 s seen with four test processes on two cores).
        assert max(during) < 1.0, max(during)

        await outage.restore()
        after = await publish_for(publisher, 700, 100)  # traffic goes on meanwhile
        assert max(after) < 1.0
        deadline = time.monotonic() + 60
        while publisher.degraded or publisher.pending:
            assert time.monotonic() < deadline, "the spool was not sent within 60 s"
            await asyncio.sleep(0.1)
        assert not spool.path.exists()
    finally:
        await publisher.stop()
    assert_once_each_in_order(await read_all(outage.bootstrap, expected=800), range(1, 801))


async def test_a_spool_left_by_a_stopped_process_is_sent_at_the_next_start(
    outage: Outage, tmp_path: Path
) -> None:
    await ensure_topics(outage.bootstrap, 2)
    folder = tmp_path / "spool"
    first = ChainedPublisher(
        outage.bootstrap, "gateway-one", spool=Spool(folder, "gateway-one", 1 << 26)
    )
    await first.start()
    await outage.cut()
    await publish_for(first, 0, 500)  # the broker never sees these
    await first.stop()  # what the broker did not take stays on disk
    assert [p.name for p in Spool.leftovers(folder)] == ["gateway-one.spool"]

    await outage.restore()
    second = ChainedPublisher(
        outage.bootstrap, "gateway-two", spool=Spool(folder, "gateway-two", 1 << 26)
    )
    await second.start()
    await second.stop()
    assert Spool.leftovers(folder) == []
    assert_once_each_in_order(await read_all(outage.bootstrap, expected=500), range(1, 501))


@contextlib.contextmanager
def outage_in_thread(folder: Path) -> Iterator[tuple[Outage, Callable[[Any], Any]]]:
    """The proxied broker, its proxy on an event loop of its own (for sync tests), and a
    function that runs one of its coroutines there."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=30)

    outage = Outage(folder)
    outage.start_broker()
    try:
        run(outage.restore())
        yield outage, run
    finally:
        with contextlib.suppress(Exception):
            run(outage.cut())
        assert outage.process is not None
        outage.process.terminate()
        outage.process.wait(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_calls_during_a_broker_outage_reach_clickhouse_exactly_once(tmp_path: Path) -> None:
    """The whole stack behind one broker that goes away mid-traffic: calls keep being
    answered, and afterwards ClickHouse holds every call once and the wallet reconciles."""
    with outage_in_thread(tmp_path) as (outage, run):
        env = stack_environ(tmp_path / "stack", GOVLEDGER_KAFKA_BOOTSTRAP=outage.bootstrap)
        with running_stack(env) as stack:
            stack.fund("resilient", "10")
            sdk = openai.OpenAI(
                base_url=stack.base_url,
                api_key=stack.create_key("resilient")["key"],
                max_retries=0,
            )
            hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]

            def calls(count: int) -> None:
                for _ in range(count):
                    sdk.chat.completions.create(model="sim-small", messages=hi)

            calls(30)
            run(outage.cut())
            started = time.monotonic()
            calls(40)  # fail-open: answered while lineage goes to the spool
            assert time.monotonic() - started < 20
            run(outage.restore())
            calls(30)

            def recorded() -> list[list[str]] | None:
                rows = stack.sql(
                    "SELECT count(), uniqExact(event_id), sum(cost_nanousd) FROM lineage "
                    "WHERE wallet_id = 'default/resilient'"
                )
                return rows if rows[0][0] == "100" else None

            count, unique, spent = wait_for(recorded, timeout_s=90, every_s=0.5)[0]
            assert (count, unique) == ("100", "100")
            funded = 10 * 10**9
            wait_for(
                lambda: stack.balance_nanousd("resilient") == funded - int(spent),
                timeout_s=60,
            )
