"""Verifying every producer's hash chain and its checkpoints, from the stored wire bytes.

Each stored row keeps `raw`, the record exactly as its producer sealed it. For every
producer, its rows from every table are merged in seq order and each is checked:

- its `record_hash` is recomputed from `raw` (sha256 of prev_hash bytes and the body with
  record_hash cut to the empty string: what the producer hashed, whatever schema version
  wrote it) — a mismatch is `modified`;
- its `prev_hash` is its predecessor's `record_hash` — a break with contiguous seqs is
  `modified` (the predecessor was replaced or re-sealed);
- seqs run 1, 2, 3… — missing seqs are `deleted`, or `truncated` when the record after
  them is a checkpoint that vouches for them (the stored chain stops before the head a
  checkpoint covers);
- two different records at one seq: the one the chain goes on from is kept, the other is
  `inserted`; the same bytes twice is `duplicate` (the ledger would count it twice);
- a row stored at a position (its `seq` column) other than the seq its bytes were sealed
  with, or met after a later seq, is `reordered`;
- a checkpoint must cover exactly its predecessor (`checkpoint_seq` = its seq - 1 and
  `checkpoint_hash` = its prev_hash), else it is `modified`.

What this cannot see, by design of an unkeyed hash chain: records appended after the last
checkpoint by someone who knows the format, a tail deleted together with every checkpoint
after it, or a chain re-sealed from some point on together with its checkpoints. Heads
kept outside the store close those: an export's manifest lists the head of each chain it
covers, and `check_heads` finds a store whose record at that seq no longer hashes to it.

Seq gaps and re-emitted events: the sink drops a record whose event_id it has seen (a
processor re-emitting an alert with a deterministic id after a restart seals it again,
in a new chain). The dropped copy leaves a gap in its chain, and the store cannot say what
the missing record was: only its hash survives, as the successor's prev_hash. So verify
cannot tell such a gap from a deletion. So the sink keeps the bytes of the copies it
drops, with their auth header, in `chain_links` (sinks.links): they are walked here like
any stored row (hash, link to the predecessor; replay.forged checks their auth), so a
link that verifies closes its gap and one that does not is a finding. Links are counted
apart (`Report.links`), a link byte-identical to another stored row is no `duplicate`
(links are never counted as data), and a link whose record is not stored in its table is
`deleted` (`orphan_links`: a record moved from the data into the links).

Retention: the sink deletes a tenant's expired rows, which leaves gaps too. Before each
deletion it records the seqs it deletes per producer in `retention_cuts`; missing seqs
those cover are counted as expired, not reported; any other missing seq still is.

Rows are read per producer in (producer_id, seq) order and walked in a bounded window, so
memory does not grow with the store.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from replay.stored import Query, StoredRow, quote, rows_at, stored_rows
from schemas import codec
from schemas.records import GENESIS_HASH, ChainCheckpoint
from sinks.tables import ALL_TABLES, LINKS_TABLE

Kind = Literal[
    "modified",
    "deleted",
    "inserted",
    "reordered",
    "truncated",
    "duplicate",
    "column_mismatch",
    "forged",
]
KINDS: tuple[Kind, ...] = (
    "modified",
    "deleted",
    "inserted",
    "reordered",
    "truncated",
    "duplicate",
    "column_mismatch",  # a typed column differs from the row's raw (replay.columns)
    "forged",  # a record not authenticated as its producer's (replay.forged)
)

# Rows held to put a producer's rows back in sealed order when their stored positions were
# moved; a row moved further than this is still reported, but its old place reads as a gap.
REORDER_WINDOW = 10_000
SeqRange = tuple[int, int]
"""first..last seq, both included."""


def seq_ranges(seqs: Iterable[int]) -> list[SeqRange]:
    """Sorted, merged ranges of a set of seqs."""
    ranges: list[SeqRange] = []
    for seq in sorted(set(seqs)):
        if ranges and ranges[-1][1] + 1 == seq:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def unexplained(first: int, last: int, expired: Sequence[SeqRange]) -> tuple[int, list[SeqRange]]:
    """How many of seqs first..last the sorted, disjoint `expired` ranges cover, and the
    ranges of the rest."""
    accounted = 0
    rest: list[SeqRange] = []
    at = first
    index = max(0, bisect.bisect_right(expired, (first, first)) - 1)
    while at <= last and index < len(expired):
        start, end = expired[index]
        index += 1
        if end < at:
            continue
        if start > last:
            break
        if start > at:
            rest.append((at, start - 1))
        covered_to = min(end, last)
        accounted += covered_to - max(start, at) + 1
        at = covered_to + 1
    if at <= last:
        rest.append((at, last))
    return accounted, rest


@dataclass(frozen=True, slots=True)
class Finding:
    """One place where a stored chain is not what its producer sealed."""

    kind: Kind
    producer_id: str
    seq: int
    occurred_at: int | None
    detail: str
    tenant_id: str = ""
    table: str = ""
    event_id: str = ""
    through_seq: int = 0  # a gap's last missing seq (seq is its first); 0 for the rest

    @property
    def time(self) -> str:
        """occurred_at as ISO-8601 UTC (of the record, or the nearest stored one)."""
        if self.occurred_at is None:
            return "-"
        when = datetime.fromtimestamp(self.occurred_at / 1000, tz=UTC)
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def line(self) -> str:
        """One line for the terminal."""
        where = f" {self.table}" if self.table else ""
        event = f" event {self.event_id}" if self.event_id else ""
        return (
            f"{self.kind:<9} producer={self.producer_id} seq={self.seq} at={self.time}"
            f"{where}{event}: {self.detail}"
        )


@dataclass(slots=True)
class Report:
    """What a verification found."""

    producers: int = 0
    records: int = 0
    checkpoints: int = 0
    open_chains: int = 0
    expired: int = 0
    links: int = 0
    in_flight: int = 0  # gaps filled while verifying: records the sink had not stored yet
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Whether no chain shows tampering."""
        return not self.findings

    def summary(self) -> str:
        """The closing line."""
        by_kind = {k: sum(f.kind == k for f in self.findings) for k in KINDS}
        kinds = ", ".join(f"{n} {k}" for k, n in by_kind.items() if n)
        return (
            f"{self.producers} producers, {self.records} records verified, "
            f"{self.checkpoints} checkpoints, {self.open_chains} chains without a final "
            f"checkpoint (running or crashed), {self.expired} records deleted by retention, "
            f"{self.links} duplicates kept as chain links, "
            + (
                f"{self.in_flight} gaps filled while verifying (in flight), "
                if self.in_flight
                else ""
            )
            + f"{len(self.findings)} findings"
            + (f" ({kinds})" if kinds else "")
        )


@dataclass(slots=True)
class _Sealed:
    """A row with what its bytes say and the hash recomputed from them."""

    row: StoredRow
    order: int
    event_id: str
    occurred_at: int
    tenant_id: str
    producer_id: str
    seq: int
    prev_hash: str
    record_hash: str
    computed: str
    checkpoint: ChainCheckpoint | None

    @property
    def valid(self) -> bool:
        return self.computed == self.record_hash


def unseal(row: StoredRow, order: int = 0) -> _Sealed:
    """Read a row's envelope from its bytes and recompute its hash; ValueError when the
    bytes are not a record of ours."""
    try:
        envelope = codec.read_envelope(row.raw)
        computed = envelope.computed_hash(row.raw)
        checkpoint = None
        if envelope.schema.record_type is ChainCheckpoint:
            checkpoint = codec.decode_as(row.raw, ChainCheckpoint)
    except ValueError as exc:  # DecodeError, and prev_hash that is not hex
        raise ValueError(str(exc) or type(exc).__name__) from exc
    e = envelope
    return _Sealed(
        row,
        order,
        e.event_id,
        e.occurred_at,
        e.tenant_id,
        e.producer_id,
        e.seq,
        e.prev_hash,
        e.record_hash,
        computed,
        checkpoint,
    )


class _Chain:
    """One producer's walk: rows come in stored order, are put back in sealed order within
    a window, and are judged one seq at a time with the next seq in view."""

    def __init__(
        self, producer_id: str, report: Report, window: int, expired: Sequence[SeqRange] = ()
    ) -> None:
        self.producer_id = producer_id
        self.expired = expired
        self.report = report
        self.window = window
        self.heap: list[tuple[int, int, _Sealed]] = []
        self.order = itertools.count()
        self.highest_seen = 0
        self.pending: list[_Sealed] = []
        self.last_seq = 0
        self.head: str | None = GENESIS_HASH
        self.last_time: int | None = None
        self.last: _Sealed | None = None

    def find(
        self, kind: Kind, seq: int, at: int | None, detail: str, r: Any = None, *, through: int = 0
    ) -> None:
        self.report.findings.append(
            Finding(
                kind,
                self.producer_id,
                seq,
                at,
                detail,
                tenant_id=r.tenant_id if r is not None else "",
                table=r.row.table if r is not None else "",
                event_id=r.event_id if r is not None else "",
                through_seq=through,
            )
        )

    def add(self, row: StoredRow) -> None:
        self.report.records += 1
        if row.table == LINKS_TABLE:
            self.report.links += 1
        try:
            sealed = unseal(row, next(self.order))
        except ValueError as exc:
            self.report.findings.append(
                Finding(
                    "modified",
                    self.producer_id,
                    row.seq,
                    None,
                    f"stored bytes are not a sealed record: {exc}",
                    table=row.table,
                )
            )
            return
        if sealed.producer_id != row.producer_id:
            self.find(
                "modified",
                row.seq,
                sealed.occurred_at,
                f"stored under producer {row.producer_id}, sealed by {sealed.producer_id}",
                sealed,
            )
        if sealed.seq != row.seq or sealed.seq < self.highest_seen:
            self.find(
                "reordered",
                sealed.seq,
                sealed.occurred_at,
                f"sealed as seq {sealed.seq}, stored at position {row.seq}"
                + (f" after seq {self.highest_seen}" if sealed.seq < self.highest_seen else ""),
                sealed,
            )
        self.highest_seen = max(self.highest_seen, sealed.seq)
        heapq.heappush(self.heap, (sealed.seq, sealed.order, sealed))
        while len(self.heap) > self.window:
            self._next(heapq.heappop(self.heap)[2])

    def finish(self) -> None:
        while self.heap:
            self._next(heapq.heappop(self.heap)[2])
        if self.pending:
            self._judge(self.pending, [])
            self.pending = []
        if self.last is not None and self.last.checkpoint is None:
            self.report.open_chains += 1

    def _next(self, sealed: _Sealed) -> None:
        if self.pending and sealed.seq != self.pending[0].seq:
            self._judge(self.pending, [sealed])
            self.pending = []
        if self.pending or sealed.seq > self.last_seq:
            self.pending.append(sealed)
        # else: a row moved further back than the window, already reported as reordered

    def _judge(self, group: list[_Sealed], following: list[_Sealed]) -> None:
        seq = group[0].seq
        distinct: dict[bytes, _Sealed] = {}
        for copy in group:
            first = distinct.get(copy.row.raw)
            if first is None:
                distinct[copy.row.raw] = copy
            elif LINKS_TABLE not in (copy.row.table, first.row.table):
                self.find(
                    "duplicate", seq, copy.occurred_at, "the same record is stored twice", copy
                )
            # else a link: its bytes are stored once as data at most, counted by nobody
        candidates = list(distinct.values())
        chosen = candidates[0]
        if len(candidates) > 1:
            chosen = self._genuine(candidates, following)
            for other in candidates:
                if other is not chosen:
                    self.find(
                        "inserted",
                        seq,
                        other.occurred_at,
                        "a second, different record at this seq; the chain goes on from "
                        f"{chosen.record_hash[:12]}…, not from this one",
                        other,
                    )
        self._check(chosen)

    def _genuine(self, candidates: list[_Sealed], following: list[_Sealed]) -> _Sealed:
        links_on = {n.prev_hash for n in following if n.seq == candidates[0].seq + 1}
        ranked = sorted(
            candidates,
            key=lambda c: (
                not (c.valid and c.record_hash in links_on),
                not (c.valid and c.prev_hash == self.head),
                not c.valid,
                c.order,
            ),
        )
        return ranked[0]

    def _gap(self, first: int, last: int, record: _Sealed) -> None:
        """Report seqs first..last, missing before `record`, that retention did not take."""
        missing = f"seq {first}" if first == last else f"seqs {first}-{last}"
        at = self.last_time if self.last_time is not None else record.occurred_at
        covers = record.checkpoint.checkpoint_seq if record.checkpoint is not None else 0
        if covers >= first and last == record.seq - 1:
            self.find(
                "truncated",
                first,
                at,
                f"the stored chain stops at seq {first - 1} but the checkpoint at seq "
                f"{record.seq} vouches for records up to {covers}: {missing} missing",
                None,
                through=last,
            )
        else:
            self.find(
                "deleted",
                first,
                at,
                f"{missing} missing (seq {record.seq} links to {record.prev_hash[:12]}…)",
                None,
                through=last,
            )

    def _check(self, record: _Sealed) -> None:
        seq = record.seq
        if not record.valid:
            self.find(
                "modified",
                seq,
                record.occurred_at,
                "record_hash does not match the stored bytes",
                record,
            )
        if seq > self.last_seq + 1:
            accounted, gaps = unexplained(self.last_seq + 1, seq - 1, self.expired)
            self.report.expired += accounted
            for first, last in gaps:
                self._gap(first, last, record)
        elif self.head is not None and record.prev_hash != self.head:
            if seq == 1:
                self.find("modified", 1, record.occurred_at, "first record not at genesis", record)
            elif self.last is not None:
                self.find(
                    "modified",
                    self.last_seq,
                    self.last.occurred_at,
                    f"seq {seq} was sealed after another record: this one was replaced or "
                    "re-sealed",
                    self.last,
                )
        checkpoint = record.checkpoint
        if checkpoint is not None:
            self.report.checkpoints += 1
            if checkpoint.checkpoint_seq != seq - 1 or checkpoint.checkpoint_hash != (
                record.prev_hash
            ):
                self.find(
                    "modified",
                    seq,
                    record.occurred_at,
                    f"checkpoint of seq {checkpoint.checkpoint_seq} does not cover its predecessor",
                    record,
                )
        self.last_seq = seq
        self.head = record.record_hash
        self.last_time = record.occurred_at
        self.last = record


def verify_rows(
    rows: Iterable[StoredRow],
    *,
    tenant_id: str | None = None,
    window: int = REORDER_WINDOW,
    expired: Mapping[str, Sequence[SeqRange]] | None = None,
) -> Report:
    """Verify chains from rows in (producer_id, seq) order (each producer's rows together).
    With a tenant, only findings on that tenant's records, and gaps (whose records are not
    known), are kept; the chains are checked whole either way."""
    report = Report()
    for producer_id, producer_rows in itertools.groupby(rows, key=lambda r: r.producer_id):
        report.producers += 1
        chain = _Chain(producer_id, report, window, (expired or {}).get(producer_id, ()))
        for row in producer_rows:
            chain.add(row)
        chain.finish()
    if tenant_id is not None:
        report.findings = [f for f in report.findings if f.tenant_id in (tenant_id, "")]
    report.findings.sort(key=lambda f: (f.producer_id, f.seq, KINDS.index(f.kind)))
    return report


# --- heads kept outside the store -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KnownHead:
    """A producer's record_hash at a seq, as kept outside the store (an export manifest)."""

    producer_id: str
    seq: int
    record_hash: str
    source: str


def heads_of_manifest(manifest: Mapping[str, Any], source: str) -> list[KnownHead]:
    """The chain heads an export manifest lists; ValueError when it lists none readable."""
    try:
        return [
            KnownHead(str(h["producer_id"]), int(h["last_seq"]), str(h["record_hash"]), source)
            for h in manifest["chain_heads"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: not an export manifest with chain heads ({exc!r})") from exc


def check_heads(
    heads: Iterable[KnownHead],
    rows_at: Callable[[str, int], list[StoredRow]],
    expired: Mapping[str, Sequence[SeqRange]] | None = None,
) -> list[Finding]:
    """Whether the store still holds, at each known head's seq, a sound record with that
    hash. A chain re-sealed from before that seq (every link and checkpoint consistent,
    so the walk finds nothing) holds another hash there: `modified`. No record there:
    `deleted`, unless retention took it."""
    findings: list[Finding] = []
    for head in heads:
        stored = [unseal(row) for row in rows_at(head.producer_id, head.seq)]
        if any(s.valid and s.record_hash == head.record_hash for s in stored):
            continue
        if not stored:
            cut = (expired or {}).get(head.producer_id, ())
            if unexplained(head.seq, head.seq, cut)[0]:
                continue
            detail = f"the head kept in {head.source} ({head.record_hash[:12]}…) is not stored"
            findings.append(Finding("deleted", head.producer_id, head.seq, None, detail))
            continue
        found = stored[0]
        findings.append(
            Finding(
                "modified",
                head.producer_id,
                head.seq,
                found.occurred_at,
                f"stored record hashes to {found.record_hash[:12]}…, the head kept in "
                f"{head.source} is {head.record_hash[:12]}…: the chain was re-sealed",
                tenant_id=found.tenant_id,
                table=found.row.table,
                event_id=found.event_id,
            )
        )
    return findings


def retention_cuts(query: Query) -> dict[str, list[SeqRange]]:
    """The seqs retention deleted, per producer (see sinks.retention)."""
    seqs: dict[str, list[int]] = {}
    for producer_id, cut in query("SELECT producer_id, seqs FROM retention_cuts"):
        seqs.setdefault(str(producer_id), []).extend(int(seq) for seq in cut)
    return {producer_id: seq_ranges(found) for producer_id, found in seqs.items()}


def orphan_links(query: Query, *, tenant_id: str | None = None) -> list[Finding]:
    """One `deleted` finding per chain link whose record is not stored in the table it
    names (or that names no audit table): a link may close a gap in its chain, never stand
    in for data (a record moved from its table into the links would leave every chain
    whole). Retention cuts a link together with its record (sinks.retention)."""
    scope = "1" if tenant_id is None else f"tenant_id = {quote(tenant_id)}"
    known = ", ".join(quote(table) for table in ALL_TABLES)
    missing = " OR ".join(
        f"(table_name = {quote(t)} AND event_id NOT IN (SELECT event_id FROM {t}))"  # noqa: S608
        for t in ALL_TABLES
    )
    rows = query(
        "SELECT producer_id, seq, toUnixTimestamp64Milli(occurred_at), tenant_id, "  # noqa: S608
        f"table_name, toString(event_id) FROM {LINKS_TABLE} WHERE {scope} "
        f"AND (table_name NOT IN ({known}) OR {missing}) ORDER BY producer_id, seq"
    )
    return [
        Finding(
            "deleted",
            str(producer_id),
            int(seq),
            int(at),
            f"a chain link copies event {event_id} of {table_name}, which is not stored",
            str(tenant),
            LINKS_TABLE,
            str(event_id),
        )
        for producer_id, seq, at, tenant, table_name, event_id in rows
    ]


Walk = Callable[[frozenset[str] | None], Report]
"""Verifies the chains of the given producers (None: every producer in scope)."""
Settle = Callable[[Report, Walk], Report]
"""Confirms or drops a walk's gaps (replay.settle: records still in flight)."""


def chain_walk(
    query: Query,
    expired: Mapping[str, Sequence[SeqRange]],
    *,
    tenant_id: str | None = None,
    rows: Callable[..., Iterable[StoredRow]] = stored_rows,
) -> Walk:
    """The walk of the store's chains in a scope; `rows` reads them (stored_rows, or a
    wrapper that counts them)."""

    def walk(producers: frozenset[str] | None) -> Report:
        stored = rows(query, tenant_id=tenant_id, producers=producers)
        return verify_rows(stored, tenant_id=tenant_id, expired=expired)

    return walk


def verify_store(
    query: Query,
    *,
    tenant_id: str | None = None,
    heads: Sequence[KnownHead] = (),
    settle: Settle | None = None,
) -> Report:
    """Verify every chain in the store (or the chains carrying a tenant's records), and
    that the store still holds each head kept outside it. On a running stack, `settle`
    tells gaps from records in flight."""
    expired = retention_cuts(query)
    walk = chain_walk(query, expired, tenant_id=tenant_id)
    report = walk(None)
    if settle is not None:
        report = settle(report, walk)
    report.findings.extend(check_heads(heads, rows_at(query), expired))
    report.findings.extend(orphan_links(query, tenant_id=tenant_id))
    report.findings.sort(key=lambda f: (f.producer_id, f.seq, KINDS.index(f.kind)))
    return report
