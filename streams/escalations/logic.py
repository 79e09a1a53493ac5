"""Escalation queues as projections of review events. Pure: no I/O, no clock, no ids.

The gateway opens an escalation when a human-oversight policy asks for a review
(`escalation.opened` on `govledger.escalations`); reviewers claim, reassign and resolve it
through the admin API (control events). `evolve` routes each escalation to its owner's
queue, applies each reviewer action once, and on the processor's periodic `Tick` reports
every escalation whose review is overdue, once, so one page goes out per missed SLA.

Opens (the gateway) and actions (the admin API) come from different producers on
different topics: both are keyed by tenant, but nothing orders one topic against the
other, so an action can be read before the open it concerns. It then waits in a bounded
buffer and is applied when the open arrives.

open ──claim──▶ claimed ──reassign──▶ open (or claimed, when reassigned to a reviewer)
open | claimed ──resolve──▶ resolved                    (final: later actions are ignored)
"""

from __future__ import annotations

import dataclasses
import heapq
import uuid
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from schemas.records import (
    EscalationChanged,
    EscalationOpened,
    EscalationResolved,
    EscalationSlaBreached,
    Event,
)
from schemas.settings import SettingsError, StreamSettings, env_name
from streams.escalations.model import (
    CENTRAL_QUEUE,
    DEFAULT_SLA_MS,
    HOUR_MS,
    MINUTE_MS,
    PRIORITIES,
    Action,
    ActionKind,
    Claimed,
    Depth,
    Escalation,
    EscalationConfig,
    EscalationOverdue,
    Ignored,
    IgnoredReason,
    Input,
    Notice,
    Priority,
    Queues,
    Reassigned,
    Resolved,
    Routed,
    Status,
    Tick,
    Verdict,
)

# The fold's public API: its vocabulary (streams/escalations/model.py) and its rules.
__all__ = [
    "BREACH_ID_NAMESPACE",
    "CENTRAL_QUEUE",
    "CLAIMED",
    "DEFAULT_SLA_MS",
    "HOUR_MS",
    "MINUTE_MS",
    "PRIORITIES",
    "REASSIGNED",
    "Action",
    "ActionKind",
    "Claimed",
    "Depth",
    "Escalation",
    "EscalationConfig",
    "EscalationOverdue",
    "Ignored",
    "IgnoredReason",
    "Input",
    "Notice",
    "Priority",
    "Queues",
    "Reassigned",
    "Resolved",
    "Routed",
    "Status",
    "Tick",
    "Verdict",
    "act",
    "action_of",
    "breach_alert_id",
    "config_of",
    "evolve",
    "find",
    "fold",
    "input_of",
    "open_escalations",
    "opened",
    "parse_sla_s",
    "priority_of",
    "queue_depths",
    "rebuild",
    "resolved_of",
    "route",
    "to_alert",
]

# str → Literal lookups: the records carry plain strings, the state only known values.
_PRIORITY: Mapping[str, Priority] = MappingProxyType({p: p for p in PRIORITIES})
_VERDICT: Mapping[str, Verdict] = MappingProxyType({"approve": "approve", "reject": "reject"})


# --- inputs -----------------------------------------------------------------------------


def priority_of(raw: str) -> Priority:
    """The priority a record names. Packs allow only P1..P4; anything else (a newer
    gateway's label) is taken as P1, so an unknown label never delays a review."""
    return _PRIORITY.get(raw, "P1")


def resolved_of(record: EscalationResolved) -> Resolved | None:
    """The resolve action a control record carries; None when its decision is neither
    approve nor reject (the admin API sends only those)."""
    verdict = _VERDICT.get(record.decision)
    if verdict is None:
        return None
    return Resolved(
        escalation_id=record.escalation_id,
        tenant_id=record.tenant_id,
        actor=record.resolved_by,
        occurred_at=record.occurred_at,
        producer_id=record.producer_id,
        seq=record.seq,
        decision=verdict,
        note=record.note,
    )


def route(tenant_id: str, team_id: str, category: str, config: EscalationConfig) -> str:
    """The queue an escalation goes to: the central queue for a cross-boundary category
    (no one team owns it), else the team's configured owner, else the team's own queue."""
    if category in config.cross_boundary_categories:
        return config.central_queue
    return config.team_owners.get((tenant_id, team_id), f"team:{team_id}")


def opened(record: EscalationOpened, config: EscalationConfig) -> Escalation:
    """A new escalation, routed, with its deadline fixed from its opening and priority."""
    priority = priority_of(record.priority)
    return Escalation(
        escalation_id=record.escalation_id,
        tenant_id=record.tenant_id,
        team_id=record.team_id,
        category=record.category,
        priority=priority,
        queue=route(record.tenant_id, record.team_id, record.category, config),
        opened_at=record.occurred_at,
        deadline_at=record.occurred_at + config.sla_ms[priority],
        trace_id=record.trace_id,
        reason=record.reason,
    )


def act(escalation: Escalation, action: Action) -> tuple[Escalation, IgnoredReason | None]:
    """One escalation after one reviewer action, and why the action was ignored, if it was.

    An action at or below the escalation's watermark for its producer was applied
    before (admin producers keep one tenant's records in `seq` order). A resolve is
    final. The first claim wins: another reviewer's claim is ignored until a reassign,
    yet still advances the watermark, so its redelivery after that reassign is a
    duplicate rather than a claim nobody made then.
    """
    if action.tenant_id != escalation.tenant_id:
        return escalation, "tenant_mismatch"
    if escalation.applied_seqs.get(action.producer_id, 0) >= action.seq:
        return escalation, "duplicate"
    if escalation.status == "resolved":
        return escalation, "resolved"
    seqs = MappingProxyType({**escalation.applied_seqs, action.producer_id: action.seq})
    if isinstance(action, Claimed):
        if escalation.claimed_by not in (None, action.actor):
            return dataclasses.replace(escalation, applied_seqs=seqs), "claimed_by_other"
        claimed = dataclasses.replace(
            escalation, status="claimed", claimed_by=action.actor, applied_seqs=seqs
        )
        return claimed, None
    if isinstance(action, Reassigned):
        moved = dataclasses.replace(
            escalation,
            queue=action.queue,
            status="open" if action.reviewer is None else "claimed",
            claimed_by=action.reviewer,
            applied_seqs=seqs,
        )
        return moved, None
    resolved = dataclasses.replace(
        escalation,
        status="resolved",
        decision=action.decision,
        resolved_by=action.actor,
        note=action.note,
        resolved_at=action.occurred_at,
        applied_seqs=seqs,
    )
    return resolved, None


def evolve(
    state: Queues, event: Input, config: EscalationConfig
) -> tuple[Queues, tuple[Notice, ...]]:
    """The queues after one input, and what it caused: `Routed` when an escalation enters
    a queue, `EscalationOverdue` (on a `Tick` only) for each newly overdue one, `Ignored` for
    an input that changed nothing. Events other than escalation ones change nothing."""
    return fold((event,), config, state)


def fold(
    events: Iterable[Input], config: EscalationConfig, state: Queues | None = None
) -> tuple[Queues, tuple[Notice, ...]]:
    """Apply inputs in order: what the processor (one at a time) and replay both do."""
    draft = _Draft.of(state or Queues())
    for event in events:
        draft.apply(event, config)
    return draft.freeze(), tuple(draft.notices)


# --- queries ----------------------------------------------------------------------------


def find(state: Queues, escalation_id: str) -> Escalation | None:
    """An escalation by id, unresolved or recently resolved."""
    return state.unresolved.get(escalation_id) or state.resolved.get(escalation_id)


def open_escalations(
    state: Queues, queue: str | None = None, tenant_id: str | None = None
) -> tuple[Escalation, ...]:
    """Unresolved escalations (open and claimed), most urgent first: earliest deadline,
    then earliest opened. Queue names are shared across tenants (`central`,
    `team:<team_id>`), so a caller answering one tenant filters by `tenant_id`."""
    chosen = (
        e
        for e in state.unresolved.values()
        if (queue is None or e.queue == queue) and (tenant_id is None or e.tenant_id == tenant_id)
    )
    return tuple(sorted(chosen, key=lambda e: (e.deadline_at, e.opened_at, e.escalation_id)))


def queue_depths(state: Queues, now_ms: int, tenant_id: str | None = None) -> dict[str, Depth]:
    """Backlog per queue as of `now_ms`; queues with nothing unresolved are absent."""
    counts: dict[str, dict[str, int]] = {}
    oldest_at: dict[str, int] = {}
    for e in state.unresolved.values():
        if tenant_id is not None and e.tenant_id != tenant_id:
            continue
        count = counts.setdefault(e.queue, dict.fromkeys((*PRIORITIES, "open", "claimed"), 0))
        count[e.status] += 1
        count[e.priority] += 1
        oldest_at[e.queue] = min(oldest_at.get(e.queue, e.opened_at), e.opened_at)
    return {
        queue: Depth(
            open_count=count["open"],
            claimed_count=count["claimed"],
            oldest_age_ms=max(now_ms - oldest_at[queue], 0),
            by_priority=MappingProxyType({p: count[p] for p in PRIORITIES}),
        )
        for queue, count in counts.items()
    }


# --- the fold ---------------------------------------------------------------------------


def _kind(action: Action) -> ActionKind:
    if isinstance(action, Claimed):
        return "claimed"
    if isinstance(action, Reassigned):
        return "reassigned"
    return "resolved"


@dataclasses.dataclass(slots=True)
class _Draft:
    """A working copy `fold` changes in place and freezes once at the end, so replaying
    n events copies the state once rather than n times. Never used after `freeze`."""

    unresolved: dict[str, Escalation]
    resolved: dict[str, Escalation]
    early: dict[str, tuple[Action, ...]]
    ticked_at: int
    notices: list[Notice]
    opened_seqs: dict[tuple[str, str], int]

    @classmethod
    def of(cls, state: Queues) -> _Draft:
        return cls(
            dict(state.unresolved),
            dict(state.resolved),
            dict(state.early),
            state.ticked_at,
            [],
            dict(state.opened_seqs),
        )

    def freeze(self) -> Queues:
        return Queues(
            MappingProxyType(self.unresolved),
            MappingProxyType(self.resolved),
            MappingProxyType(self.early),
            self.ticked_at,
            MappingProxyType(self.opened_seqs),
        )

    def apply(self, event: Input, config: EscalationConfig) -> None:
        if isinstance(event, Tick):
            self.tick(event.now_ms)
        elif isinstance(event, EscalationOpened):
            self.open(event, config)
        elif isinstance(event, EscalationResolved):
            action = resolved_of(event)
            if action is None:
                self.ignore(event.escalation_id, "resolved", "invalid_decision")
            else:
                self.act(action, config)
        elif isinstance(event, Claimed | Reassigned | Resolved):
            self.act(event, config)
        elif isinstance(event, EscalationSlaBreached):
            self.alerted(event)

    def alerted(self, record: EscalationSlaBreached) -> None:
        # The breach was published: never again for this escalation. An alert for an
        # escalation not held here (another worker's tenant, or one forgotten) is skipped.
        escalation_id = record.escalation_id
        for held in (self.unresolved, self.resolved):
            e = held.get(escalation_id)
            if e is not None and e.alerted_at is None and e.tenant_id == record.tenant_id:
                held[escalation_id] = dataclasses.replace(e, alerted_at=record.breached_at)

    def ignore(self, escalation_id: str, kind: ActionKind, reason: IgnoredReason) -> None:
        self.notices.append(Ignored(escalation_id, kind, reason))

    def open(self, record: EscalationOpened, config: EscalationConfig) -> None:
        escalation_id = record.escalation_id
        if not self.first_open_of(record, config) or (
            escalation_id in self.unresolved or escalation_id in self.resolved
        ):
            self.ignore(escalation_id, "opened", "duplicate")
            return
        waiting = self.early.pop(escalation_id, ())
        if len(self.unresolved) >= config.max_unresolved:
            # Evicting an older escalation would hide the most overdue review; refusing
            # the new one is reported, and its SLA alerting is the operator's cue.
            self.ignore(escalation_id, "opened", "over_capacity")
            for action in waiting:
                self.ignore(escalation_id, _kind(action), "over_capacity")
            return
        escalation = opened(record, config)
        self.unresolved[escalation_id] = escalation
        self.notices.append(
            Routed(
                escalation_id,
                escalation.tenant_id,
                escalation.queue,
                escalation.priority,
                escalation.deadline_at,
            )
        )
        for action in waiting:
            self.act(action, config)

    def first_open_of(self, record: EscalationOpened, config: EscalationConfig) -> bool:
        """Whether the open is above its producer's watermark for its tenant (one
        producer's records for one tenant stay in `seq` order), advancing it if so: what
        is decided about an open (opened, refused over capacity) is decided once."""
        if record.seq <= 0:
            return True  # unsealed: recognised by its escalation id only
        producer = (record.tenant_id, record.producer_id)
        if self.opened_seqs.get(producer, 0) >= record.seq:
            return False
        self.opened_seqs.pop(producer, None)  # re-inserted last: the most recent
        self.opened_seqs[producer] = record.seq
        if len(self.opened_seqs) > config.opened_watermarks:
            del self.opened_seqs[next(iter(self.opened_seqs))]
        return True

    def act(self, action: Action, config: EscalationConfig) -> None:
        escalation_id = action.escalation_id
        escalation = self.unresolved.get(escalation_id) or self.resolved.get(escalation_id)
        if escalation is None:
            self.wait(action, config)
            return
        after, ignored = act(escalation, action)
        if after.status != "resolved":
            self.unresolved[escalation_id] = after
        elif escalation.status != "resolved":
            del self.unresolved[escalation_id]
            self.resolved[escalation_id] = after
            if len(self.resolved) > config.resolved_retention:
                del self.resolved[next(iter(self.resolved))]
        if ignored is not None:
            self.ignore(escalation_id, _kind(action), ignored)
        elif isinstance(action, Reassigned):
            self.notices.append(
                Routed(
                    escalation_id,
                    after.tenant_id,
                    after.queue,
                    after.priority,
                    after.deadline_at,
                    reassigned_by=action.actor,
                )
            )

    def wait(self, action: Action, config: EscalationConfig) -> None:
        escalation_id = action.escalation_id
        waiting = self.early.get(escalation_id, ())
        if any(w.producer_id == action.producer_id and w.seq >= action.seq for w in waiting):
            self.ignore(escalation_id, _kind(action), "duplicate")
            return
        if len(waiting) >= config.early_actions_per_id:
            self.ignore(escalation_id, _kind(action), "early_buffer_full")
            return
        if not waiting and len(self.early) >= config.early_buffer_ids:
            dropped_id = next(iter(self.early))
            for dropped in self.early.pop(dropped_id):
                self.ignore(dropped_id, _kind(dropped), "early_buffer_full")
        self.early[escalation_id] = (*waiting, action)

    def tick(self, now_ms: int) -> None:
        if now_ms <= self.ticked_at:
            return
        self.ticked_at = now_ms
        overdue = sorted(
            (
                e
                for e in self.unresolved.values()
                if e.alerted_at is None and now_ms > e.deadline_at
            ),
            key=lambda e: (e.deadline_at, e.escalation_id),
        )
        for e in overdue:
            self.unresolved[e.escalation_id] = dataclasses.replace(e, alerted_at=now_ms)
            self.notices.append(
                EscalationOverdue(
                    e.escalation_id, e.tenant_id, e.queue, e.priority, e.deadline_at, now_ms
                )
            )


# --- records and settings in, inputs and alerts out (used by the agent and the admin API)

CLAIMED = "escalation.claimed"
REASSIGNED = "escalation.reassigned"


def parse_sla_s(text: str) -> dict[Priority, int]:
    """'P1=1800,P2=7200,…' as milliseconds per priority. Every priority must be named
    once, with a whole number of seconds >= 1; ValueError says what is wrong."""
    sla_ms: dict[Priority, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        label, _, seconds = item.partition("=")
        label, seconds = label.strip(), seconds.strip()
        if label not in PRIORITIES:
            raise ValueError(f"unknown priority {label!r} (P1..P4) in {text!r}")
        priority = priority_of(label)
        if priority in sla_ms:
            raise ValueError(f"priority {label} named twice in {text!r}")
        if not seconds.isdigit() or int(seconds) < 1:
            raise ValueError(f"{label} needs a whole number of seconds >= 1, not {seconds!r}")
        sla_ms[priority] = int(seconds) * 1_000
    missing = [p for p in PRIORITIES if p not in sla_ms]
    if missing:
        raise ValueError(f"no SLA for {', '.join(missing)} in {text!r}")
    return sla_ms


def config_of(settings: StreamSettings) -> EscalationConfig:
    """The escalation config the settings name; SettingsError for unusable values."""
    try:
        sla_ms = parse_sla_s(settings.escalation_sla_s)
    except ValueError as exc:
        raise SettingsError(f"{env_name('escalation_sla_s')}: {exc}") from exc
    if settings.escalation_tick_s <= 0:
        raise SettingsError(f"{env_name('escalation_tick_s')} must be > 0 seconds")
    central = frozenset(
        c.strip() for c in settings.escalation_central_categories.split(",") if c.strip()
    )
    sla: Mapping[Priority, int] = MappingProxyType(sla_ms)
    return EscalationConfig(cross_boundary_categories=central, sla_ms=sla)


def action_of(record: EscalationChanged) -> Claimed | Reassigned | None:
    """The reviewer action a claim or reassign record carries; None for an event type it
    does not know or a reassign without a queue (the admin API sends neither)."""
    envelope: dict[str, Any] = {
        "escalation_id": record.escalation_id,
        "tenant_id": record.tenant_id,
        "actor": record.actor,
        "occurred_at": record.occurred_at,
        "producer_id": record.producer_id,
        "seq": record.seq,
    }
    if record.event_type == CLAIMED:
        return Claimed(**envelope)
    if record.event_type == REASSIGNED and record.queue:
        return Reassigned(**envelope, queue=record.queue, reviewer=record.reviewer or None)
    return None


def input_of(event: Event) -> Input | None:
    """What the queues fold from a record, or None for records they ignore (most of the
    control topic). Opens, resolves and breach alerts are folded as they are (see `fold`)."""
    if isinstance(event, EscalationOpened | EscalationResolved | EscalationSlaBreached):
        return event
    if isinstance(event, EscalationChanged):
        return action_of(event)
    return None


# The namespace of breach alert ids: uuid5 of it and the escalation (see breach_alert_id).
BREACH_ID_NAMESPACE = uuid.UUID("2b7c9e14-8d3a-4f61-b0c5-7a1e6d9f3c28")


def breach_alert_id(escalation_id: str) -> str:
    """The event id of an escalation's `escalation.sla_breached` record, derived from the
    escalation (one breach per escalation, ever): a re-emission carries the same id and
    the sink's event-id dedupe drops it. A UUID (version 5), as the schema expects."""
    return str(
        uuid.uuid5(BREACH_ID_NAMESPACE, f"{EscalationSlaBreached.event_type_name}/{escalation_id}")
    )


def to_alert(breach: EscalationOverdue, *, occurred_at: int) -> EscalationSlaBreached:
    """The `escalation.sla_breached` record of a breach, with its derived id; the chain
    seals it."""
    return EscalationSlaBreached(
        event_id=breach_alert_id(breach.escalation_id),
        event_type=EscalationSlaBreached.event_type_name,
        occurred_at=occurred_at,
        tenant_id=breach.tenant_id,
        escalation_id=breach.escalation_id,
        queue=breach.queue,
        priority=breach.priority,
        deadline_at=breach.deadline_at,
        breached_at=breach.breached_at,
    )


# --- rebuilding the queues from history (a restarted or rebalanced processor) ----------


def _rank(item: Input) -> tuple[int, int]:
    """Merge order of history: by the time a record says it happened, an open before an
    action of the same millisecond."""
    if isinstance(item, Tick):
        return (item.now_ms, 0)
    return (item.occurred_at, 0 if isinstance(item, EscalationOpened) else 1)


def rebuild(
    logs: Iterable[Sequence[Event]], config: EscalationConfig
) -> tuple[Queues, tuple[Notice, ...]]:
    """The queues a processor holds after reading history: `logs` are the records of each
    partition it owns (opens, control records, its own breach alerts), each in offset order.

    The partitions are merged by `occurred_at` (an open before an action at the same
    millisecond), keeping every partition's own order, so actions mostly follow their
    opens and resolves free capacity when they did live; an action still read before its
    open waits in `early` as live. Breach alerts are folded last: every escalation already
    paged is marked alerted, so no tick pages it again. Redelivered records (the consumer
    resumes from its committed offsets, before the end read here) are duplicates the fold
    ignores. No tick is folded: the first live tick pages what is overdue and not alerted.
    """
    streams: list[list[Input]] = []
    alerts: list[Input] = []
    for log in logs:
        inputs = [i for i in map(input_of, log) if i is not None]
        alerts.extend(i for i in inputs if isinstance(i, EscalationSlaBreached))
        streams.append([i for i in inputs if not isinstance(i, EscalationSlaBreached)])
    return fold([*heapq.merge(*streams, key=_rank), *alerts], config)
