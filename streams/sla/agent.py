"""Thin Faust adapter: lineage records in, one-minute SLA windows and SLA alerts out.

The state is one `SlaState` per lineage partition, kept in memory and, as a `Snapshot`,
on disk (`<data_dir>/sla/lineage-<partition>.json`, see README.md): a SIGKILL loses
nothing. The rule that makes it exact:

- Before the intake commits offsets, every partition's snapshot is on disk (with its
  per-producer watermarks), so a record at or after the committed offset that the
  snapshot already counts is a duplicate the fold skips, and one it does not count is
  read again.
- A window is closed into the partition's outbox as sealed records (window, alerts),
  the snapshot written, and only then sent: what a window holds is fixed on disk before
  anyone sees it. A restart sends a saved outbox again, byte for byte (same chain, seq
  and derived event id), so the sink keeps one row.
- A record leaves the outbox when the store has it, not when the broker acked it (an
  embedded broker killed before the sink stored a window takes it with it): the sinks'
  stored notices name it by (producer id, seq), and the worker's ConfirmationFeed tails
  them. Until then it is sent again, the same bytes marked resent, every
  `GOVLEDGER_SLA_RESEND_AFTER_S` (and once after each restart).
- Bounded: per partition, records past `GOVLEDGER_SLA_OUTBOX_MAX_BYTES` (the newest) are
  not kept: sent once, then dropped on the broker's ack as before, logged as an error and
  counted (`govledger_sla_outbox_overflowed_total`). Folding and publishing go on: the
  state has counted those calls already, so holding commits back would keep nothing, and
  an unbounded outbox would make each snapshot write (every commit) grow without end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import structlog

from schemas.authn import SignedChain
from schemas.confirmations import OUTBOX_PROCESSORS, ConfirmationFeed
from schemas.ids import now_ms
from schemas.kafka_security import KafkaSecurity
from schemas.records import LineageRecord
from schemas.settings import SettingsError, StreamSettings
from schemas.topics import ALERTS, DLQ, RESENT_HEADER, SLA
from streams import metrics as stream_metrics
from streams.dead_letters import rejecter
from streams.intake import RAW, Decoded, Domain
from streams.sla import logic, snapshot
from streams.sla.outbox import Unconfirmed
from streams.sla.records import breach_event_id, to_breached, to_window, window_event_id
from streams.sla.snapshot import Outgoing, Snapshot

log = structlog.get_logger(__name__)

CONSUMER = "streams.sla"
SNAPSHOT_DIR = "sla"
"""Directory under the data dir holding one snapshot file per lineage partition."""


def targets_of(settings: StreamSettings) -> logic.SlaTargets:
    """The SLA targets the settings name; SettingsError for values out of range."""
    if settings.sla_grace_ms < 0 or settings.sla_retention_ms < 0 or settings.sla_tick_s <= 0:
        raise SettingsError("SLA grace and retention are >= 0 ms and the tick is > 0 s")
    if not 0.0 <= settings.sla_availability_min <= 1.0:
        raise SettingsError("GOVLEDGER_SLA_AVAILABILITY_MIN is a ratio between 0 and 1")
    if settings.sla_overhead_p99_max_ms <= 0 or settings.sla_min_eligible < 1:
        raise SettingsError("the overhead target is > 0 ms and min eligible >= 1")
    if settings.sla_resend_after_s <= 0 or settings.sla_outbox_max_bytes < 1:
        raise SettingsError("the SLA resend interval is > 0 s and the outbox holds >= 1 byte")
    return logic.SlaTargets(
        availability_min=settings.sla_availability_min,
        gateway_overhead_p99_max_ms=settings.sla_overhead_p99_max_ms,
        min_eligible=settings.sla_min_eligible,
    )


class SnapshotFiles:
    """One file per lineage partition, replaced whole (write, fsync, rename): a kill
    leaves the old snapshot or the new one, never a mix. Blocking: call in a thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, partition: int) -> Path:
        """The snapshot file of a lineage partition."""
        return self.directory / f"lineage-{partition}.json"

    def read(self, partition: int) -> Snapshot:
        """The partition's snapshot; an empty one if it has none. A file that does not
        decode is moved aside (`.corrupt`) and logged: the partition starts empty."""
        path = self.path(partition)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return Snapshot()
        try:
            return snapshot.decode(data)
        except ValueError:
            aside = path.with_suffix(".corrupt")
            os.replace(path, aside)
            log.exception("sla snapshot unreadable; moved aside", path=str(aside))
            return Snapshot()

    def write(self, partition: int, data: bytes) -> None:
        """Replace the partition's snapshot with `data`, durably."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(partition)
        partial = path.with_name(f".{path.name}.partial")
        with partial.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


@dataclasses.dataclass(slots=True)
class _Held:
    """The one mutable thing: each owned partition's snapshot, which changed since they
    were last written, and whether they are loaded (no tick closes anything before)."""

    partitions: dict[int, Snapshot] = dataclasses.field(default_factory=dict)
    dirty: set[int] = dataclasses.field(default_factory=set)
    ready: bool = False
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


def register(
    app: Any,
    settings: StreamSettings,
    chain: SignedChain,
    *,
    feed: ConfirmationFeed | None = None,
) -> Domain:
    """The SLA batch handler for the intake; registers its closing timer, and the feed of
    stored notices that empties its outboxes (one on `govledger.stored` if none is given),
    started with the app and stopped at its shutdown."""
    targets = targets_of(settings)
    assert chain.producer_id.startswith(OUTBOX_PROCESSORS), "the sinks confirm its records"
    grace_ms, retention_ms = settings.sla_grace_ms, settings.sla_retention_ms
    topics = {SLA.name: app.topic(SLA.name, **RAW), ALERTS.name: app.topic(ALERTS.name, **RAW)}
    reject = rejecter(app.topic(DLQ.name, **RAW), chain, CONSUMER)
    files = SnapshotFiles(settings.data_path / SNAPSHOT_DIR)
    held = _Held()
    metrics = stream_metrics.of(app)
    resend_after_ms = round(settings.sla_resend_after_s * 1000)
    unconfirmed = Unconfirmed(resend_after_ms, settings.sla_outbox_max_bytes)
    if feed is None:
        feed = ConfirmationFeed(settings.kafka_bootstrap, [], security=KafkaSecurity.of(settings))
    feed.publishers.append(unconfirmed)

    def sealed(summary: logic.WindowSummary, at: int) -> Iterable[Outgoing]:
        window = to_window(summary, event_id=window_event_id(summary), occurred_at=at)
        _, data = chain.seal_encoded(window)
        key = f"{summary.provider}/{summary.model_selected}".encode()
        yield Outgoing(SLA.name, key, data, tuple(chain.headers(data)))
        if summary.revision:  # a correction is judged only merged with its minute
            return
        for breach in logic.breaches(summary, targets):
            metrics.sla_target_missed(breach.metric)
            alert = to_breached(breach, event_id=breach_event_id(breach), occurred_at=at)
            _, data = chain.seal_encoded(alert)
            key = summary.tenant_id.encode()
            yield Outgoing(ALERTS.name, key, data, tuple(chain.headers(data)))

    async def save() -> None:
        # Under the lock: encoded here (the state is immutable), written in a thread.
        for partition in sorted(held.dirty):
            data = snapshot.encode(held.partitions[partition])
            await asyncio.to_thread(files.write, partition, data)
        held.dirty.clear()

    def settle() -> None:
        # Confirmed records (and acked ones past the bound) leave the outboxes.
        overflowed = unconfirmed.overflowed
        for partition, before in held.partitions.items():
            outbox = unconfirmed.settled(before.outbox)
            if outbox is not before.outbox:
                held.partitions[partition] = dataclasses.replace(before, outbox=outbox)
                held.dirty.add(partition)
        if unconfirmed.overflowed > overflowed:
            dropped = unconfirmed.overflowed - overflowed
            metrics.sla_outbox_overflowed(dropped)
            log.error(
                "sla outbox full; windows sent without a copy",
                records=dropped,
                max_bytes=settings.sla_outbox_max_bytes,
            )
        metrics.sla_outbox_waiting(unconfirmed.waiting)

    async def send_outboxes() -> None:
        # Under the lock: what is due (new, or unconfirmed `resend_after_ms` after its last
        # send), then the flush (the broker's ack), then what is settled leaves.
        at = now_ms()
        due = [
            sending
            for _, state in sorted(held.partitions.items())
            for sending in unconfirmed.due(state.outbox, at)
        ]
        for out, resent in due:
            headers = [*out.headers, (RESENT_HEADER, b"1")] if resent else list(out.headers)
            await topics[out.topic].send(key=out.key, value=out.value, headers=headers)
        if due:
            await app.producer.flush()
            unconfirmed.sent((out for out, _ in due), at)
        settle()
        if held.dirty:
            await save()

    def track(partition: int, fresh: Iterable[Outgoing] = ()) -> None:
        if unconfirmed.track(held.partitions[partition].outbox, fresh=fresh):
            log.warning("sla outbox records without producer and seq dropped", partition=partition)

    async def load(assigned: frozenset[int]) -> None:
        async with held.lock:
            held.partitions = {p: await asyncio.to_thread(files.read, p) for p in assigned}
            held.dirty.clear()
            unconfirmed.clear()
            for partition in held.partitions:
                track(partition)
            held.ready = True
        # A saved outbox (closed, maybe sent, before a kill) goes out, the same bytes again,
        # with the next tick's: this runs inside the intake's rebalance, not the place to
        # wait. What the store confirmed meanwhile leaves at a tick, the rest stays.
        resent = sum(len(s.outbox) for s in held.partitions.values())
        open_windows = sum(len(s.state.windows) for s in held.partitions.values())
        log.info(
            "sla state loaded", partitions=len(assigned), open_windows=open_windows, resent=resent
        )

    async def fold_batch(batch: Sequence[Decoded]) -> None:
        by_partition: dict[int, list[tuple[Decoded, LineageRecord]]] = defaultdict(list)
        for decoded in batch:
            if isinstance(decoded.record, LineageRecord):
                by_partition[decoded.partition].append((decoded, decoded.record))
        async with held.lock:
            for partition, calls in by_partition.items():
                if partition not in held.partitions:  # never empty over a saved file
                    held.partitions[partition] = await asyncio.to_thread(files.read, partition)
                    track(partition)
                before = held.partitions[partition]
                state = before.state
                try:
                    state = logic.fold((call for _, call in calls), state)
                except ValueError:  # one record is unmeasurable: find it, keep the rest
                    for decoded, call in calls:
                        try:
                            state = logic.apply(state, call)
                        except ValueError as exc:
                            await reject(decoded.received, str(exc))
                if state is not before.state:
                    held.partitions[partition] = dataclasses.replace(before, state=state)
                    held.dirty.add(partition)

    async def close(moment: Callable[[logic.SlaState, int], int]) -> None:
        # Under the lock: drops what the store confirmed, closes what is due at
        # `moment(state, now)`, seals it into the outbox, saves (the closed windows are on
        # disk before anyone sees them), sends what is due.
        settle()
        at = now_ms()
        for partition, before in held.partitions.items():
            state, due = logic.closed(
                before.state, moment(before.state, at), grace_ms, retention_ms
            )
            if state is before.state:
                continue
            outgoing = tuple(out for summary in due for out in sealed(summary, at))
            held.partitions[partition] = Snapshot(state, before.outbox + outgoing)
            held.dirty.add(partition)
            track(partition, fresh=outgoing)
        if held.dirty:
            await save()
        await send_outboxes()

    def now(_state: logic.SlaState, at: int) -> int:
        return at

    def past_every_window(state: logic.SlaState, at: int) -> int:
        last_end = max((w.end_ms for w in state.windows.values()), default=0)
        return max(at, last_end + grace_ms)

    @app.timer(interval=settings.sla_tick_s)  # type: ignore[untyped-decorator]
    async def close_sla_windows() -> None:
        async with held.lock:
            if held.ready:
                await close(now)

    async def flush_at_stop() -> None:
        # Stopped on purpose: publish the minutes in progress now (a stack stopped for
        # good would never publish them), closed for good: the frontier is saved past
        # them, so their later records come, after a restart, as corrections.
        async with held.lock:
            if held.ready:
                windows = sum(len(s.state.windows) for s in held.partitions.values())
                await close(past_every_window)
                log.info("sla windows flushed at stop", windows=windows)

    async def save_before_commit() -> None:
        async with held.lock:
            await save()

    async def forget_revoked() -> None:
        # The commit before this saved every partition: another worker may take them.
        async with held.lock:
            await save()
            held.partitions, held.ready = {}, False
            unconfirmed.clear()

    @app.task  # type: ignore[untyped-decorator]
    async def follow_stored_notices() -> None:
        try:
            await feed.start()
        except Exception:  # nothing is lost: unconfirmed records are resent, not confirmed
            log.exception("stored notices not followed; sla outboxes are not emptied")

    @app.on_before_shutdown.connect  # type: ignore[untyped-decorator]
    async def stop_following(_app: Any, **_: Any) -> None:
        # Whether before or after the intake's last close: a record confirmed after this is
        # sent again at the next start, and confirmed then.
        await feed.stop()

    return Domain(
        fold_batch,
        on_assigned=load,
        on_stop=flush_at_stop,
        before_commit=save_before_commit,
        on_revoked=forget_revoked,
    )
