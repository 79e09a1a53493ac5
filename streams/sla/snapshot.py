"""What the SLA processor keeps on disk per lineage partition. Pure: no I/O, clock or ids.

A `Snapshot` is one partition's `SlaState` (open windows, watermarks, revisions, the
closed and kept frontiers) and its outbox: the sealed records of windows (and their
alerts) already closed, kept until the store confirms them (not just the broker: see
agent.py), so that a window's content is fixed on disk before it is first published and
every resend, after a restart too, publishes the very same bytes.
`encode` / `decode` are exact inverses (`decode(encode(s)) == s`); `decode` refuses
anything else with ValueError (a file cut short, another version, hand edits).
"""

from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from streams.sla.logic import SlaState, Watermark, WindowId, WindowSummary
from streams.sla.sketch import Sketch, from_pairs

VERSION = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A sealed record waiting for the store: topic, key, value, auth headers."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """One lineage partition's SLA state and the records closed from it not yet stored."""

    state: SlaState = dataclasses.field(default_factory=SlaState)
    outbox: tuple[Outgoing, ...] = ()


def _float(value: float) -> str | float:
    # JSON has no infinity: an empty sketch's min and max are inf and -inf.
    return value if math.isfinite(value) else repr(value)


def _sketch(sketch: Sketch) -> list[Any]:
    return [
        sketch.alpha,
        sketch.max_buckets,
        list(sketch.indices),
        list(sketch.counts),
        sketch.zero_count,
        sketch.sum_thousandths,
        _float(sketch.min),
        _float(sketch.max),
    ]


def _sketch_of(fields: list[Any]) -> Sketch:
    alpha, max_buckets, indices, counts, zero, total, low, high = fields
    if not indices and not zero:
        return Sketch(alpha=float(alpha), max_buckets=int(max_buckets))
    return from_pairs(
        zip((int(i) for i in indices), (int(c) for c in counts), strict=True),
        zero_count=int(zero),
        sum_thousandths=int(total),
        min_value=float(low),
        max_value=float(high),
        alpha=float(alpha),
        max_buckets=int(max_buckets),
    )


def _window(w: WindowSummary) -> list[Any]:
    return [
        w.provider,
        w.model_selected,
        w.tenant_id,
        w.start_ms,
        w.end_ms,
        w.revision,
        w.requests,
        w.errors,
        w.caller_faults,
        _sketch(w.latency_ms),
        _sketch(w.ttft_ms),
        _sketch(w.gateway_overhead_ms),
        w.prompt_tokens,
        w.completion_tokens,
        w.cost_nanousd,
    ]


def _window_of(f: list[Any]) -> WindowSummary:
    return WindowSummary(
        provider=str(f[0]),
        model_selected=str(f[1]),
        tenant_id=str(f[2]),
        start_ms=int(f[3]),
        end_ms=int(f[4]),
        revision=int(f[5]),
        requests=int(f[6]),
        errors=int(f[7]),
        caller_faults=int(f[8]),
        latency_ms=_sketch_of(f[9]),
        ttft_ms=_sketch_of(f[10]),
        gateway_overhead_ms=_sketch_of(f[11]),
        prompt_tokens=int(f[12]),
        completion_tokens=int(f[13]),
        cost_nanousd=int(f[14]),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    return base64.b64decode(str(text), validate=True)


def encode(snapshot: Snapshot) -> bytes:
    """The snapshot as the processor writes it: JSON, bytes in base64."""
    state = snapshot.state
    return orjson.dumps(
        {
            "version": VERSION,
            "windows": [_window(w) for w in state.windows.values()],
            "applied_seqs": [
                [tenant, producer, mark.seq, mark.last_occurred_at]
                for (tenant, producer), mark in state.applied_seqs.items()
            ],
            "revisions": [[*minute, revision] for minute, revision in state.revisions.items()],
            "open_from_ms": state.open_from_ms,
            "kept_from_ms": state.kept_from_ms,
            "expired": state.expired,
            "outbox": [
                [o.topic, _b64(o.key), _b64(o.value), [[k, _b64(v)] for k, v in o.headers]]
                for o in snapshot.outbox
            ],
        }
    )


def decode(data: bytes) -> Snapshot:
    """The snapshot `encode` wrote; ValueError for anything else."""
    try:
        fields = orjson.loads(data)
        if not isinstance(fields, dict) or fields.get("version") != VERSION:
            raise ValueError("not an SLA snapshot of version 1")
        windows: dict[WindowId, WindowSummary] = {}
        for item in fields["windows"]:
            window = _window_of(item)
            windows[
                (
                    window.provider,
                    window.model_selected,
                    window.tenant_id,
                    window.start_ms,
                    window.revision,
                )
            ] = window
        marks: Mapping[tuple[str, str], Watermark] = {
            (str(tenant), str(producer)): Watermark(int(seq), int(last))
            for tenant, producer, seq, last in fields["applied_seqs"]
        }
        revisions = {
            (str(p), str(m), str(t), int(start)): int(revision)
            for p, m, t, start, revision in fields["revisions"]
        }
        state = SlaState(
            windows=MappingProxyType(windows),
            applied_seqs=MappingProxyType(dict(marks)),
            revisions=MappingProxyType(revisions),
            open_from_ms=int(fields["open_from_ms"]),
            kept_from_ms=int(fields["kept_from_ms"]),
            expired=int(fields["expired"]),
        )
        outbox = tuple(
            Outgoing(
                str(topic),
                _unb64(key),
                _unb64(value),
                tuple((str(k), _unb64(v)) for k, v in headers),
            )
            for topic, key, value, headers in fields["outbox"]
        )
    except (TypeError, KeyError, IndexError, ValueError, AssertionError) as exc:
        raise ValueError(f"not an SLA snapshot: {exc}") from exc
    return Snapshot(state, outbox)
