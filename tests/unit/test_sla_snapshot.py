"""The SLA processor's snapshots: exact on disk, and a kill at any point loses nothing.

The agent runs here in-process over a stand-in for the Faust app (topics that record what
is sent, a timer that is called by hand) and the real snapshot files. A kill is a new
agent over the same directory, fed again from the last committed offset, as the intake
does after a restart; a kill between a close and its publication republishes the saved
outbox byte for byte.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from schemas import codec
from schemas.authn import SignedChain
from schemas.ids import derived_uuid7
from schemas.records import LineageRecord, SlaWindow
from schemas.settings import StreamSettings
from schemas.topics import SLA
from streams.intake import Decoded, Domain, Received
from streams.sla import agent, logic, snapshot
from streams.sla.records import window_event_id
from tests.unit.builders import T0, call

MINUTE = logic.WINDOW_MS


def test_a_snapshot_reads_back_exactly() -> None:
    state = logic.fold(
        [
            call(seq=1, occurred_at=T0, latency_ms=12.5, ttft_ms=3.0),
            call(seq=2, occurred_at=T0 + 1, http_status=400, error_code="bad_request"),
            call(seq=3, occurred_at=T0 + MINUTE, tenant_id="globex", producer_id="gateway-b"),
        ]
    )
    state, _ = logic.closed(state, T0 + MINUTE + 40_000, grace_ms=30_000)
    state = logic.apply(state, call(seq=4, occurred_at=T0))  # a correction of a closed minute
    assert state.windows and state.applied_seqs and state.open_from_ms
    outbox = (snapshot.Outgoing(SLA.name, b"openai/gpt", b"\xc3\x01body", (("auth", b"\x00"),)),)
    saved = snapshot.Snapshot(state, outbox)
    assert snapshot.decode(snapshot.encode(saved)) == saved
    assert snapshot.decode(snapshot.encode(snapshot.Snapshot())) == snapshot.Snapshot()


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"[]", b'{"version": 2}', b'{"version": 1}', b'{"version": 1, "windows": [[1]]}'],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not an SLA snapshot"):
        snapshot.decode(data)


def test_a_file_that_does_not_decode_is_moved_aside(tmp_path: Path) -> None:
    files = agent.SnapshotFiles(tmp_path)
    assert files.read(0) == snapshot.Snapshot()
    files.write(0, snapshot.encode(snapshot.Snapshot(logic.apply(logic.SlaState(), call()))))
    assert files.read(0).state.windows
    files.path(1).write_bytes(b'{"version": 1, "windo')
    assert files.read(1) == snapshot.Snapshot()
    assert files.path(1).with_suffix(".corrupt").exists()
    assert not files.path(1).exists()


def test_derived_ids_are_uuid7_shaped_and_name_their_output() -> None:
    summary = logic.WindowSummary("openai", "gpt-4o", "acme", T0, T0 + MINUTE, requests=3)
    ids = {window_event_id(summary), window_event_id(summary)}
    (event_id,) = ids
    parsed = uuid.UUID(event_id)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert parsed.int >> 80 == T0
    # The id names the window, not its content: a revision is another window.
    assert window_event_id(logic.WindowSummary("openai", "gpt-4o", "acme", T0, T0 + MINUTE)) == (
        event_id
    )
    correction = logic.WindowSummary("openai", "gpt-4o", "acme", T0, T0 + MINUTE, revision=1)
    assert window_event_id(correction) != event_id
    assert derived_uuid7(T0, "a", "bc") != derived_uuid7(T0, "ab", "c")


# --- the agent, killed anywhere ----------------------------------------------------------


class Topic:
    def __init__(self, sent: list[tuple[str, bytes]], name: str) -> None:
        self.sent, self.name = sent, name

    async def send(self, *, key: bytes, value: bytes, headers: Any) -> None:
        self.sent.append((self.name, value))


class App:
    """What the SLA agent uses of a Faust app; `sent` is what reached the broker."""

    def __init__(self, sent: list[tuple[str, bytes]]) -> None:
        self.sent = sent
        self.tick: Callable[[], Awaitable[None]] | None = None
        self.producer = SimpleNamespace(flush=self._flush)
        self.flush_dies = False  # the process is killed in the next flush
        self.on_before_shutdown = SimpleNamespace(connect=lambda function: function)

    async def _flush(self) -> None:
        if self.flush_dies:
            raise Killed

    def task(self, function: Any) -> Any:
        return function  # the feed of stored notices: not started here

    def topic(self, name: str, **_: Any) -> Topic:
        return Topic(self.sent, name)

    def timer(self, interval: float) -> Callable[[Any], Any]:
        def register(function: Any) -> Any:
            self.tick = function
            return function

        return register


def decoded(record: LineageRecord, offset: int) -> Decoded:
    message = SimpleNamespace(topic="govledger.lineage", partition=0, offset=offset)
    return Decoded(record, Received(message, b""))


class Killed(Exception):
    """The process died here."""


def test_windows_sum_to_the_calls_whatever_the_kills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = {"now": T0}
    monkeypatch.setattr(agent, "now_ms", lambda: clock["now"])
    settings = StreamSettings(data_dir=str(tmp_path), sla_grace_ms=10_000)
    rng = random.Random(13)
    calls = [
        call(
            seq=n,
            occurred_at=T0 + n * 700 - rng.choice((0, 0, 30_000)),
            http_status=rng.choice((200, 200, 503)),
            error_code=None,
        )
        for n in range(1, 400)
    ]
    sent: list[tuple[str, bytes]] = []

    def start() -> tuple[App, Domain]:
        app = App(sent)
        domain = agent.register(app, settings, SignedChain("streams-sla-test", "processor"))
        return app, domain

    async def run() -> int:
        kills = 0
        committed = 0
        app, domain = start()
        assert domain.on_assigned is not None
        await domain.on_assigned(frozenset({0}))
        read = committed
        while read < len(calls) or clock["now"] < T0 + 400 * 700 + 100_000:
            step = rng.choice(("fold", "fold", "tick", "commit", "kill"))
            try:
                if step == "fold" and read < len(calls):
                    batch = [decoded(c, read + i) for i, c in enumerate(calls[read : read + 7])]
                    clock["now"] = max(clock["now"], batch[-1].record.occurred_at + 50)
                    await domain.fold(batch)
                    read += len(batch)
                elif step == "tick" or read >= len(calls):
                    clock["now"] += 3_000
                    assert app.tick is not None
                    # Killed after the close was saved, mid-send (when it sends anything).
                    app.flush_dies = rng.random() < 0.2
                    await app.tick()
                    app.flush_dies = False
                elif step == "commit":
                    assert domain.before_commit is not None
                    await domain.before_commit()
                    committed = read
                else:
                    raise Killed
            except Killed:
                kills += 1
                app, domain = start()  # a new process: memory gone, the files stay
                assert domain.on_assigned is not None
                await domain.on_assigned(frozenset({0}))
                read = committed  # the intake resumes from its committed offset
        clock["now"] += 10 * MINUTE
        assert app.tick is not None
        await app.tick()  # the last windows close
        return kills

    kills = asyncio.run(run())
    assert kills > 10
    windows: dict[str, SlaWindow] = {}
    for topic, value in sent:
        if topic == SLA.name:
            window = codec.decode_as(value, SlaWindow)
            known = windows.setdefault(window.event_id, window)
            assert known.requests == window.requests, "one id, two contents"
    per_minute: Counter[int] = Counter()
    for window in windows.values():  # the sink keeps one row per event id
        per_minute[window.window_start] += window.requests
    expected = Counter(logic.minute_start(c.occurred_at) for c in calls)
    assert per_minute == expected
