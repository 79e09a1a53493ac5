"""The sink against the real broker and the real ClickHouse engine: every event lands
once, whatever is redelivered, and offsets move only after the insert."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import authn, codec
from schemas.ids import new_producer_id, now_ms, uuid7
from schemas.kafka import make_producer
from schemas.publisher import ChainedPublisher
from schemas.records import LineageRecord, StoredRange
from schemas.settings import SinkSettings, load
from schemas.topics import ALERTS, CONTROL, DLQ, LINEAGE, RESENT_HEADER
from sinks.consume_process import ConsumeProcess
from sinks.prepare import Prepared, RecentIds
from sinks.store import Store
from sinks.writer import CONSUMER_GROUP, SinkWriter
from tests.integration.sink_support import WritingSink, embedded_broker, sink_writers

pytestmark = pytest.mark.integration

KEYRING = authn.Keyring([bytes(range(32))])
TOPIC_OF_ROLE = {"gateway": LINEAGE.name, "admin": CONTROL.name, "processor": ALERTS.name,
                 "sink": DLQ.name}  # fmt: skip
"""Where a test sends a record of each role's (the sink stores by record type)."""


@pytest.fixture(scope="module", autouse=True)
def keyring() -> None:
    # The sink verifies every record with the process's keyring; the tests sign with it.
    authn.install(KEYRING)


def signed(value: bytes) -> tuple[str, list[tuple[str, bytes]]]:
    """The topic a registered producer would send these bytes to, and its auth header
    (bytes that are no record are signed as a gateway's: authentic, still refused)."""
    try:
        role = min(authn.ROLES_BY_TYPE[codec.schema_of(value).record_type])
        producer_id = authn.producer_id_of(value)
    except codec.DecodeError:
        role, producer_id = "gateway", "gateway-test"
    return TOPIC_OF_ROLE[role], KEYRING.credential(role, producer_id).headers(value)


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with embedded_broker(tmp_path_factory.mktemp("tansu")) as address:
        yield address


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    # chDB allows one engine per process: this module owns the only one in the test run.
    path: Path = tmp_path_factory.mktemp("chdb") / "store"
    store = Store(f"chdb://{path}")
    store.migrate()
    yield store
    store.close()


@pytest.fixture
async def writer_factory(bootstrap: str, store: Store) -> AsyncIterator[WritingSink]:
    settings = load(
        SinkSettings,
        environ={},
        kafka_bootstrap=bootstrap,
        sink_flush_ms=200,
        # Each writer joins the group in 1 s (half of it, rounded up to a second, on Tansu).
        kafka_session_timeout_ms=2000,
    )
    async with sink_writers(settings, store) as make:
        yield make


def lineage(tenant: str, chain: codec.HashChain, cost: int) -> bytes:
    record = LineageRecord(
        event_id=uuid7(),
        event_type=LineageRecord.event_type_name,
        occurred_at=now_ms(),
        tenant_id=tenant,
        producer_id="",
        seq=0,
        trace_id="0" * 32,
        span_id="0" * 16,
        team_id="team",
        key_id="key_1",
        wallet_id=f"{tenant}/team",
        region="local",
        model_requested="sim-small",
        model_selected="sim-small",
        provider="sim",
        selection_reason="catalogue",
        decision="allowed",
        prompt_tokens=10,
        completion_tokens=20,
        usage_source="reported",
        cost_nanousd=cost,
        reserved_nanousd=cost,
        latency_ms=1.0,
        gateway_overhead_ms=0.5,
        http_status=200,
        stream=False,
        request_sha256="0" * 64,
    )
    return codec.encode(chain.seal(record))


async def produce(bootstrap: str, values: list[tuple[str, bytes]]) -> None:
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        for key, value in values:
            topic, headers = signed(value)
            await producer.send(topic, value, key=key.encode(), headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


def counts(store: Store, tenant: str) -> tuple[int, int, int]:
    rows = store.query_rows(
        "SELECT count(), uniqExact(event_id), sum(cost_nanousd) FROM lineage "
        "WHERE tenant_id = %(tenant)s",
        {"tenant": tenant},
    )
    return int(rows[0][0]), int(rows[0][1]), int(rows[0][2])


async def committed(bootstrap: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=CONSUMER_GROUP)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(LINEAGE.name, p)) for p in (0, 1)}
    finally:
        await consumer.stop()


async def write_until(writer: SinkWriter, store: Store, tenant: str, rows: int) -> None:
    for _ in range(100):
        await writer.step(200)
        if counts(store, tenant)[0] >= rows:
            return
    raise AssertionError(f"sink did not write {rows} rows for {tenant}")


async def test_batch_redelivered_after_a_crash_leaves_no_duplicates(
    bootstrap: str, store: Store, writer_factory: object
) -> None:
    chain = codec.HashChain(new_producer_id("gateway"))
    values = [("crash", lineage("crash", chain, cost=7 + i)) for i in range(300)]
    await produce(bootstrap, values)
    first = await writer_factory()  # type: ignore[operator]
    polled: dict[TopicPartition, list[object]] = {}
    while sum(len(m) for m in polled.values()) < 300:
        for tp, messages in (await first._consumer.getmany(timeout_ms=500)).items():
            polled.setdefault(tp, []).extend(messages)
    await first.write(polled)  # inserted, then "crashed" before committing offsets
    assert counts(store, "crash") == (300, 300, sum(7 + i for i in range(300)))
    assert all(offset is None for offset in (await committed(bootstrap)).values())
    await first.stop()

    second = await writer_factory()  # type: ignore[operator]
    for _ in range(100):  # the redelivery comes once the group has rebalanced
        await second.step(300)
        if sum(o or 0 for o in (await committed(bootstrap)).values()) >= 300:
            break
    else:
        raise AssertionError("the second writer never committed the redelivered batch")
    assert counts(store, "crash") == (300, 300, sum(7 + i for i in range(300)))


async def test_records_written_twice_by_a_producer_retry_land_once(
    bootstrap: str, store: Store, writer_factory: object
) -> None:
    writer = await writer_factory()  # type: ignore[operator]
    chain = codec.HashChain(new_producer_id("gateway"))
    values = [("retry", lineage("retry", chain, cost=100)) for _ in range(50)]
    await produce(bootstrap, values + values[10:20])
    await write_until(writer, store, "retry", 50)
    for _ in range(3):
        await writer.step(200)
    assert counts(store, "retry") == (50, 50, 5_000)


async def test_undecodable_record_is_dead_lettered_not_fatal(
    bootstrap: str, store: Store, writer_factory: object
) -> None:
    writer = await writer_factory()  # type: ignore[operator]
    chain = codec.HashChain(new_producer_id("gateway"))
    unknown_schema = b"\xc3\x01" + bytes(8) + b"body"
    await produce(bootstrap, [("dlq", unknown_schema), ("dlq", lineage("dlq", chain, 1))])
    await write_until(writer, store, "dlq", 1)
    assert writer.stats.dead_lettered >= 1
    for _ in range(10):
        await writer.step(200)
        rows = store.query_rows(
            "SELECT consumer, error FROM dead_letters WHERE origin_topic = %(topic)s",
            {"topic": LINEAGE.name},
        )
        if rows:
            break
    assert rows == [("sink", "unknown schema fingerprint 0000000000000000")]


async def test_every_record_type_lands_in_its_table_with_its_exact_bytes(
    bootstrap: str, store: Store, writer_factory: object
) -> None:
    from sinks.tables import TABLE_FOR
    from tests.unit import builders

    chain = codec.HashChain(new_producer_id("every-type"))
    # Every type but the sinks' own notices (RecordsStored), which are not stored.
    sealed = [chain.seal(r) for r in builders.one_of_each() if type(r) in TABLE_FOR]
    await produce(bootstrap, [(r.tenant_id or "-", codec.encode(r)) for r in sealed])
    writer = await writer_factory()  # type: ignore[operator]

    def landed() -> list[str]:
        missing = []
        for record in sealed:
            rows = store.query_rows(
                f"SELECT hex(raw) FROM {TABLE_FOR[type(record)]} WHERE event_id = %(id)s",
                {"id": record.event_id},
            )
            if [list(row) for row in rows] != [[codec.encode(record).hex().upper()]]:
                missing.append(f"{type(record).__name__}: {rows!r}")
        return missing

    for _ in range(100):
        await writer.step(200)
        if not landed():
            break
    assert landed() == []
    window = next(r for r in sealed if type(r).__name__ == "SlaWindow")
    rows = store.query_rows(
        "SELECT latency_ms.bucket_counts, gateway_overhead_ms.sum_thousandths, errors "
        "FROM sla_windows WHERE event_id = %(id)s",
        {"id": window.event_id},
    )
    assert [list(row) for row in rows] == [
        [
            list(window.latency_ms.bucket_counts),  # type: ignore[attr-defined]
            window.gateway_overhead_ms.sum_thousandths,  # type: ignore[attr-defined]
            window.errors,  # type: ignore[attr-defined]
        ]
    ]


async def test_a_record_an_outbox_sends_again_long_after_it_was_stored_lands_once(
    bootstrap: str, store: Store, writer_factory: object
) -> None:
    chain = codec.HashChain(new_producer_id("gateway"))
    other = codec.HashChain(new_producer_id("gateway"))
    stored_once = [("resent", lineage("resent", chain, cost=1)) for _ in range(5)]
    lost = ("resent", lineage("resent", other, cost=1_000))
    writer = await writer_factory()  # type: ignore[operator]
    await produce(bootstrap, stored_once)
    await write_until(writer, store, "resent", 5)
    # Long after: the writer's window of recent ids (per partition) has moved past them.
    writer._recent = RecentIds(1)
    # The broker lost another gateway's record, which its outbox sends again first;
    # behind it this gateway's outbox sends again the five stored long ago (their
    # confirmation was lost with the broker). The batch's first record is absent, so
    # the check of a partition's first records looks no further: only the resent mark
    # makes the sink look the five up.
    notified: list[StoredRange] = []

    async def on_committed(ranges: list[StoredRange]) -> None:
        notified.extend(ranges)

    writer.on_committed = on_committed
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        for key, value in [lost, *stored_once]:
            topic, headers = signed(value)
            resent = [*headers, (RESENT_HEADER, b"1")]
            await producer.send(topic, value, key=key.encode(), headers=resent)
        await producer.flush()
    finally:
        await producer.stop()
    await write_until(writer, store, "resent", 6)
    for _ in range(3):
        await writer.step(200)
    assert counts(store, "resent") == (6, 6, 1_005)
    # What the sink tells the outboxes: all six are in the store (told once or, for the
    # five first stored while the hook was being set, twice: a notice says what is stored).
    told = {
        (r.stored_producer_id, seq) for r in notified for seq in range(r.first_seq, r.last_seq + 1)
    }
    assert told == {(other.producer_id, 1)} | {(chain.producer_id, seq) for seq in range(1, 6)}


class CrashesAfterFirstStore(SinkWriter):
    """The owner's writer; `crash` runs once the first batch is stored (before the
    consume process hears of it, so before any offset is committed)."""

    crash: Callable[[], None] | None = None

    async def store_prepared(self, prepared: Prepared) -> None:
        await super().store_prepared(prepared)
        if self.crash is not None:
            crash, self.crash = self.crash, None
            crash()


async def test_the_consume_process_feeds_the_owner_once_even_if_it_dies_uncommitted(
    bootstrap: str, store: Store
) -> None:
    settings = load(
        SinkSettings,
        environ={},
        kafka_bootstrap=bootstrap,
        sink_flush_ms=200,
        kafka_session_timeout_ms=2000,
    )
    chain = codec.HashChain(new_producer_id("gateway"))
    values = [("fed", lineage("fed", chain, cost=3 + i)) for i in range(200)]
    unknown_schema = b"\xc3\x01" + bytes(8) + b"fed"
    # A producer retry (ten records twice) and a record the sink cannot take.
    await produce(bootstrap, [*values, *values[:10], ("fed", unknown_schema)])
    expected = (200, 200, sum(3 + i for i in range(200)))

    def refused() -> set[str]:
        rows = store.query_rows(
            "SELECT error FROM dead_letters WHERE payload = %(payload)s",
            {"payload": unknown_schema},
        )
        return {str(row[0]) for row in rows}

    dlq = ChainedPublisher(bootstrap, new_producer_id("sink"), role="sink")
    await dlq.start()
    # The module's earlier tests share the group: what they committed is the baseline.
    before = await committed(bootstrap)
    try:
        # The first consume process dies once the owner stored its first batch.
        writer = CrashesAfterFirstStore(settings, store, dlq)
        first = ConsumeProcess(settings, writer)
        await first.start()
        writer.crash = first._process.kill  # type: ignore[union-attr]
        with pytest.raises(RuntimeError, match="consume process exited"):
            await asyncio.wait_for(first.run(), 60)
        await first.stop()
        assert counts(store, "fed")[0] > 0
        assert await committed(bootstrap) == before  # nothing committed for the stored batch

        # The next one gets the same records again; the owner stores none of them twice.
        second = ConsumeProcess(settings, SinkWriter(settings, store, dlq))
        await second.start()
        running = asyncio.create_task(second.run())
        try:
            for _ in range(300):
                now = await committed(bootstrap)
                done = sum((now[p] or 0) - (before[p] or 0) for p in now)
                if done >= len(values) + 11 and counts(store, "fed") == expected and refused():
                    break
                await asyncio.sleep(0.1)
            assert counts(store, "fed") == expected
            assert refused() == {"unknown schema fingerprint 0000000000000000"}
            await second.request_stop()
            await asyncio.wait_for(running, 30)
        finally:
            running.cancel()
            await second.stop()
    finally:
        await dlq.stop()
