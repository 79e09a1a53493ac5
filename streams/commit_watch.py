"""Warns when Faust stops advancing a partition's commit position while it reads on.

Faust commits a partition up to the first run of consecutive acknowledged offsets, so
anything that breaks the run holds the position back while the agents go on reading:
the group's lag grows and every restart refolds more (nothing is lost; the records
behind the position are folded again, idempotently). `streams.app` mends the cause
seen here (offsets acknowledged twice); upstream reports others (robinhood/faust #385,
#681; faust-streaming #312, #606). This watch makes any of them visible: a partition
read past its commit position, whose position has not moved for `stall_after_s`, is
logged once per stall at warning level. Faust commits every few seconds, so a healthy
partition never qualifies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import structlog

log = structlog.get_logger("streams.commit_watch")

MAX_PARTITIONS_WATCHED = 100_000  # far above any assignment; bounds the watch's memory


@dataclasses.dataclass(frozen=True)
class Watched:
    """A partition's commit position when last seen, and since when it has not moved
    while records after it were read (None: nothing read past it)."""

    committed_offset: int | None
    behind_since_s: float | None = None
    reported: bool = False


@dataclasses.dataclass(frozen=True)
class Stall:
    """A partition read past a commit position that stopped moving."""

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
    `read_offsets` the last offset read, both per partition name."""
    assert stall_after_s > 0, "a stall lasts some time"
    assert len(read_offsets) <= MAX_PARTITIONS_WATCHED, "more partitions than watched"
    after: dict[str, Watched] = {}
    stalls: list[Stall] = []
    for partition, read_offset in read_offsets.items():
        committed = committed_offsets.get(partition)
        behind = committed is None or read_offset >= committed
        before = watched.get(partition)
        if not behind:
            after[partition] = Watched(committed)
            continue
        if before is None or before.committed_offset != committed or before.behind_since_s is None:
            after[partition] = Watched(committed, behind_since_s=now_s)
            continue
        stalled_s = now_s - before.behind_since_s
        due = stalled_s >= stall_after_s and not before.reported
        after[partition] = dataclasses.replace(before, reported=before.reported or due)
        if due:
            stalls.append(Stall(partition, committed, read_offset, stalled_s))
    return after, stalls


def register(app: Any, interval_s: float, stall_after_s: float) -> None:
    """A Faust timer looking at the positions Faust's monitor keeps."""
    assert 0 < interval_s < stall_after_s, "looks more often than a stall lasts"
    state: dict[str, dict[str, Watched]] = {"watched": {}}

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
            log.warning(
                "faust commit position stalled; a worker restart clears it",
                partition=stall.partition,
                committed_offset=stall.committed_offset,
                read_offset=stall.read_offset,
                stalled_s=round(stall.stalled_s),
            )


def _name(tp: Any) -> str:
    return f"{tp.topic}[{tp.partition}]"
