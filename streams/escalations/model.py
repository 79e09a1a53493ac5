"""The escalation queues' vocabulary: configuration, escalations, reviewer actions,
notices and the state the fold in `logic.py` evolves. Pure data, no rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

from schemas.records import Event

Priority = Literal["P1", "P2", "P3", "P4"]
PRIORITIES: tuple[Priority, ...] = ("P1", "P2", "P3", "P4")
Status = Literal["open", "claimed", "resolved"]
Verdict = Literal["approve", "reject"]
ActionKind = Literal["opened", "claimed", "reassigned", "resolved"]
IgnoredReason = Literal[
    "duplicate",
    "resolved",
    "claimed_by_other",
    "tenant_mismatch",
    "invalid_decision",
    "early_buffer_full",
    "over_capacity",
]

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DEFAULT_SLA_MS: Mapping[Priority, int] = MappingProxyType(
    {"P1": 30 * MINUTE_MS, "P2": 2 * HOUR_MS, "P3": 8 * HOUR_MS, "P4": 24 * HOUR_MS}
)
CENTRAL_QUEUE = "central"


@dataclasses.dataclass(frozen=True, slots=True)
class EscalationConfig:
    """Where escalations go, how long reviewers have, and how much state is kept.

    `team_owners` maps (tenant_id, team_id) to the owner queue of a team-scoped policy;
    categories in `cross_boundary_categories` concern more than one team and go to
    `central_queue` instead. `sla_ms` is the time from opening to resolution per priority.
    """

    team_owners: Mapping[tuple[str, str], str] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    cross_boundary_categories: frozenset[str] = frozenset()
    central_queue: str = CENTRAL_QUEUE
    sla_ms: Mapping[Priority, int] = dataclasses.field(default_factory=lambda: DEFAULT_SLA_MS)
    resolved_retention: int = 10_000
    early_buffer_ids: int = 1_000
    early_actions_per_id: int = 16
    max_unresolved: int = 100_000
    opened_watermarks: int = 10_000
    """Most (tenant, producer) open watermarks kept; the least recently advanced goes."""

    def __post_init__(self) -> None:
        assert self.central_queue, "the central queue needs a name"
        assert all(self.sla_ms.get(p, 0) >= 1 for p in PRIORITIES), "every priority has an SLA"
        assert self.resolved_retention >= 1, "duplicates of the last resolve must be recognised"
        assert self.early_buffer_ids >= 1, "an action read before its open must wait somewhere"
        assert self.early_actions_per_id >= 1, "an early escalation keeps at least one action"
        assert self.max_unresolved >= 1, "the queues hold at least one escalation"
        assert self.opened_watermarks >= 1, "the current producer's opens are recognised"


@dataclasses.dataclass(frozen=True, slots=True)
class Escalation:
    """One escalation as reviewers see it. `deadline_at` is fixed when it opens (a later
    config or a reassignment does not move it); `alerted_at` is the tick that reported it
    overdue; `applied_seqs` is the highest action `seq` applied per producer."""

    escalation_id: str
    tenant_id: str
    team_id: str
    category: str
    priority: Priority
    queue: str
    opened_at: int
    deadline_at: int
    trace_id: str = ""
    reason: str = ""
    status: Status = "open"
    claimed_by: str | None = None
    decision: Verdict | None = None
    resolved_by: str | None = None
    note: str = ""
    resolved_at: int | None = None
    alerted_at: int | None = None
    applied_seqs: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )

    @property
    def sla_breached(self) -> bool:
        """Whether the review missed its deadline: reported by a tick, or resolved late
        before any tick noticed (no alert then: nobody needs paging for a closed case)."""
        late = self.resolved_at is not None and self.resolved_at > self.deadline_at
        return self.alerted_at is not None or late


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """A reviewer took an escalation: theirs until they resolve it or it is reassigned."""

    escalation_id: str
    tenant_id: str
    actor: str
    occurred_at: int
    producer_id: str
    seq: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Reassigned:
    """Someone moved an escalation to another queue, unclaimed, or straight to `reviewer`."""

    escalation_id: str
    tenant_id: str
    actor: str
    occurred_at: int
    producer_id: str
    seq: int
    queue: str
    reviewer: str | None = None

    def __post_init__(self) -> None:
        assert self.queue, "an escalation is reassigned to a named queue"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    """Someone decided an escalation; the held call proceeds (approve) or is refused."""

    escalation_id: str
    tenant_id: str
    actor: str
    occurred_at: int
    producer_id: str
    seq: int
    decision: Verdict
    note: str = ""


Action = Claimed | Reassigned | Resolved


@dataclasses.dataclass(frozen=True, slots=True)
class Tick:
    """The processor's periodic clock: the moment overdue escalations are looked for."""

    now_ms: int


Input = Event | Action | Tick
"""What `fold` takes. Records other than opens, resolves and breach alerts change nothing;
an `EscalationSlaBreached` (this processor's own alert, read back when the queues are
rebuilt) marks its escalation as alerted, so the rebuilt queues do not page it again."""


@dataclasses.dataclass(frozen=True, slots=True)
class EscalationOverdue:
    """An escalation still unresolved after its deadline; reported once per escalation."""

    escalation_id: str
    tenant_id: str
    queue: str
    priority: Priority
    deadline_at: int
    breached_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class Routed:
    """An escalation entered a queue: when it opened (`reassigned_by` None) or was moved."""

    escalation_id: str
    tenant_id: str
    queue: str
    priority: Priority
    deadline_at: int
    reassigned_by: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Ignored:
    """An input that changed nothing, and why: for the processor's logs and metrics."""

    escalation_id: str
    kind: ActionKind
    reason: IgnoredReason


Notice = EscalationOverdue | Routed | Ignored


@dataclasses.dataclass(frozen=True, slots=True)
class Queues:
    """Everything the processor tracks, bounded by the config.

    `unresolved`: open and claimed escalations by id, in opening order (at most
    `max_unresolved`). `resolved`: the most recently resolved, oldest first (at most
    `resolved_retention`), kept so their duplicates and late actions are recognised.
    `early`: actions read before their open, by escalation id, oldest first (at most
    `early_buffer_ids` ids of `early_actions_per_id` actions). `ticked_at`: latest tick.
    `opened_seqs`: per (tenant_id, producer_id), the highest `seq` of an open folded, least
    recently advanced first (at most `opened_watermarks`): an open at or below it is a
    redelivery or a resend, however late (even after its escalation left `resolved`).
    """

    unresolved: Mapping[str, Escalation] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    resolved: Mapping[str, Escalation] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    early: Mapping[str, tuple[Action, ...]] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    ticked_at: int = 0
    opened_seqs: Mapping[tuple[str, str], int] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Depth:
    """One queue's backlog: unclaimed and claimed counts, the age of its oldest unresolved
    escalation, and unresolved escalations per priority (every priority present)."""

    open_count: int
    claimed_count: int
    oldest_age_ms: int
    by_priority: Mapping[Priority, int]
