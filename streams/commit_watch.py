"""Warns when records a Faust agent read long ago are still not committed.

Faust commits a partition up to the first run of consecutive acknowledged offsets, so
anything that breaks the run holds the position back while the agents go on reading:
the group's lag grows and every restart refolds more (nothing is lost; the records
behind the position are folded again, idempotently). `streams.app` mends the cause
seen here (offsets acknowledged twice); upstream reports others (robinhood/faust #385,
#681; faust-streaming #312, #606). This watch makes any of them visible: a partition
whose commit position has not passed a record read `stall_after_s` ago is logged once
per stall at warning level. Faust commits every few seconds, so a healthy partition
never qualifies, however busy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import structlog

from streams import metrics as stream_metrics

log = structlog.get_logger("streams.commit_watch")

MAX_PARTITIONS_WATCHED = 100_000  # far above any assignment; bounds the watch's memory


@dataclasses.dataclass(frozen=True)
class Watched:
    """The oldest read offset of a partition the commit position has not passed yet, and
    when it was first seen read; whether its stall was reported."""

    read_offset: int
    read_at_s: float
    reported: bool = False


@dataclasses.dataclass(frozen=True)
class Stall:
    """A partition whose records read `stalled_s` ago are still not committed."""

    partition: str
    committed_offset: int | None
    read_offset: int
    stalled_s: float


def observe(
    watched: Mapping[str, Watched],
    committed_offsets: Mapping[str, int],
    read_offsets: Mapping[str, int],
    now_s: float,
    stall_after_s: float,
) -> tuple[dict[str, Watched], list[Stall]]:
    """The watch after one look at the positions, and the stalls to report now.

    `committed_offsets` are Kafka commit positions (the next offset to read),
    `read_offsets` the last offset read, both per partition name. A healthy partition's
    commit position passes what was read within a few commits, however busy it is; a
    stalled one, or one that creeps, leaves a record read `stall_after_s` ago behind it.
    """
    assert stall_after_s > 0, "a stall lasts some time"
    assert len(read_offsets) <= MAX_PARTITIONS_WATCHED, "more partitions than watched"
    after: dict[str, Watched] = {}
    stalls: list[Stall] = []
    for partition, read_offset in read_offsets.items():
        committed = committed_offsets.get(partition)
        mark = watched.get(partition)
        if mark is not None and committed is not None and committed > mark.read_offset:
            mark = None  # committed past: healthy so far
        if mark is None:
            if committed is None or read_offset >= committed:
                after[partition] = Watched(read_offset, now_s)
            continue
        stalled_s = now_s - mark.read_at_s
        due = stalled_s >= stall_after_s and not mark.reported
        after[partition] = dataclasses.replace(mark, reported=mark.reported or due)
        if due:
            stalls.append(Stall(partition, committed, read_offset, stalled_s))
    return after, stalls


def register(app: Any, interval_s: float, stall_after_s: float) -> None:
    """A Faust timer looking at the positions Faust's monitor keeps."""
    assert 0 < interval_s < stall_after_s, "looks more often than a stall lasts"
    state: dict[str, dict[str, Watched]] = {"watched": {}}
    metrics = stream_metrics.of(app)

    @app.timer(interval_s)  # type: ignore[untyped-decorator]
    async def watch_commits() -> None:
        monitor = app.monitor
        # The monitor keeps positions of partitions revoked since; only assigned ones count.
        assigned = app.consumer.assignment()
        watched, stalls = observe(
            state["watched"],
            {_name(tp): o for tp, o in monitor.tp_committed_offsets.items() if tp in assigned},
            {_name(tp): o for tp, o in monitor.tp_read_offsets.items() if tp in assigned},
            monitor.time(),
            stall_after_s,
        )
        state["watched"] = watched
        for stall in stalls:
            metrics.commit_stalled()
            log.warning(
                "faust commit position stalled; a worker restart clears it",
                partition=stall.partition,
                committed_offset=stall.committed_offset,
                read_offset=stall.read_offset,
                stalled_s=round(stall.stalled_s),
            )


def _name(tp: Any) -> str:
    return f"{tp.topic}[{tp.partition}]"
