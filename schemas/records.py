"""Typed event records: frozen dataclasses whose fields match the `.avsc` files one to one.

Timestamps are UTC epoch milliseconds (`int`); money is integer nano-USD.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar

GuardrailAction = Literal["allow", "redact", "block", "escalate"]
Decision = Literal["allowed", "rejected", "failed"]
UsageSource = Literal["reported", "estimated", "none"]
Role = Literal["viewer", "developer", "tenant-admin", "org-admin"]
ROLES: tuple[Role, ...] = ("viewer", "developer", "tenant-admin", "org-admin")
"""Roles from least to most privileged; a role includes every role before it."""

GENESIS_HASH = "0" * 64


E = TypeVar("E")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """The envelope every record carries. A record is built unsealed: `producer_id` empty,
    `seq` 0, `prev_hash` genesis and `record_hash` empty (these defaults); the producer's
    hash chain (schemas.codec.HashChain) fills them when it seals the record."""

    schema_name: ClassVar[str] = ""
    event_type_name: ClassVar[str] = ""

    event_id: str
    event_type: str
    occurred_at: int
    tenant_id: str
    producer_id: str = ""
    seq: int = 0
    prev_hash: str = GENESIS_HASH
    record_hash: str = ""

    def to_avro(self) -> dict[str, Any]:
        """The record as the plain dict fastavro writes."""
        names = _FIELD_NAMES.get(type(self)) or _field_names(type(self))
        values = [getattr(self, name) for name in names]
        return {
            name: value if type(value) in _SCALARS else _plain(value)
            for name, value in zip(names, values, strict=True)
        }

    @classmethod
    def from_avro(cls, data: Mapping[str, Any]) -> Event:
        """Build the record from the dict fastavro reads."""
        return cls(**data)


# Scalars are most of a record's values: returned as they are before the slower checks
# (a dataclass test and an ABC isinstance each cost more than the rest of the encode).
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


# Field names by dataclass type: dataclasses.fields() builds its tuple anew at each call,
# a few µs a record (and again for each attempt in it).
_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _plain(value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES.get(type(value)) or _field_names(type(value))
        return {name: _plain(getattr(value, name)) for name in names}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One upstream attempt of the fallback trail."""

    provider: str
    model: str
    status: int
    latency_ms: float
    error_class: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Guardrail:
    """A guardrail that fired and what it did."""

    name: str
    action: GuardrailAction


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LineageRecord(Event):
    """One gateway call."""

    schema_name: ClassVar[str] = "govledger.v3.LineageRecord"
    event_type_name: ClassVar[str] = "gateway.call"

    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    team_id: str
    user_id: str | None = None
    key_id: str
    wallet_id: str
    region: str
    model_requested: str
    model_selected: str
    provider: str
    selection_reason: str
    attempts: tuple[Attempt, ...] = ()
    policies_applied: tuple[str, ...] = ()
    guardrails_triggered: tuple[Guardrail, ...] = ()
    decision: Decision
    prompt_tokens: int
    completion_tokens: int
    usage_source: UsageSource
    cost_nanousd: int
    reserved_nanousd: int
    latency_ms: float
    ttft_ms: float | None = None
    gateway_overhead_ms: float
    http_status: int
    error_code: str | None = None
    stream: bool
    request_sha256: str
    response_sha256: str | None = None
    # The API the call came in by (OpenAI's names); v1 records were all chat completions.
    api: str = "chat.completions"
    # v3: the parts of prompt_tokens and completion_tokens priced at their own rates
    # (schemas.pricing); 0 in v1/v2 records, which priced every token as plain text.
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    audio_prompt_tokens: int = 0
    image_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    audio_completion_tokens: int = 0

    @classmethod
    def from_avro(cls, data: Mapping[str, Any]) -> LineageRecord:
        """Build the record, turning nested dicts into typed tuples."""
        fields = dict(data)
        fields["attempts"] = tuple(Attempt(**a) for a in data["attempts"])
        fields["policies_applied"] = tuple(data["policies_applied"])
        fields["guardrails_triggered"] = tuple(Guardrail(**g) for g in data["guardrails_triggered"])
        return _built(cls, fields)


_SETTERS: dict[type[Any], tuple[tuple[str, Any], ...]] = {}


def _built(cls: type[E], fields: Mapping[str, Any]) -> E:
    """`cls(**fields)`, four times faster when `fields` has every field: a frozen slotted
    dataclass's __init__ spends about 0.45 µs per field in object.__setattr__, 17 µs a
    lineage record, most of the stream worker's decode. This sets the slots directly (no
    __post_init__ exists to skip). With a field missing (an older schema version read
    into the newest type) the defaults are needed: then it is `cls(**fields)`."""
    setters = _SETTERS.get(cls)
    if setters is None:
        setters = _SETTERS[cls] = tuple(
            (f.name, getattr(cls, f.name).__set__)
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        )
    if len(fields) != len(setters):
        return cls(**fields)
    record = object.__new__(cls)
    try:
        for name, set_slot in setters:
            set_slot(record, fields[name])
    except KeyError:
        return cls(**fields)
    return record


def replaced(record: E, **changes: Any) -> E:
    """`dataclasses.replace(record, **changes)` for a record, without its __init__: the
    slots copied and set directly (as `_built`; no record type has a __post_init__ or an
    init=False field). A lineage record's replace cost about 25 µs, and every record
    sealed took two (schemas.codec.HashChain)."""
    cls = type(record)
    setters = _SETTERS.get(cls)
    if setters is None:
        setters = _SETTERS[cls] = tuple(
            (f.name, getattr(cls, f.name).__set__)
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        )
    copy = object.__new__(cls)
    for name, set_slot in setters:
        set_slot(copy, changes.pop(name) if name in changes else getattr(record, name))
    if changes:
        raise TypeError(f"{cls.__name__} has no field {min(changes)!r}")
    return copy


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KeyIssued(Event):
    """A gateway key was issued; only the secret's hash travels."""

    schema_name: ClassVar[str] = "govledger.v3.KeyIssued"
    event_type_name: ClassVar[str] = "key.issued"

    key_id: str
    key_prefix: str
    key_sha256: str
    team_id: str
    wallet_id: str
    name: str
    issued_by: str
    expires_at: int | None = None
    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    policy_pack: str = ""
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    role: Role = "developer"

    @classmethod
    def from_avro(cls, data: Mapping[str, Any]) -> KeyIssued:
        """Build the record; lists become tuples, fields a v1 record lacks take defaults."""
        fields = dict(data)
        for name in ("models", "providers", "regions"):
            fields[name] = tuple(data.get(name, ()))
        return cls(**fields)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KeyRevoked(Event):
    """A gateway key was revoked."""

    schema_name: ClassVar[str] = "govledger.v1.KeyRevoked"
    event_type_name: ClassVar[str] = "key.revoked"

    key_id: str
    reason: str
    revoked_by: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WalletFunded(Event):
    """Money was credited to a wallet."""

    schema_name: ClassVar[str] = "govledger.v1.WalletFunded"
    event_type_name: ClassVar[str] = "wallet.funded"

    wallet_id: str
    team_id: str
    amount_nanousd: int
    memo: str
    funded_by: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WalletBalance(Event):
    """Projection of a wallet's journal, published to the compacted wallet-state topic."""

    schema_name: ClassVar[str] = "govledger.v3.WalletBalance"
    event_type_name: ClassVar[str] = "wallet.balance"

    wallet_id: str
    team_id: str
    balance_nanousd: int
    funded_nanousd: int
    spent_nanousd: int
    entry_count: int
    last_event_id: str
    last_occurred_at: int
    applied_seqs: Mapping[str, int]
    period_start_at: int = 0
    period_spent_nanousd: int = 0
    allocated_in_nanousd: int = 0
    allocated_out_nanousd: int = 0
    refunded_nanousd: int = 0
    corrected_nanousd: int = 0
    overdraft_limit_nanousd: int = 0
    rejected_count: int = 0
    last_decided_event_id: str = ""
    last_decision: str = ""
    revision: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter(Event):
    """A record some consumer could not decode or validate."""

    schema_name: ClassVar[str] = "govledger.v1.DeadLetter"
    event_type_name: ClassVar[str] = "dead_letter"

    origin_topic: str
    origin_partition: int
    origin_offset: int
    consumer: str
    error: str
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PolicyPackPublished(Event):
    """A version of a tenant's policy pack was published."""

    schema_name: ClassVar[str] = "govledger.v1.PolicyPackPublished"
    event_type_name: ClassVar[str] = "policy.published"

    pack_name: str
    version: int
    source_yaml: str
    source_sha256: str
    diff: str
    published_by: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OrgBaselinePublished(Event):
    """A version of the org baseline was published (tenant_id empty: org-wide)."""

    schema_name: ClassVar[str] = "govledger.v1.OrgBaselinePublished"
    event_type_name: ClassVar[str] = "policy.baseline_published"

    version: int
    source_yaml: str
    source_sha256: str
    diff: str
    published_by: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PricePublished(Event):
    """A model's price from `effective_from` on (tenant_id empty: org-wide); rates in
    nano-USD per million tokens, None: the plain input or output rate. As a Price:
    schemas.pricing.published_price."""

    schema_name: ClassVar[str] = "govledger.v1.PricePublished"
    event_type_name: ClassVar[str] = "pricing.price_published"

    provider: str
    model: str
    effective_from: int
    input_nanousd_per_mtok: int
    output_nanousd_per_mtok: int
    cached_input_nanousd_per_mtok: int | None = None
    cache_write_nanousd_per_mtok: int | None = None
    audio_input_nanousd_per_mtok: int | None = None
    image_input_nanousd_per_mtok: int | None = None
    reasoning_nanousd_per_mtok: int | None = None
    audio_output_nanousd_per_mtok: int | None = None
    published_by: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EscalationOpened(Event):
    """A human-oversight policy asked for a review of a call."""

    schema_name: ClassVar[str] = "govledger.v1.EscalationOpened"
    event_type_name: ClassVar[str] = "escalation.opened"

    escalation_id: str
    trace_id: str
    team_id: str
    key_id: str
    policy_pack: str
    category: str
    priority: str
    mode: str
    reason: str
    model_requested: str
    request_sha256: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EscalationResolved(Event):
    """A reviewer decided an escalation."""

    schema_name: ClassVar[str] = "govledger.v1.EscalationResolved"
    event_type_name: ClassVar[str] = "escalation.resolved"

    escalation_id: str
    decision: str
    resolved_by: str
    note: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BreakerState(Event):
    """Fleet-wide breaker state of one target, for gateways to route around."""

    schema_name: ClassVar[str] = "govledger.v1.BreakerState"
    event_type_name: ClassVar[str] = "breaker.state"

    provider: str
    model: str
    state: str
    opened_at: int | None = None
    open_until: int | None = None
    failures_in_window: int
    applied_seqs: Mapping[str, int]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CircuitChanged(Event):
    """A fleet-wide breaker opened or closed (event_type circuit.opened or circuit.closed)."""

    schema_name: ClassVar[str] = "govledger.v1.CircuitChanged"
    event_type_name: ClassVar[str] = "circuit.opened"

    provider: str
    model: str
    before: str
    after: str
    at: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QuotaThresholdCrossed(Event):
    """A wallet's spend this period crossed a threshold of its budget."""

    schema_name: ClassVar[str] = "govledger.v1.QuotaThresholdCrossed"
    event_type_name: ClassVar[str] = "quota.threshold"

    wallet_id: str
    team_id: str
    period_start_at: int
    threshold_percent: int
    spent_nanousd: int
    budget_nanousd: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WalletBudgetSet(Event):
    """An admin set a wallet's monthly budget and alert thresholds."""

    schema_name: ClassVar[str] = "govledger.v1.WalletBudgetSet"
    event_type_name: ClassVar[str] = "wallet.budget_set"

    wallet_id: str
    team_id: str
    budget_nanousd: int
    thresholds_percent: tuple[int, ...]
    set_by: str

    @classmethod
    def from_avro(cls, data: Mapping[str, Any]) -> WalletBudgetSet:
        """Build the record; the threshold list becomes a tuple."""
        return cls(**{**data, "thresholds_percent": tuple(data["thresholds_percent"])})


@dataclasses.dataclass(frozen=True, slots=True)
class SketchRecord:
    """A quantile sketch as it travels (see streams.sla.sketch)."""

    alpha: float
    max_buckets: int
    zero_count: int
    sum_thousandths: int
    min: float
    max: float
    bucket_indices: tuple[int, ...]
    bucket_counts: tuple[int, ...]

    @classmethod
    def from_avro(cls, data: Mapping[str, Any]) -> SketchRecord:
        """Build the sketch; lists become tuples."""
        return cls(
            **{
                **data,
                "bucket_indices": tuple(data["bucket_indices"]),
                "bucket_counts": tuple(data["bucket_counts"]),
            }
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SlaWindow(Event):
    """One closed minute of calls for one provider, model and tenant."""

    schema_name: ClassVar[str] = "govledger.v1.SlaWindow"
    event_type_name: ClassVar[str] = "sla.window"

    provider: str
    model: str
    window_start: int
    window_end: int
    revision: int
    requests: int
    errors: int
    caller_faults: int
    prompt_tokens: int
    completion_tokens: int
    cost_nanousd: int
    latency_ms: SketchRecord
    ttft_ms: SketchRecord
    gateway_overhead_ms: SketchRecord

    @classmethod
    def from_avro(cls, data: Mapping[str, Any]) -> SlaWindow:
        """Build the record, turning nested sketches into typed records."""
        fields = dict(data)
        for name in ("latency_ms", "ttft_ms", "gateway_overhead_ms"):
            fields[name] = SketchRecord.from_avro(data[name])
        return cls(**fields)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SlaBreached(Event):
    """A minute missed an SLA target."""

    schema_name: ClassVar[str] = "govledger.v1.SlaBreached"
    event_type_name: ClassVar[str] = "sla.breached"

    provider: str
    model: str
    metric: str
    observed: float
    target: float
    window_start: int
    window_end: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EscalationChanged(Event):
    """A reviewer claimed (escalation.claimed) or reassigned (escalation.reassigned) one."""

    schema_name: ClassVar[str] = "govledger.v1.EscalationChanged"
    event_type_name: ClassVar[str] = "escalation.claimed"

    escalation_id: str
    actor: str
    queue: str = ""
    reviewer: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EscalationSlaBreached(Event):
    """An escalation passed its SLA deadline unresolved."""

    schema_name: ClassVar[str] = "govledger.v1.EscalationSlaBreached"
    event_type_name: ClassVar[str] = "escalation.sla_breached"

    escalation_id: str
    queue: str
    priority: str
    deadline_at: int
    breached_at: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WalletAllocated(Event):
    """Money moved from a wallet to one of its children (org → team, team → key)."""

    schema_name: ClassVar[str] = "govledger.v1.WalletAllocated"
    event_type_name: ClassVar[str] = "wallet.allocated"

    from_wallet_id: str
    to_wallet_id: str
    team_id: str
    amount_nanousd: int
    memo: str
    allocated_by: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WalletRefunded(Event):
    """A call's charge was credited back to a wallet."""

    schema_name: ClassVar[str] = "govledger.v1.WalletRefunded"
    event_type_name: ClassVar[str] = "wallet.refunded"

    wallet_id: str
    team_id: str
    amount_nanousd: int
    call_event_id: str
    reason: str
    refunded_by: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WalletCorrected(Event):
    """A signed correction of a wallet's journal; the corrected entry stays as it was."""

    schema_name: ClassVar[str] = "govledger.v1.WalletCorrected"
    event_type_name: ClassVar[str] = "wallet.corrected"

    wallet_id: str
    team_id: str
    amount_nanousd: int
    entry_event_id: str
    reason: str
    corrected_by: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WalletLimitSet(Event):
    """An admin set a wallet's overdraft limit."""

    schema_name: ClassVar[str] = "govledger.v1.WalletLimitSet"
    event_type_name: ClassVar[str] = "wallet.limit_set"

    wallet_id: str
    team_id: str
    overdraft_limit_nanousd: int
    set_by: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ChainCheckpoint(Event):
    """A producer's chain head, itself the next record of that chain (see replay.verify)."""

    schema_name: ClassVar[str] = "govledger.v2.ChainCheckpoint"
    event_type_name: ClassVar[str] = "chain.checkpoint"

    checkpoint_seq: int
    checkpoint_hash: str
    record_count: int
    reason: str
    signer_root_id: str = ""
    signer_role: str = ""
    signer_public_key: bytes = b""
    signer_certificate: bytes = b""
    signature: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True)
class StoredRange:
    """Records of one producer, seq first_seq to last_seq, all in the store."""

    stored_producer_id: str
    first_seq: int
    last_seq: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RecordsStored(Event):
    """What one written batch of a sink stored, per producer (see sinks/stored.py)."""

    schema_name: ClassVar[str] = "govledger.v1.RecordsStored"
    event_type_name: ClassVar[str] = "sink.stored"

    ranges: tuple[StoredRange, ...] = ()

    @classmethod
    def from_avro(cls, data: Mapping[str, Any]) -> RecordsStored:
        """Build the record, turning nested ranges into typed ones."""
        fields = dict(data)
        fields["ranges"] = tuple(StoredRange(**r) for r in data["ranges"])
        return _built(cls, fields)


RECORD_TYPES: tuple[type[Event], ...] = (
    LineageRecord,
    KeyIssued,
    KeyRevoked,
    WalletFunded,
    WalletBalance,
    DeadLetter,
    PolicyPackPublished,
    EscalationOpened,
    EscalationResolved,
    BreakerState,
    CircuitChanged,
    QuotaThresholdCrossed,
    WalletBudgetSet,
    SlaWindow,
    SlaBreached,
    EscalationChanged,
    EscalationSlaBreached,
    WalletAllocated,
    WalletRefunded,
    WalletCorrected,
    WalletLimitSet,
    ChainCheckpoint,
    OrgBaselinePublished,
    RecordsStored,
    PricePublished,
)
