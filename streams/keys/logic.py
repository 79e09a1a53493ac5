"""Keys as projections of control events. Pure: no I/O, no clock, no ids.

A key is usable while it is issued, not revoked and not past its expiry. A revocation
is final: a later or replayed `key.issued` for the same key id does not revive it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Literal

from schemas.records import ROLES, Event, KeyIssued, KeyRevoked, Role

KeyStatus = Literal["active", "revoked", "expired"]


@dataclasses.dataclass(frozen=True, slots=True)
class Key:
    """What the gateway knows of a key: never the secret, only its hash."""

    key_id: str
    tenant_id: str
    team_id: str
    wallet_id: str
    name: str
    key_prefix: str
    key_sha256: str
    issued_at: int
    expires_at: int | None
    revoked_at: int | None = None
    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    policy_pack: str = ""
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    role: Role = "developer"

    def has_role(self, minimum: Role) -> bool:
        """Whether the key's role is `minimum` or a more privileged one."""
        return role_rank(self.role) >= role_rank(minimum)

    def allows(self, *, model: str, provider: str, region: str) -> str | None:
        """Which scope refuses a call, if any: 'model', 'provider' or 'region'."""
        if self.models and model not in self.models:
            return "model"
        if self.providers and provider not in self.providers:
            return "provider"
        if self.regions and region not in self.regions:
            return "region"
        return None

    def status(self, now_ms: int) -> KeyStatus:
        """Whether the key may be used at a moment."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now_ms >= self.expires_at:
            return "expired"
        return "active"


def role_rank(role: str) -> int:
    """Position of a role from least (0) to most privileged; -1 for an unknown role."""
    ranks: tuple[str, ...] = ROLES
    return ranks.index(role) if role in ranks else -1


def key_id_of(event: Event) -> str | None:
    """The key an event concerns, if it is a key event."""
    if isinstance(event, KeyIssued | KeyRevoked):
        return event.key_id
    return None


def evolve(key: Key | None, event: Event) -> Key | None:
    """One key after one event about it (see `key_id_of`); other events change nothing."""
    if isinstance(event, KeyIssued):
        if key is not None:
            return key
        return Key(
            key_id=event.key_id,
            tenant_id=event.tenant_id,
            team_id=event.team_id,
            wallet_id=event.wallet_id,
            name=event.name,
            key_prefix=event.key_prefix,
            key_sha256=event.key_sha256,
            issued_at=event.occurred_at,
            expires_at=event.expires_at,
            models=event.models,
            providers=event.providers,
            regions=event.regions,
            policy_pack=event.policy_pack,
            requests_per_minute=event.requests_per_minute,
            tokens_per_minute=event.tokens_per_minute,
            role=event.role,
        )
    if isinstance(event, KeyRevoked) and key is not None and key.revoked_at is None:
        return dataclasses.replace(key, revoked_at=event.occurred_at)
    return key


def fold(events: Iterable[Event], keys: Mapping[str, Key] | None = None) -> dict[str, Key]:
    """Keys by key_id after a history of control events."""
    result = dict(keys or {})
    for event in events:
        key_id = key_id_of(event)
        if key_id is not None:
            key = evolve(result.get(key_id), event)
            if key is not None:
                result[key_id] = key
    return result
