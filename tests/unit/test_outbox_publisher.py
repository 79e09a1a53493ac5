"""OutboxPublisher against a broker double: what it resends, when, in which order; the
sink's stored notices and the gateway's feed that reads them back."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from confluent_kafka import Message

from schemas import authn, codec
from schemas.confirmations import ConfirmationFeed
from schemas.ids import uuid7
from schemas.outbox import Outbox
from schemas.outbox_publisher import OutboxPublisher
from schemas.records import RecordsStored, StoredRange
from schemas.spool import Frame, Spool
from schemas.topics import LINEAGE, RESENT_HEADER, STORED, WALLET_STATE
from sinks.prepare import RecentIds, prepare
from tests.unit import builders

PRODUCER = "gateway-outbox-unit"


class BrokerDouble:
    """An aiokafka producer's surface over an in-memory log; `down` fails every send,
    `lose()` is a broker that comes back empty."""

    def __init__(self) -> None:
        self.log: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []
        self.down = False

    async def start(self) -> None:
        pass

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Any = None,
        prompt: bool = True,
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.down:
            future.set_exception(ConnectionError("broker down"))
        else:
            self.log.append((topic, value, list(headers or [])))
            future.set_result(SimpleNamespace(topic=topic, partition=0, offset=len(self.log) - 1))
        return future

    async def flush(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def lose(self) -> None:
        self.log.clear()

    def seqs(self, *, resent: bool | None = None) -> list[int]:
        return [
            codec.read_envelope(value).seq
            for topic, value, headers in self.log
            if topic == "govledger.lineage"
            and (resent is None or resent == any(k == RESENT_HEADER for k, _ in headers))
        ]


@pytest.fixture(autouse=True)
def fast_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("schemas.outbox_publisher.RECOVER_EVERY_S", 0.02)


async def started(folder: Path, **options: Any) -> tuple[OutboxPublisher, BrokerDouble]:
    options.setdefault("fsync_interval_s", 0.01)
    publisher = OutboxPublisher(
        "127.0.0.1:1", PRODUCER, folder, max_bytes=1 << 20, keyring=builders.TEST_KEYRING, **options
    )
    broker = BrokerDouble()
    publisher._producer = broker
    await publisher.start()
    return publisher, broker


async def publish(publisher: OutboxPublisher, count: int) -> None:
    for _ in range(count):
        await publisher.publish("govledger.lineage", "acme", builders.call(event_id=uuid7()))


async def until(check: Any, timeout_s: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.01)


async def test_after_a_broker_loss_every_unconfirmed_record_goes_again_first_in_order(
    tmp_path: Path,
) -> None:
    publisher, broker = await started(tmp_path)
    await publish(publisher, 5)
    publisher.confirm(PRODUCER, 1, 2)  # the sink stored 1-2; 3-5 sit in the broker
    broker.down = True
    await publish(publisher, 1)  # 6: its send fails, the broker is away
    await until(lambda: publisher.degraded)
    broker.lose()  # it comes back empty: 3-5 are gone with it
    broker.down = False
    await publish(publisher, 1)  # 7, while recovering: held back behind the resends
    await until(lambda: not publisher.degraded)
    await publish(publisher, 1)  # 8: directly again
    assert broker.seqs() == [3, 4, 5, 6, 7, 8]
    assert broker.seqs(resent=True) == [3, 4, 5, 6, 7]
    assert publisher.outbox.unconfirmed == 6
    await publisher.stop()


async def test_a_broker_that_came_back_empty_between_two_sends_is_noticed_by_its_offsets(
    tmp_path: Path,
) -> None:
    publisher, broker = await started(tmp_path)
    await publish(publisher, 4)
    publisher.confirm(PRODUCER, 1, 1)
    broker.lose()  # killed and back, empty, while no call came: no send failed
    await publish(publisher, 1)  # 5 lands at offset 0: the broker is new
    await until(lambda: broker.seqs(resent=True) == [2, 3, 4, 5] and not publisher.degraded)
    await publish(publisher, 1)
    # 5 overtook 2-4 (sent before the new broker could be told); everything after is in order.
    assert broker.seqs() == [5, 2, 3, 4, 5, 6]
    await publisher.stop()


async def test_a_record_unconfirmed_for_too_long_is_sent_again_until_confirmed(
    tmp_path: Path,
) -> None:
    publisher, broker = await started(tmp_path, resend_after_s=0.2)
    await publish(publisher, 3)
    publisher.confirm(PRODUCER, 2, 2)
    await until(lambda: broker.seqs(resent=True) == [1, 3])
    publisher.confirm(PRODUCER, 1, 3)
    sent = len(broker.log)
    await asyncio.sleep(0.4)
    assert len(broker.log) == sent  # confirmed: nothing more goes out
    await publisher.stop()


async def test_what_an_earlier_process_left_is_sent_again_at_start_and_then_removed(
    tmp_path: Path,
) -> None:
    earlier = Outbox(tmp_path, "gateway-earlier", 1 << 20)
    chain = authn.SignedChain("gateway-earlier", keyring=builders.TEST_KEYRING)
    for _ in range(3):
        sealed, value = chain.seal_encoded(builders.call(event_id=uuid7()))
        auth = authn.header_of(chain.headers(value)) or b""
        earlier.append(sealed.seq, Frame("govledger.lineage", b"acme", value, auth))
    earlier.close()
    publisher = OutboxPublisher(
        "127.0.0.1:1",
        PRODUCER,
        tmp_path,
        max_bytes=1 << 20,
        fsync_interval_s=0.01,
        resend_after_s=0.2,
        keyring=builders.TEST_KEYRING,
    )
    publisher.confirm("gateway-earlier", 1, 1)  # the feed, read before start
    broker = BrokerDouble()
    publisher._producer = broker
    await publisher.start()
    assert broker.seqs(resent=True) == [2, 3]
    publisher.confirm("gateway-earlier", 2, 3)
    await until(lambda: not (tmp_path / "gateway-earlier.outbox").exists())
    await publisher.stop()


def notice(ranges: tuple[StoredRange, ...], role: authn.Role = "sink") -> Any:
    record = RecordsStored(
        event_id=str(uuid7()),
        event_type=RecordsStored.event_type_name,
        occurred_at=0,
        tenant_id="",
        ranges=ranges,
    )
    _, value = authn.SignedChain("sink-notices", role, builders.TEST_KEYRING).seal_encoded(record)
    credential = builders.TEST_KEYRING.credential(role, "sink-notices")
    return SimpleNamespace(
        topic=STORED.name, value=value, headers=credential.headers(value), offset=0
    )


class Kept:
    def __init__(self) -> None:
        self.confirmed: list[tuple[str, int, int]] = []

    def confirm(self, producer_id: str, first_seq: int, last_seq: int) -> int:
        self.confirmed.append((producer_id, first_seq, last_seq))
        return last_seq - first_seq + 1


def test_the_feed_confirms_sink_notices_and_refuses_forged_ones() -> None:
    authn.install(builders.TEST_KEYRING)
    kept = Kept()
    feed = ConfirmationFeed("127.0.0.1:1", [kept])
    feed.apply(notice((StoredRange(PRODUCER, 1, 4), StoredRange(PRODUCER, 9, 9))))
    feed.apply(notice((StoredRange(PRODUCER, 5, 8),), role="gateway"))  # not a sink
    tampered = notice((StoredRange(PRODUCER, 5, 8),))
    tampered.value = tampered.value[:-1] + b"\x01"
    feed.apply(tampered)
    assert kept.confirmed == [(PRODUCER, 1, 4), (PRODUCER, 9, 9)]
    assert feed.confirmed == 5 and feed.refused == 2


def polled(topic: str, value: bytes, headers: list[tuple[str, bytes]], offset: int) -> Message:
    """A record as the sink's consumer (librdkafka) hands it over."""
    return Message(topic, 0, offset, None, value, [*headers])


def test_stored_ranges_count_only_authenticated_records_of_outbox_keepers() -> None:
    authn.install(builders.TEST_KEYRING)
    chain = authn.SignedChain(PRODUCER, keyring=builders.TEST_KEYRING)
    lineage: list[Message] = []
    for seq in range(1, 8):
        _, value = chain.seal_encoded(builders.call(event_id=uuid7()))
        if seq in (4, 5):
            continue  # in another sink's partitions
        lineage.append(polled(LINEAGE.name, value, chain.headers(value), seq))
    forged = builders.call(event_id=uuid7(), producer_id=PRODUCER, seq=40)
    lineage.append(polled(LINEAGE.name, codec.encode(forged), [], 40))
    balance = builders.signed_message(WALLET_STATE.name, builders.balance())
    worker = [polled(WALLET_STATE.name, balance.value, balance.headers, 0)]
    batches = {
        TopicPartition(LINEAGE.name, 0): lineage[::-1],
        TopicPartition(WALLET_STATE.name, 0): worker,
    }
    prepared = prepare(batches, RecentIds(100))
    assert len(prepared.dead_letters) == 1  # the forged one, not counted
    assert prepared.stored.ranges() == [
        StoredRange(PRODUCER, 1, 3),
        StoredRange(PRODUCER, 6, 7),
    ]


async def test_an_admin_change_the_broker_refused_is_not_sent_again_later(
    tmp_path: Path,
) -> None:
    publisher, broker = await started(tmp_path)
    funding = builders.funding(event_id=uuid7())
    await publisher.publish_and_wait("govledger.control", "acme", funding)
    broker.down = True
    with pytest.raises(ConnectionError):
        await publisher.publish_and_wait("govledger.control", "acme", funding)
    assert [seq for seq, _ in publisher.outbox.pending()] == [1]  # the one the broker took
    broker.down = False
    await publisher.stop()


async def test_a_spool_an_earlier_version_left_is_sent_once_at_start(tmp_path: Path) -> None:
    chain = authn.SignedChain("gateway-before", keyring=builders.TEST_KEYRING)
    _, value = chain.seal_encoded(builders.call(event_id=uuid7()))
    auth = authn.header_of(chain.headers(value)) or b""
    Spool(tmp_path / "spool", "gateway-before", 1 << 20).append(
        Frame("govledger.lineage", b"acme", value, auth)
    )
    publisher, broker = await started(tmp_path / "outbox")
    assert [v for _, v, _ in broker.log] == [value]
    assert not (tmp_path / "spool" / "gateway-before.spool").exists()
    await publisher.stop()


async def test_records_are_fsynced_in_batches_off_the_event_loop_and_not_while_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[threading.Thread] = []
    monkeypatch.setattr(
        "schemas.outbox_publisher.os.fsync", lambda _: synced.append(threading.current_thread())
    )
    publisher, _ = await started(tmp_path, fsync_interval_s=0.05)
    await publish(publisher, 20)
    await until(lambda: bool(synced))
    await asyncio.sleep(0.15)
    assert 1 <= len(synced) <= 2  # twenty records, one or two fsyncs
    assert threading.main_thread() not in synced  # a slow disk does not stall the loop
    idle = len(synced)
    await asyncio.sleep(0.3)
    assert len(synced) == idle  # nothing written since: no more fsyncs
    await publisher.stop()


async def test_a_failed_fsync_is_tried_again_and_a_slow_one_is_not_overlapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop does not wait for an fsync: a failure comes back from the thread and the
    next tick fsyncs again; while one is slow, the next waits for it, not skipped for good."""
    calls: list[str] = []
    release = threading.Event()

    def fsync(_: int) -> None:
        calls.append("fsync")
        if len(calls) == 1:
            raise OSError(5, "I/O error")
        if len(calls) == 2:
            release.wait(5)  # a slow disk

    monkeypatch.setattr("schemas.outbox_publisher.os.fsync", fsync)
    publisher, _ = await started(tmp_path, fsync_interval_s=0.02)
    await publish(publisher, 3)
    await until(lambda: len(calls) >= 2)  # failed, then tried again with nothing new written
    await publish(publisher, 3)
    await asyncio.sleep(0.2)  # ten ticks while the second is stuck: none overlaps it
    assert len(calls) == 2
    release.set()
    await until(lambda: len(calls) == 3)  # the records written meanwhile, fsynced after it
    await publisher.stop()
