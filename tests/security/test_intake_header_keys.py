"""A record whose header key is not UTF-8, on the topics the worker's intake reads
(`govledger.lineage`, `govledger.control`). Anyone who may write them can send one. On
aiokafka the intake's poll raised UnicodeDecodeError on it, the intake crashed the
worker, and the restarted worker met the same record: the whole ledger stopped on one
record. The intake now dead-letters it with its reason, folds the records after it,
commits past it and keeps running.

The intake runs in-process, against librdkafka's mock cluster, in a stand-in for the
Faust app (what `streams.intake.register` uses of it: a task, a page, a DLQ topic, the
producer's flush, `crash`). The records are written as in tests/security/
test_header_keys.py, with enough good, signed records first for the intake's call sites
to be specialized."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any

import pytest

from schemas import codec
from schemas.authn import SignedChain
from schemas.rdkafka import UNDECODABLE_HEADERS
from schemas.records import DeadLetter, Event
from schemas.settings import StreamSettings, load
from schemas.topics import CONTROL, LINEAGE
from streams import intake
from streams.intake import Decoded, Domain
from tests.security.test_header_keys import (
    GOOD_BEFORE,
    committed_offsets,
    mock_cluster_writer,
    write_at_0,
)
from tests.unit import builders

APP_ID = "govledger-test"


@dataclasses.dataclass
class Sent:
    """What one topic of the stand-in app was sent."""

    values: list[bytes] = dataclasses.field(default_factory=list)

    async def send(self, *, key: bytes, value: bytes, headers: Any) -> None:
        self.values.append(value)


class StandInApp:
    """What the intake uses of a Faust app, recorded."""

    def __init__(self) -> None:
        self.dead_letters = Sent()
        self.tasks: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.stoppers: list[Callable[..., Awaitable[None]]] = []
        self.crashed: list[BaseException] = []
        self.producer = self
        self.on_before_shutdown = self

    def topic(self, name: str, **_: Any) -> Sent:
        assert name == "govledger.dlq"
        return self.dead_letters

    def task(self, function: Callable[[], Coroutine[Any, Any, None]]) -> Any:
        self.tasks.append(function)
        return function

    def page(self, _path: str) -> Callable[[Any], Any]:
        return lambda function: function

    def connect(self, function: Callable[..., Awaitable[None]]) -> Any:
        self.stoppers.append(function)
        return function

    async def flush(self) -> None:
        pass

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


@pytest.fixture
async def poisoned(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """A mock cluster whose lineage partition 0 holds GOOD_BEFORE signed calls, a hostile
    record, one more call; whose control partition 0 holds a hostile record, then a
    signed funding."""
    async with mock_cluster_writer(monkeypatch) as (bootstrap, producer):
        for _ in range(GOOD_BEFORE):
            await write_at_0(producer, LINEAGE.name, builders.call())
        await write_at_0(producer, LINEAGE.name, None)
        await write_at_0(producer, LINEAGE.name, builders.call(model_requested="after"))
        await write_at_0(producer, CONTROL.name, None)
        await write_at_0(producer, CONTROL.name, builders.funding(memo="after"))
        yield bootstrap


def committed(bootstrap: str) -> dict[str, int]:
    """The intake group's committed offset of each topic's partition 0."""
    return committed_offsets(bootstrap, f"{APP_ID}-intake", [LINEAGE.name, CONTROL.name])


async def test_the_intake_dead_letters_the_record_and_folds_on(poisoned: str) -> None:
    settings = load(
        StreamSettings,
        environ={},
        kafka_bootstrap=poisoned,
        worker_app_id=APP_ID,
        kafka_session_timeout_ms=6_000,
    )
    folded: list[Event] = []

    async def fold(batch: Sequence[Decoded]) -> None:
        folded.extend(decoded.record for decoded in batch)

    app = StandInApp()
    intake.register(app, settings, SignedChain("streams-test"), [Domain(fold)])
    running = asyncio.create_task(app.tasks[0]())

    def done() -> bool:
        return len(folded) == GOOD_BEFORE + 2 and len(app.dead_letters.values) == 2

    for _ in range(300):
        if done() or running.done():
            break
        await asyncio.sleep(0.1)
    # Committed past it while running: a restarted worker does not meet it again.
    expected = {LINEAGE.name: GOOD_BEFORE + 2, CONTROL.name: 2}
    for _ in range(30):
        if running.done() or await asyncio.to_thread(committed, poisoned) == expected:
            break
        await asyncio.sleep(0.2)
    assert not running.done() and app.crashed == [], "the intake keeps running"
    await app.stoppers[0](app)
    await running

    assert app.crashed == []
    marks = [getattr(r, "model_requested", None) or getattr(r, "memo", None) for r in folded]
    assert len(folded) == GOOD_BEFORE + 2 and marks.count("after") == 2, "the records after it"
    letters = [codec.decode(value) for value in app.dead_letters.values]
    assert all(isinstance(letter, DeadLetter) for letter in letters)
    refused = {(d.origin_topic, d.origin_offset, d.error, d.payload) for d in letters}  # type: ignore[attr-defined]
    assert refused == {
        (LINEAGE.name, GOOD_BEFORE, UNDECODABLE_HEADERS, b"hostile"),
        (CONTROL.name, 0, UNDECODABLE_HEADERS, b"hostile"),
    }
    assert committed(poisoned) == expected
