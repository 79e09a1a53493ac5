"""The gateway's local views of keys and wallet balances, fed by the control and
wallet-state topics (read whole, like a table)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.policy.pack import PackError, PolicyPack, parse_pack
from schemas import codec
from schemas.records import (
    BreakerState as BreakerStateRecord,
)
from schemas.records import (
    EscalationOpened,
    EscalationResolved,
    PolicyPackPublished,
    WalletBalance,
)
from schemas.topics import BREAKER_STATE, CONTROL, ESCALATIONS, WALLET_STATE
from streams.breakers.logic import BreakerState, state_of
from streams.keys import logic as keys_logic
from streams.wallets import logic as wallets_logic

log = structlog.get_logger(__name__)

# Escalations and decisions a gateway remembers (to check who may decide them and to
# release held calls); the oldest are forgotten first.
MAX_ESCALATIONS = 100_000


def key_sha256(secret: str) -> str:
    """The stored form of a key secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PublishedPack:
    """The newest version of a tenant's pack, parsed, with its source."""

    version: int
    source_yaml: str
    pack: PolicyPack


class LocalViews:
    """Keys by id and by secret hash; wallet balances by wallet id; policy packs by
    (tenant, name); reviewers' decisions by escalation id."""

    def __init__(self) -> None:
        self.keys: dict[str, keys_logic.Key] = {}
        self.keys_by_hash: dict[str, keys_logic.Key] = {}
        self.wallets: dict[str, wallets_logic.Wallet] = {}
        # When this gateway last authenticated each key (one entry per known key at most).
        self.key_last_used_ms: dict[str, int] = {}
        self.packs: dict[tuple[str, str], PublishedPack] = {}
        self.escalations: dict[str, EscalationOpened] = {}
        # Fleet-wide breaker state per (provider, model): (state, open until ms). Fed by
        # the breaker-state topic once the breakers processor publishes it.
        self.fleet_breakers: dict[tuple[str, str], tuple[BreakerState, int | None]] = {}
        # When each target's fleet state was published: an older record never replaces it.
        self.fleet_breakers_at: dict[tuple[str, str], int] = {}
        self.escalation_decisions: dict[str, str] = {}
        self.undecodable = 0

    def apply(self, message: Any) -> None:
        """Apply one consumed record from the control, wallet-state, breaker-state or
        escalations topic."""
        try:
            event = codec.decode(message.value)
        except codec.DecodeError as exc:
            # The processors dead-letter bad records; a view only skips them.
            self.undecodable += 1
            log.warning("undecodable record skipped", topic=message.topic, error=str(exc))
            return
        if message.topic == WALLET_STATE.name and isinstance(event, WalletBalance):
            self.wallets[event.wallet_id] = wallets_logic.latest(
                self.wallets.get(event.wallet_id), event
            )
            return
        if message.topic == BREAKER_STATE.name and isinstance(event, BreakerStateRecord):
            self._apply_breaker(event)
            return
        if message.topic == ESCALATIONS.name and isinstance(event, EscalationOpened):
            self.escalations[event.escalation_id] = event
            if len(self.escalations) > MAX_ESCALATIONS:
                del self.escalations[next(iter(self.escalations))]
            return
        if message.topic == CONTROL.name and isinstance(event, PolicyPackPublished):
            self._apply_pack(event)
            return
        if message.topic == CONTROL.name and isinstance(event, EscalationResolved):
            self.escalation_decisions.setdefault(event.escalation_id, event.decision)
            if len(self.escalation_decisions) > MAX_ESCALATIONS:
                del self.escalation_decisions[next(iter(self.escalation_decisions))]
            return
        if message.topic == CONTROL.name:
            key_id = keys_logic.key_id_of(event)
            if key_id is None:
                return
            key = keys_logic.evolve(self.keys.get(key_id), event)
            if key is not None:
                self.keys[key_id] = key
                self.keys_by_hash[key.key_sha256] = key

    def _apply_breaker(self, event: BreakerStateRecord) -> None:
        target = (event.provider, event.model)
        state = state_of(event.state)
        if state is None:
            log.warning("unknown breaker state skipped", state=event.state, target=target)
            return
        if self.fleet_breakers_at.get(target, event.occurred_at) > event.occurred_at:
            return  # the newest published state wins, whatever order records come in
        self.fleet_breakers[target] = (state, event.open_until)
        self.fleet_breakers_at[target] = event.occurred_at

    def _apply_pack(self, event: PolicyPackPublished) -> None:
        known = self.packs.get((event.tenant_id, event.pack_name))
        if known is not None and known.version >= event.version:
            return  # a replayed or older version never replaces the newest
        try:
            pack = parse_pack(event.source_yaml)
        except PackError as exc:
            # The admin API lints before publishing; a bad pack here was written by hand.
            log.error("published pack does not parse", pack=event.pack_name, error=str(exc))  # noqa: TRY400 - the reason is the message; a traceback adds nothing
            return
        self.packs[(event.tenant_id, event.pack_name)] = PublishedPack(
            event.version, event.source_yaml, pack
        )

    def team_month_spent_nanousd(self, tenant_id: str, team_id: str, at_ms: int) -> int:
        """What the team's wallet spent in the UTC month of `at_ms`, as published."""
        wallet = self.wallets.get(wallets_logic.team_wallet_id(tenant_id, team_id))
        return wallets_logic.spent_in_month_nanousd(wallet, at_ms) if wallet is not None else 0

    def key_for_secret(self, secret: str) -> keys_logic.Key | None:
        """The key whose secret this is, if any."""
        return self.keys_by_hash.get(key_sha256(secret))
