"""Realistic records for tests, with the envelope filled in as the gateway and admin API do.

Every builder takes keyword overrides for any field, so a test states only what it is about.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from schemas.ids import uuid7
from schemas.records import (
    Attempt,
    DeadLetter,
    EscalationOpened,
    EscalationResolved,
    Event,
    Guardrail,
    KeyIssued,
    KeyRevoked,
    LineageRecord,
    PolicyPackPublished,
    WalletBalance,
    WalletFunded,
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


def escalation_opened(**overrides: Any) -> EscalationOpened:
    """A prompt with a card number is held for review."""
    fields: dict[str, Any] = {
        "producer_id": "gateway-4b5c6d",
        "seq": 17,
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
    ]
