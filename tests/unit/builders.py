"""Realistic records for tests, with the envelope filled in as the gateway and admin API do.

Every builder takes keyword overrides for any field, so a test states only what it is about.
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from schemas import authn, codec
from schemas.ids import uuid7
from schemas.notify_records import NotificationAttempted, NotifyRouteAdded, NotifyRouteRemoved
from schemas.records import (
    Attempt,
    BreakerState,
    ChainCheckpoint,
    CircuitChanged,
    DeadLetter,
    EscalationChanged,
    EscalationOpened,
    EscalationResolved,
    EscalationSlaBreached,
    Event,
    Guardrail,
    KeyIssued,
    KeyRevoked,
    LineageRecord,
    OrgBaselinePublished,
    PolicyPackPublished,
    PricePublished,
    QuotaThresholdCrossed,
    RecordsStored,
    SketchRecord,
    SlaBreached,
    SlaWindow,
    StoredRange,
    WalletAllocated,
    WalletBalance,
    WalletBudgetSet,
    WalletCorrected,
    WalletFunded,
    WalletLimitSet,
    WalletRefunded,
)

# 3 March 2025, 14:02 UTC: the moment compliance asks about.
T0 = int(datetime(2025, 3, 3, 14, 2, tzinfo=UTC).timestamp()) * 1000

TENANT = "acme"
TEAM = "search"
WALLET = f"{TENANT}/{TEAM}"

# gpt-4o-mini list prices: $0.15 per million prompt tokens, $0.60 per million completion
# tokens, i.e. 150 and 600 nano-USD per token.
MINI_PROMPT_NANOUSD = 150
MINI_COMPLETION_NANOUSD = 600


def envelope(
    record_type: type[Event],
    *,
    tenant_id: str = TENANT,
    producer_id: str = "gateway-eu1-0a1b2c",
    seq: int = 1,
    occurred_at: int = T0,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The envelope fields of a record of this type."""
    return {
        "event_id": event_id or uuid7(occurred_at),
        "event_type": record_type.event_type_name,
        "occurred_at": occurred_at,
        "tenant_id": tenant_id,
        "producer_id": producer_id,
        "seq": seq,
    }


def _split(record_type: type[Event], overrides: dict[str, Any]) -> dict[str, Any]:
    keys = ("tenant_id", "producer_id", "seq", "occurred_at", "event_id")
    env = {k: overrides.pop(k) for k in keys if k in overrides}
    return envelope(record_type, **env)


def call(**overrides: Any) -> LineageRecord:
    """An allowed, non-streamed gpt-4o-mini call after one fallback, priced by hand."""
    prompt_tokens = overrides.get("prompt_tokens", 1_200)
    completion_tokens = overrides.get("completion_tokens", 350)
    fields: dict[str, Any] = {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "b7ad6b7169203331",
        "team_id": TEAM,
        "user_id": "user-42",
        "key_id": "key_0193a1b2",
        "wallet_id": WALLET,
        "region": "eu-west-1",
        "model_requested": "gpt-4o-mini",
        "model_selected": "gpt-4o-mini",
        "provider": "openai",
        "selection_reason": "fallback",
        "attempts": (
            Attempt("openai", "gpt-4o", 503, 812.5, "http_5xx"),
            Attempt("openai", "gpt-4o-mini", 200, 640.25, None),
        ),
        "policies_applied": ("auth", "budget", "pii-detector"),
        "guardrails_triggered": (Guardrail("pii-detector", "redact"),),
        "decision": "allowed",
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "usage_source": "reported",
        "cost_nanousd": prompt_tokens * MINI_PROMPT_NANOUSD
        + completion_tokens * MINI_COMPLETION_NANOUSD,
        "reserved_nanousd": prompt_tokens * MINI_PROMPT_NANOUSD + 1_024 * MINI_COMPLETION_NANOUSD,
        "latency_ms": 1_480.5,
        "ttft_ms": None,
        "gateway_overhead_ms": 3.25,
        "http_status": 200,
        "error_code": None,
        "stream": False,
        "request_sha256": hashlib.sha256(b'{"model":"gpt-4o-mini"}').hexdigest(),
        "response_sha256": hashlib.sha256(b"The ledger balances.").hexdigest(),
    }
    env = _split(LineageRecord, overrides)
    fields.update(overrides)
    return LineageRecord(**env, **fields)


def rejected_call(**overrides: Any) -> LineageRecord:
    """A call the gateway refused (budget exhausted): no upstream attempt, nothing charged."""
    fields: dict[str, Any] = {
        "model_selected": "",
        "provider": "",
        "selection_reason": "",
        "attempts": (),
        "guardrails_triggered": (),
        "decision": "rejected",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "usage_source": "none",
        "cost_nanousd": 0,
        "reserved_nanousd": 0,
        "http_status": 402,
        "error_code": "budget_exhausted",
        "response_sha256": None,
    }
    fields.update(overrides)
    return call(**fields)


def funding(**overrides: Any) -> WalletFunded:
    """The admin API credits $100 to the team wallet."""
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "wallet_id": WALLET,
        "team_id": TEAM,
        "amount_nanousd": 100 * 1_000_000_000,
        "memo": "Q1 budget",
        "funded_by": "finops@acme.example",
    }
    fields.update(overrides)
    env = _split(WalletFunded, fields)
    return WalletFunded(**env, **fields)


def key_issued(**overrides: Any) -> KeyIssued:
    """The admin API issues a key for the search team, valid for 30 days."""
    secret = "gk_live_5f2d0c4e9a7b41c3"
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "key_id": "key_0193a1b2",
        "key_prefix": secret[:10],
        "key_sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "team_id": TEAM,
        "wallet_id": WALLET,
        "name": "search-backend",
        "issued_by": "platform@acme.example",
        "expires_at": T0 + 30 * 24 * 3_600_000,
    }
    fields.update(overrides)
    env = _split(KeyIssued, fields)
    return KeyIssued(**env, **fields)


def key_revoked(**overrides: Any) -> KeyRevoked:
    """The admin API revokes the search team's key."""
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "seq": 2,
        "occurred_at": T0 + 3_600_000,
        "key_id": "key_0193a1b2",
        "reason": "secret leaked in a CI log",
        "revoked_by": "security@acme.example",
    }
    fields.update(overrides)
    env = _split(KeyRevoked, fields)
    return KeyRevoked(**env, **fields)


def balance(**overrides: Any) -> WalletBalance:
    """A wallet-state record: $100 funded, two calls settled."""
    spent = 2 * (1_200 * MINI_PROMPT_NANOUSD + 350 * MINI_COMPLETION_NANOUSD)
    fields: dict[str, Any] = {
        "producer_id": "streams-wallets-1c2d3e",
        "wallet_id": WALLET,
        "team_id": TEAM,
        "balance_nanousd": 100 * 1_000_000_000 - spent,
        "funded_nanousd": 100 * 1_000_000_000,
        "spent_nanousd": spent,
        "entry_count": 3,
        "last_event_id": uuid7(T0),
        "last_occurred_at": T0,
        "applied_seqs": {"admin-7f3e9d": 1, "gateway-eu1-0a1b2c": 2},
    }
    fields.update(overrides)
    env = _split(WalletBalance, fields)
    return WalletBalance(**env, **fields)


def dead_letter(**overrides: Any) -> DeadLetter:
    """A lineage record a consumer could not decode, kept with its origin."""
    fields: dict[str, Any] = {
        "tenant_id": "",
        "producer_id": "streams-wallets-1c2d3e",
        "origin_topic": "govledger.lineage",
        "origin_partition": 3,
        "origin_offset": 18_204,
        "consumer": "streams.wallets",
        "error": "not Avro single-object encoding (missing C3 01 marker)",
        "payload": b'{"not": "avro"}\x00\xff',
    }
    fields.update(overrides)
    env = _split(DeadLetter, fields)
    return DeadLetter(**env, **fields)


def policy_published(**overrides: Any) -> PolicyPackPublished:
    """The platform team publishes the first version of the search team's pack."""
    source = "name: standard-saas\npolicies:\n  chain:\n    - name: pii-detector\n"
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "seq": 3,
        "occurred_at": T0 - 86_400_000,
        "pack_name": "standard-saas",
        "version": 1,
        "source_yaml": source,
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "diff": source,
        "published_by": "platform@acme.example",
    }
    fields.update(overrides)
    env = _split(PolicyPackPublished, fields)
    return PolicyPackPublished(**env, **fields)


def baseline_published(**overrides: Any) -> OrgBaselinePublished:
    """An org admin raises the org's retention floor to 90 days."""
    source = (
        "name: org-baseline\nrole_ceiling: developer\npolicies:\n  chain:\n"
        "    - name: audit-logger\n      policy: {retention_days: 90}\n"
    )
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "seq": 4,
        "tenant_id": "",
        "occurred_at": T0 - 86_400_000,
        "version": 1,
        "source_yaml": source,
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "diff": source,
        "published_by": "admin",
    }
    fields.update(overrides)
    env = _split(OrgBaselinePublished, fields)
    return OrgBaselinePublished(**env, **fields)


_OPEN_SEQS = itertools.count(17)


def escalation_opened(**overrides: Any) -> EscalationOpened:
    """A prompt with a card number is held for review. Each open built gets the next seq
    of its gateway (a producer never reuses one), unless the test names it."""
    fields: dict[str, Any] = {
        "producer_id": "gateway-4b5c6d",
        "seq": next(_OPEN_SEQS),
        "escalation_id": "esc_0193a1b2c3",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "team_id": TEAM,
        "key_id": "key_0193a1b2",
        "policy_pack": "healthcare-compliant",
        "category": "pii",
        "priority": "P2",
        "mode": "hold",
        "reason": "pii-detector",
        "model_requested": "gpt-4o-mini",
        "request_sha256": hashlib.sha256(b"{}").hexdigest(),
    }
    fields.update(overrides)
    env = _split(EscalationOpened, fields)
    return EscalationOpened(**env, **fields)


def escalation_resolved(**overrides: Any) -> EscalationResolved:
    """A reviewer approves the held call."""
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "seq": 4,
        "escalation_id": "esc_0193a1b2c3",
        "decision": "approve",
        "resolved_by": "reviewer@acme.example",
        "note": "test card from the QA suite",
    }
    fields.update(overrides)
    env = _split(EscalationResolved, fields)
    return EscalationResolved(**env, **fields)


def _built(record_type: type[Any], fields: dict[str, Any], overrides: dict[str, Any]) -> Any:
    fields.update(overrides)
    env = _split(record_type, fields)
    return record_type(**env, **fields)


def breaker_state(**overrides: Any) -> BreakerState:
    """The fleet sees gpt-4o at OpenAI failing: its breaker is open for 30 s."""
    fields: dict[str, Any] = {
        "producer_id": "streams-breakers-9a8b7c",
        "seq": 5,
        "tenant_id": "",
        "provider": "openai",
        "model": "gpt-4o",
        "state": "open",
        "opened_at": T0,
        "open_until": T0 + 30_000,
        "failures_in_window": 0,
        "applied_seqs": {"gateway-4b5c6d": 412},
    }
    return _built(BreakerState, fields, overrides)  # type: ignore[no-any-return]


def circuit_changed(**overrides: Any) -> CircuitChanged:
    """The alert for that breaker opening."""
    fields: dict[str, Any] = {
        "producer_id": "streams-breakers-9a8b7c",
        "seq": 6,
        "tenant_id": "",
        "provider": "openai",
        "model": "gpt-4o",
        "before": "closed",
        "after": "open",
        "at": T0,
    }
    return _built(CircuitChanged, fields, overrides)  # type: ignore[no-any-return]


def quota_crossed(**overrides: Any) -> QuotaThresholdCrossed:
    """The search team passed 80 % of its $100 monthly budget."""
    fields: dict[str, Any] = {
        "producer_id": "streams-quotas-1f2e3d",
        "seq": 3,
        "wallet_id": WALLET,
        "team_id": TEAM,
        "period_start_at": T0 - 2 * 86_400_000 - 14 * 3_600_000 - 2 * 60_000,
        "threshold_percent": 80,
        "spent_nanousd": 80_000_100_000,
        "budget_nanousd": 100_000_000_000,
    }
    return _built(QuotaThresholdCrossed, fields, overrides)  # type: ignore[no-any-return]


def budget_set(**overrides: Any) -> WalletBudgetSet:
    """FinOps gives the search team $100 a month, alerting at 50, 80 and 100 %."""
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "seq": 5,
        "wallet_id": WALLET,
        "team_id": TEAM,
        "budget_nanousd": 100_000_000_000,
        "thresholds_percent": (50, 80, 100),
        "set_by": "finops@acme.example",
    }
    return _built(WalletBudgetSet, fields, overrides)  # type: ignore[no-any-return]


def sketch(values_ms: tuple[float, ...] = (120.0, 180.0, 950.0)) -> SketchRecord:
    """A small latency sketch as it travels."""
    from streams.sla import sketch as sla_sketch

    built = sla_sketch.of(values_ms)
    pairs = built.to_pairs()
    return SketchRecord(
        alpha=built.alpha,
        max_buckets=built.max_buckets,
        zero_count=built.zero_count,
        sum_thousandths=built.sum_thousandths,
        min=built.min,
        max=built.max,
        bucket_indices=tuple(i for i, _ in pairs),
        bucket_counts=tuple(c for _, c in pairs),
    )


def sla_window(**overrides: Any) -> SlaWindow:
    """The 14:02 minute of gpt-4o-mini calls for acme: three calls, one upstream error."""
    fields: dict[str, Any] = {
        "producer_id": "streams-sla-5e6f7a",
        "seq": 9,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "window_start": T0,
        "window_end": T0 + 60_000,
        "revision": 0,
        "requests": 3,
        "errors": 1,
        "caller_faults": 0,
        "prompt_tokens": 3_600,
        "completion_tokens": 1_050,
        "cost_nanousd": 3 * (1_200 * MINI_PROMPT_NANOUSD + 350 * MINI_COMPLETION_NANOUSD),
        "latency_ms": sketch(),
        "ttft_ms": sketch(()),
        "gateway_overhead_ms": sketch((1.2, 1.5, 2.9)),
    }
    return _built(SlaWindow, fields, overrides)  # type: ignore[no-any-return]


def sla_breached(**overrides: Any) -> SlaBreached:
    """That minute's availability missed 99.9 %."""
    fields: dict[str, Any] = {
        "producer_id": "streams-sla-5e6f7a",
        "seq": 10,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "metric": "availability",
        "observed": 2 / 3,
        "target": 0.999,
        "window_start": T0,
        "window_end": T0 + 60_000,
    }
    return _built(SlaBreached, fields, overrides)  # type: ignore[no-any-return]


def escalation_claimed(**overrides: Any) -> EscalationChanged:
    """A reviewer takes the held call."""
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "seq": 6,
        "escalation_id": "esc_0193a1b2c3",
        "actor": "reviewer@acme.example",
    }
    return _built(EscalationChanged, fields, overrides)  # type: ignore[no-any-return]


def escalation_sla_breached(**overrides: Any) -> EscalationSlaBreached:
    """Nobody decided a P2 review within two hours."""
    fields: dict[str, Any] = {
        "producer_id": "streams-escalations-3c4d5e",
        "seq": 2,
        "escalation_id": "esc_0193a1b2c3",
        "queue": "team:search",
        "priority": "P2",
        "deadline_at": T0 + 7_200_000,
        "breached_at": T0 + 7_260_000,
    }
    return _built(EscalationSlaBreached, fields, overrides)  # type: ignore[no-any-return]


def one_of_each() -> list[Event]:
    """A realistic record of every record type."""
    return [
        call(),
        key_issued(),
        key_revoked(),
        funding(),
        balance(),
        dead_letter(),
        policy_published(),
        escalation_opened(),
        escalation_resolved(),
        breaker_state(),
        circuit_changed(),
        quota_crossed(),
        budget_set(),
        sla_window(),
        sla_breached(),
        escalation_claimed(),
        escalation_sla_breached(),
        allocation(),
        refund(),
        correction(),
        limit_set(),
        checkpoint(),
        baseline_published(),
        records_stored(),
        price_published(),
        notify_route_added(),
        notify_route_removed(),
        notification_attempted(),
    ]


def records_stored(**overrides: Any) -> RecordsStored:
    """A sink batch stored a gateway's seqs 1-40 and 42, and an admin's seq 3."""
    fields: dict[str, Any] = {
        "tenant_id": "",
        "producer_id": "sink-5e6f7a",
        "seq": 9,
        "ranges": (
            StoredRange("gateway-1a2b3c", 1, 40),
            StoredRange("gateway-1a2b3c", 42, 42),
            StoredRange("admin-7f3e9d", 3, 3),
        ),
    }
    return _built(RecordsStored, fields, overrides)  # type: ignore[no-any-return]


ORG_WALLET = TENANT
KEY_WALLET = f"{WALLET}/key_0193a1b2"


def allocation(**overrides: Any) -> WalletAllocated:
    """FinOps moves $40 from the org wallet to the search team's wallet."""
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "seq": 2,
        "from_wallet_id": ORG_WALLET,
        "to_wallet_id": WALLET,
        "team_id": TEAM,
        "amount_nanousd": 40 * 1_000_000_000,
        "memo": "Q1 search",
        "allocated_by": "finops@acme.example",
    }
    return _built(WalletAllocated, fields, overrides)  # type: ignore[no-any-return]


def refund(**overrides: Any) -> WalletRefunded:
    """Support credits back a call the provider failed to bill correctly."""
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "seq": 3,
        "wallet_id": WALLET,
        "team_id": TEAM,
        "amount_nanousd": 1_200 * MINI_PROMPT_NANOUSD + 350 * MINI_COMPLETION_NANOUSD,
        "call_event_id": uuid7(T0),
        "reason": "provider outage, answer unusable",
        "refunded_by": "support@acme.example",
    }
    return _built(WalletRefunded, fields, overrides)  # type: ignore[no-any-return]


def correction(**overrides: Any) -> WalletCorrected:
    """FinOps takes back $1 funded twice by mistake."""
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "seq": 4,
        "wallet_id": WALLET,
        "team_id": TEAM,
        "amount_nanousd": -1_000_000_000,
        "entry_event_id": uuid7(T0),
        "reason": "duplicate funding",
        "corrected_by": "finops@acme.example",
    }
    return _built(WalletCorrected, fields, overrides)  # type: ignore[no-any-return]


def limit_set(**overrides: Any) -> WalletLimitSet:
    """FinOps lets the search team's wallet go $5 below zero."""
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "seq": 6,
        "wallet_id": WALLET,
        "team_id": TEAM,
        "overdraft_limit_nanousd": 5_000_000_000,
        "set_by": "finops@acme.example",
    }
    return _built(WalletLimitSet, fields, overrides)  # type: ignore[no-any-return]


def checkpoint(**overrides: Any) -> ChainCheckpoint:
    """A gateway vouches for its first thousand records."""
    fields: dict[str, Any] = {
        "producer_id": "gateway-eu1-0a1b2c",
        "seq": 1_001,
        "tenant_id": "",
        "checkpoint_seq": 1_000,
        "checkpoint_hash": hashlib.sha256(b"record 1000").hexdigest(),
        "record_count": 1_000,
        "reason": "records",
    }
    return _built(ChainCheckpoint, fields, overrides)  # type: ignore[no-any-return]


TEST_KEYRING = authn.Keyring([bytes(range(32))])


def signed_message(topic: str, record: Event) -> Any:
    """A consumed Kafka message carrying the record as its producer would have signed it,
    under the process's keyring (TEST_KEYRING, installed here, if there is none)."""
    keyring = authn.installed()
    if keyring is None:
        keyring = TEST_KEYRING
        authn.install(keyring)
    value = codec.encode(record)
    role = min(authn.ROLES_BY_TYPE[type(record)])
    credential = keyring.credential(role, record.producer_id)
    return SimpleNamespace(topic=topic, value=value, headers=credential.headers(value))


def price_published(**overrides: Any) -> PricePublished:
    """An org admin lowers gpt-4o's input price from T0 on (cache reads at half of it)."""
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "seq": 5,
        "tenant_id": "",
        "occurred_at": T0 - 3_600_000,
        "provider": "openai",
        "model": "gpt-4o",
        "effective_from": T0,
        "input_nanousd_per_mtok": 2_000_000_000,
        "output_nanousd_per_mtok": 10_000_000_000,
        "cached_input_nanousd_per_mtok": 1_000_000_000,
        "published_by": "admin",
    }
    fields.update(overrides)
    env = _split(PricePublished, fields)
    return PricePublished(**env, **fields)


def notify_route_added(**overrides: Any) -> NotifyRouteAdded:
    """A tenant admin routes quota thresholds and P1 escalations to a signed webhook."""
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "seq": 6,
        "route_id": "0190d4f0-0000-7000-8000-00000000a001",
        "events": ("quota.threshold", "escalation.p1"),
        "url": "https://hooks.example.com/govledger",
        "format": "cloudevents",
        "secret_sealed": b"v1-sealed-secret-bytes",
        "added_by": "admin",
    }
    fields.update(overrides)
    env = _split(NotifyRouteAdded, fields)
    return NotifyRouteAdded(**env, **fields)


def notify_route_removed(**overrides: Any) -> NotifyRouteRemoved:
    """The route is removed."""
    fields: dict[str, Any] = {
        "producer_id": "admin-7f3e9d",
        "seq": 7,
        "route_id": "0190d4f0-0000-7000-8000-00000000a001",
        "removed_by": "admin",
    }
    fields.update(overrides)
    env = _split(NotifyRouteRemoved, fields)
    return NotifyRouteRemoved(**env, **fields)


def notification_attempted(**overrides: Any) -> NotificationAttempted:
    """The notifier's second attempt at a quota threshold: the receiver answered 503."""
    fields: dict[str, Any] = {
        "producer_id": "notifier-1c2d3e",
        "seq": 2,
        "route_id": "0190d4f0-0000-7000-8000-00000000a001",
        "source_event_id": uuid7(T0),
        "source_event_type": "quota.threshold",
        "action": "trigger",
        "format": "cloudevents",
        "attempt": 2,
        "status": "failed",
        "http_status": 503,
        "latency_ms": 12.5,
        "error": "HTTP 503",
        "destination_host": "hooks.example.com",
    }
    fields.update(overrides)
    env = _split(NotificationAttempted, fields)
    return NotificationAttempted(**env, **fields)
