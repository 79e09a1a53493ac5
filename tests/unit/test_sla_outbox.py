"""The SLA processor's outbox keeps each window until the store confirms it.

The broker's ack is not enough: an embedded broker killed before the sink stored a window
takes it with it. So a window stays in its partition's snapshot after the flush, is sent
again (the same bytes, marked resent) every `GOVLEDGER_SLA_RESEND_AFTER_S`, across a worker
restart too, and is dropped only when the sink's stored notice (`govledger.stored`, read
by the worker's ConfirmationFeed) names its (producer id, seq). The agent runs in-process
over a stand-in for the Faust app, with the real snapshot files and the real feed (fed by
hand, not started).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from aiokafka import TopicPartition
from confluent_kafka import Message

from schemas import authn, codec
from schemas.authn import SignedChain
from schemas.confirmations import ConfirmationFeed
from schemas.records import RecordsStored, SlaWindow, StoredRange
from schemas.settings import SettingsError, StreamSettings
from schemas.topics import RESENT_HEADER, SLA, STORED
from sinks.prepare import RecentIds, prepare
from streams.intake import Decoded, Domain, Received
from streams.sla import agent, logic
from streams.sla.records import to_window, window_event_id
from tests.unit import builders
from tests.unit.builders import T0, call

MINUTE = logic.WINDOW_MS
GRACE_MS = 10_000
RESEND_AFTER_S = 60.0
PRODUCER = "streams-sla-outbox-unit"

Sent = tuple[str, bytes, bool]
"""Topic, value, whether it was marked resent."""


class App:
    """What the SLA agent uses of a Faust app; `sent` is what the broker acknowledged."""

    def __init__(self, sent: list[Sent]) -> None:
        self.sent = sent
        self.tick: Callable[[], Awaitable[None]] | None = None
        self.tasks: list[Callable[[], Awaitable[None]]] = []
        self.stops: list[Callable[..., Awaitable[None]]] = []
        self.producer = SimpleNamespace(flush=self._flush)
        self.on_before_shutdown = SimpleNamespace(connect=self.stops.append)

    async def _flush(self) -> None:
        pass

    def topic(self, name: str, **_: Any) -> Any:
        async def send(*, key: bytes, value: bytes, headers: Any) -> None:
            self.sent.append((name, value, (RESENT_HEADER, b"1") in headers))

        return SimpleNamespace(send=send)

    def timer(self, interval: float) -> Callable[[Any], Any]:
        def register(function: Any) -> Any:
            self.tick = function
            return function

        return register

    def task(self, function: Callable[[], Awaitable[None]]) -> Any:
        self.tasks.append(function)
        return function


class Worker:
    """One worker process: its agent, feed and clock; `restart()` is a kill and a start
    over the same data directory (memory gone, the snapshot files stay)."""

    def __init__(self, settings: StreamSettings, clock: dict[str, int]) -> None:
        self.settings, self.clock = settings, clock
        self.sent: list[Sent] = []
        self.app, self.domain, self.feed = self._start()

    def _start(self) -> tuple[App, Domain, ConfirmationFeed]:
        app = App(self.sent)
        feed = ConfirmationFeed("127.0.0.1:1", [])
        chain = SignedChain(PRODUCER, "processor", builders.TEST_KEYRING)
        return app, agent.register(app, self.settings, chain, feed=feed), feed

    async def restart(self) -> None:
        self.app, self.domain, self.feed = self._start()
        await self.assigned()

    async def assigned(self) -> None:
        assert self.domain.on_assigned is not None
        await self.domain.on_assigned(frozenset({0}))

    async def fold(self, *records: Any) -> None:
        message = SimpleNamespace(topic="govledger.lineage", partition=0, offset=0)
        await self.domain.fold([Decoded(r, Received(message, b"")) for r in records])

    async def tick_at(self, at_ms: int) -> list[Sent]:
        """The timer's tick at this time; the windows it sent."""
        self.clock["now"] = at_ms
        before = len(self.sent)
        assert self.app.tick is not None
        await self.app.tick()
        return [s for s in self.sent[before:] if s[0] == SLA.name]

    def stored(self, producer_id: str, first_seq: int, last_seq: int) -> None:
        """The sink's notice that it stored these seqs, as the feed reads it."""
        record = RecordsStored(
            event_id="0193a1b2-0000-7000-8000-000000000001",
            event_type=RecordsStored.event_type_name,
            occurred_at=0,
            tenant_id="",
            ranges=(StoredRange(producer_id, first_seq, last_seq),),
        )
        _, value = SignedChain("sink-notices", "sink", builders.TEST_KEYRING).seal_encoded(record)
        credential = builders.TEST_KEYRING.credential("sink", "sink-notices")
        self.feed.apply(
            SimpleNamespace(
                topic=STORED.name, value=value, headers=credential.headers(value), offset=0
            )
        )

    def kept(self) -> int:
        """Records in partition 0's snapshot file's outbox."""
        return len(agent.SnapshotFiles(self.settings.data_path / agent.SNAPSHOT_DIR).read(0).outbox)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    authn.install(builders.TEST_KEYRING)
    now = {"now": T0}
    monkeypatch.setattr(agent, "now_ms", lambda: now["now"])
    return now


def settings_in(tmp_path: Path, **overrides: Any) -> StreamSettings:
    return StreamSettings(
        data_dir=str(tmp_path),
        sla_grace_ms=GRACE_MS,
        sla_resend_after_s=RESEND_AFTER_S,
        **overrides,
    )


def test_an_acked_window_is_sent_again_until_the_store_confirms_it(
    tmp_path: Path, clock: dict[str, int]
) -> None:
    worker = Worker(settings_in(tmp_path), clock)
    closed_at = T0 + MINUTE + GRACE_MS + 1
    resend_ms = int(RESEND_AFTER_S * 1000)

    async def run() -> None:
        await worker.assigned()
        await worker.fold(call(seq=1, occurred_at=T0 + 5))
        (first,) = await worker.tick_at(closed_at)  # sent and acked (the flush returned)
        _, window, resent = first
        assert not resent
        assert worker.kept() == 1, "acked is not stored: the window stays in the snapshot"
        assert await worker.tick_at(closed_at + resend_ms - 1) == []  # not due yet
        assert await worker.tick_at(closed_at + resend_ms) == [(SLA.name, window, True)]
        # Killed: the new process sends the saved window again, byte for byte.
        await worker.restart()
        assert await worker.tick_at(closed_at + resend_ms + 1) == [(SLA.name, window, True)]
        producer_id, seq = codec.producer_seq_of(window)
        assert producer_id == PRODUCER
        worker.stored(producer_id, seq + 1, seq + 5)  # someone else's seqs: nothing
        worker.stored("streams-sla-other", seq, seq)
        assert await worker.tick_at(closed_at + 3 * resend_ms) == [(SLA.name, window, True)]
        worker.stored(producer_id, seq - 3, seq)  # the store has it
        assert worker.feed.confirmed == 1
        assert await worker.tick_at(closed_at + 5 * resend_ms) == []
        assert worker.kept() == 0, "confirmed: dropped from the snapshot"
        await worker.restart()
        assert await worker.tick_at(closed_at + 7 * resend_ms) == []

    asyncio.run(run())


def test_past_its_bound_the_outbox_keeps_the_oldest_and_says_so(
    tmp_path: Path, clock: dict[str, int]
) -> None:
    # Room for two windows (about 500 bytes each): the third is sent once, not kept, counted.
    worker = Worker(settings_in(tmp_path, sla_outbox_max_bytes=1_200), clock)
    resend_ms = int(RESEND_AFTER_S * 1000)

    async def run() -> list[Sent]:
        await worker.assigned()
        for minute in range(3):
            await worker.fold(call(seq=minute + 1, occurred_at=T0 + minute * MINUTE + 5))
        first = await worker.tick_at(T0 + 3 * MINUTE + GRACE_MS + 1)
        assert len(first) == 3 and not any(resent for _, _, resent in first)
        assert worker.kept() == 2
        again = await worker.tick_at(T0 + 3 * MINUTE + GRACE_MS + 1 + resend_ms)
        assert again == [(SLA.name, value, True) for _, value, _ in first[:2]]
        return first

    with structlog.testing.capture_logs() as logs:
        first = asyncio.run(run())
    overflow = [e for e in logs if e["event"] == "sla outbox full; windows sent without a copy"]
    assert overflow and overflow[0]["log_level"] == "error" and overflow[0]["records"] == 1
    # Once the store confirms the kept ones, there is room again.
    for _, value, _ in first[:2]:
        producer_id, seq = codec.producer_seq_of(value)
        worker.stored(producer_id, seq, seq)

    async def later() -> None:
        assert await worker.tick_at(T0 + 10 * MINUTE) == []
        await worker.fold(call(seq=9, occurred_at=T0 + 10 * MINUTE))
        assert len(await worker.tick_at(T0 + 11 * MINUTE + GRACE_MS + 1)) == 1
        assert worker.kept() == 1

    asyncio.run(later())


def test_the_sink_confirms_the_sla_windows_it_stores() -> None:
    # The stored notices name the SLA processor's seqs (a processor, not a gateway), and
    # only those of the processors that keep an outbox.
    authn.install(builders.TEST_KEYRING)
    sla_chain = SignedChain(PRODUCER, "processor", builders.TEST_KEYRING)
    messages = []
    for offset in range(2):
        summary = logic.WindowSummary("openai", "gpt", "acme", T0, T0 + MINUTE, revision=offset)
        window = to_window(summary, event_id=window_event_id(summary), occurred_at=T0)
        _, value = sla_chain.seal_encoded(window)
        messages.append(Message(SLA.name, 0, offset, None, value, [*sla_chain.headers(value)]))
    prepared = prepare({TopicPartition(SLA.name, 0): messages}, RecentIds(100))
    assert not prepared.dead_letters
    assert prepared.stored.ranges() == [StoredRange(PRODUCER, 1, 2)]


def test_the_resend_interval_and_the_bound_are_checked() -> None:
    with pytest.raises(SettingsError):
        agent.targets_of(StreamSettings(sla_resend_after_s=0))
    with pytest.raises(SettingsError):
        agent.targets_of(StreamSettings(sla_outbox_max_bytes=0))


def test_windows_reach_the_store_whatever_dies_broker_included(
    tmp_path: Path, clock: dict[str, int]
) -> None:
    # The failure this outbox is for, at random: the sink is down while windows are sent,
    # then the embedded broker dies and comes back empty (what it held and the sink had not
    # stored is gone), and the worker is killed too, at any point.
    rng = random.Random(786346)
    worker = Worker(settings_in(tmp_path), clock)
    calls = [call(seq=n, occurred_at=T0 + n * 700) for n in range(1, 300)]
    store: dict[str, SlaWindow] = {}
    stored_upto = 0  # what the sink read of the broker's log (`worker.sent`)
    sink_up = True

    def sink_reads() -> None:
        nonlocal stored_upto
        for topic, value, _ in worker.sent[stored_upto:]:
            if topic == SLA.name:
                window = codec.decode_as(value, SlaWindow)
                store.setdefault(window.event_id, window)
            producer_id, seq = codec.producer_seq_of(value)
            worker.stored(producer_id, seq, seq)
        stored_upto = len(worker.sent)

    async def run() -> int:
        nonlocal sink_up, stored_upto
        losses = committed = read = 0
        await worker.assigned()
        while read < len(calls):
            step = rng.choice(("fold", "fold", "tick", "commit", "kill", "sink", "broker"))
            if step == "fold":
                batch = calls[read : read + 5]
                clock["now"] = max(clock["now"], batch[-1].occurred_at + 50)
                await worker.fold(*batch)
                read += len(batch)
            elif step == "tick":
                await worker.tick_at(clock["now"] + 3_000)
            elif step == "commit":
                assert worker.domain.before_commit is not None
                await worker.domain.before_commit()
                committed = read
            elif step == "kill":
                await worker.restart()
                read = committed
            elif step == "sink":
                sink_up = not sink_up
            else:  # the broker dies, the supervisor restarts everything on an empty one
                del worker.sent[stored_upto:]
                losses += 1
                await worker.restart()
                read = committed
            if sink_up:
                sink_reads()
        # Everything back up: the last minutes close, the outbox drains.
        for _ in range(10):
            await worker.tick_at(clock["now"] + 30_000)
            sink_reads()
        assert worker.kept() == 0
        return losses

    assert asyncio.run(run()) > 3
    per_minute: Counter[int] = Counter()
    for window in store.values():  # one row per event id
        per_minute[window.window_start] += window.requests
    assert per_minute == Counter(logic.minute_start(c.occurred_at) for c in calls)
