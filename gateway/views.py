"""The gateway's local views of keys and wallet balances, fed by the control and
wallet-state topics (read whole, like a table)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from gateway.policy.baseline import (
    DEFAULT_BASELINE,
    DEFAULT_BASELINE_YAML,
    ORG_TENANT,
    OrgBaseline,
    parse_baseline,
)
from gateway.policy.pack import PackError, PolicyPack, parse_pack
from schemas import authn, codec
from schemas.auth import key_sha256
from schemas.notify_records import NotifyRouteAdded, NotifyRouteRemoved
from schemas.pricing import LIST_PRICES, PriceBook, published_price
from schemas.records import (
    BreakerState as BreakerStateRecord,
)
from schemas.records import (
    EscalationChanged,
    EscalationOpened,
    EscalationResolved,
    OrgBaselinePublished,
    PolicyPackPublished,
    PricePublished,
    WalletBalance,
)
from schemas.topics import BREAKER_STATE, CONTROL, ESCALATIONS, WALLET_STATE
from streams.breakers.logic import BreakerState, state_of
from streams.keys import logic as keys_logic
from streams.notify import logic as notify_logic
from streams.wallets import logic as wallets_logic

log = structlog.get_logger(__name__)

# Escalations and decisions a gateway remembers (to check who may decide them and to
# release held calls); the oldest are forgotten first.
MAX_ESCALATIONS = 100_000
# Claims and reassigns a gateway keeps per escalation (past this many, the oldest are
# forgotten, and the listing may differ from the processor for that escalation).
MAX_CHANGES_PER_ESCALATION = 64
# Versions of each pack a gateway keeps to revert to (the newest this many); older ones
# stay on the control topic and in the store's `control_events`.
MAX_PACK_VERSIONS_KEPT = 100


@dataclass(frozen=True, slots=True)
class PublishedPack:
    """The newest version of a tenant's pack, parsed, with its source."""

    version: int
    source_yaml: str
    pack: PolicyPack


@dataclass(frozen=True, slots=True)
class PackVersion:
    """One published version of a pack, as its record carried it."""

    version: int
    source_yaml: str
    source_sha256: str
    published_by: str
    published_at_ms: int


@dataclass(frozen=True, slots=True)
class PublishedBaseline:
    """The newest org baseline, parsed, with its source; version 0 is the built-in
    default, in force until an org admin publishes one."""

    version: int
    source_yaml: str
    baseline: OrgBaseline
    published_by: str


DEFAULT_PUBLISHED_BASELINE = PublishedBaseline(0, DEFAULT_BASELINE_YAML, DEFAULT_BASELINE, "")


class LocalViews:
    """Keys by id and by secret hash; wallet balances by wallet id; policy packs by
    (tenant, name); reviewers' decisions by escalation id."""

    def __init__(self) -> None:
        self.keys: dict[str, keys_logic.Key] = {}
        self.keys_by_hash: dict[str, keys_logic.Key] = {}
        self.wallets: dict[str, wallets_logic.Wallet] = {}
        # Child wallets by parent wallet id (team -> its keys' wallets), as published.
        self.wallet_children: dict[str, set[str]] = {}
        # When this gateway last authenticated each key (one entry per known key at most).
        self.key_last_used_ms: dict[str, int] = {}
        self.packs: dict[tuple[str, str], PublishedPack] = {}
        # Every version of each pack as published, by version (the first record of a
        # version wins, as for `packs`), the newest MAX_PACK_VERSIONS_KEPT.
        self.pack_versions: dict[tuple[str, str], dict[int, PackVersion]] = {}
        self.baseline = DEFAULT_PUBLISHED_BASELINE
        self.escalations: dict[str, EscalationOpened] = {}
        # Fleet-wide breaker state per (provider, model): (state, open until ms). Fed by
        # the breaker-state topic once the breakers processor publishes it.
        self.fleet_breakers: dict[tuple[str, str], tuple[BreakerState, int | None]] = {}
        # When each target's fleet state was published: an older record never replaces it.
        self.fleet_breakers_at: dict[tuple[str, str], int] = {}
        self.escalation_decisions: dict[str, str] = {}
        # Claims and reassigns by escalation id, in the order read (any gateway's), so the
        # listing shows who holds an escalation before it is decided.
        self.escalation_changes: dict[str, list[EscalationChanged]] = {}
        self.undecodable = 0
        self.forged = 0
        # Prices by provider and model with their dates: the list prices, then each
        # published one (schemas.pricing); calls are priced at their occurred_at.
        self.prices = PriceBook(LIST_PRICES)
        # Notification routes (streams.notify), for the admin API's listing and checks.
        self.notify_routes: dict[str, notify_logic.Route] = {}

    def apply(self, message: Any) -> None:
        """Apply one consumed record from the control, wallet-state, breaker-state or
        escalations topic."""
        try:
            # Only records a registered producer may write to this topic change a view.
            event = authn.decode_message(message)
        except authn.Forged as exc:
            # The processors and the sink dead-letter it; a view only refuses it.
            self.forged += 1
            log.warning("unauthenticated record refused", topic=message.topic, error=str(exc))
            return
        except codec.DecodeError as exc:
            # The processors dead-letter bad records; a view only skips them.
            self.undecodable += 1
            log.warning("undecodable record skipped", topic=message.topic, error=str(exc))
            return
        if message.topic == WALLET_STATE.name and isinstance(event, WalletBalance):
            self.wallets[event.wallet_id] = wallets_logic.latest(
                self.wallets.get(event.wallet_id), event
            )
            parent = wallets_logic.parent_wallet_id(event.wallet_id)
            if parent is not None:
                self.wallet_children.setdefault(parent, set()).add(event.wallet_id)
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
        if message.topic == CONTROL.name and isinstance(event, OrgBaselinePublished):
            self._apply_baseline(event)
            return
        if message.topic == CONTROL.name and isinstance(event, PricePublished):
            self._apply_price(event)
            return
        if message.topic == CONTROL.name and isinstance(event, EscalationResolved):
            self.escalation_decisions.setdefault(event.escalation_id, event.decision)
            if len(self.escalation_decisions) > MAX_ESCALATIONS:
                del self.escalation_decisions[next(iter(self.escalation_decisions))]
            return
        if message.topic == CONTROL.name and isinstance(
            event, NotifyRouteAdded | NotifyRouteRemoved
        ):
            self.notify_routes = notify_logic.evolve(self.notify_routes, event)
            return
        if message.topic == CONTROL.name and isinstance(event, EscalationChanged):
            self._apply_escalation_change(event)
            return
        if message.topic == CONTROL.name:
            key_id = keys_logic.key_id_of(event)
            if key_id is None:
                return
            key = keys_logic.evolve(self.keys.get(key_id), event)
            if key is not None:
                self.keys[key_id] = key
                self.keys_by_hash[key.key_sha256] = key

    def _apply_escalation_change(self, event: EscalationChanged) -> None:
        changes = self.escalation_changes.setdefault(event.escalation_id, [])
        if any((c.producer_id, c.seq) == (event.producer_id, event.seq) for c in changes):
            return  # redelivered; the fold would ignore it, but it would take a slot
        changes.append(event)
        if len(changes) > MAX_CHANGES_PER_ESCALATION:
            del changes[0]
        if len(self.escalation_changes) > MAX_ESCALATIONS:
            del self.escalation_changes[next(iter(self.escalation_changes))]

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
        versions = self.pack_versions.setdefault((event.tenant_id, event.pack_name), {})
        if event.version not in versions:
            versions[event.version] = PackVersion(
                event.version,
                event.source_yaml,
                event.source_sha256,
                event.published_by,
                event.occurred_at,
            )
            while len(versions) > MAX_PACK_VERSIONS_KEPT:
                del versions[min(versions)]
        known = self.packs.get((event.tenant_id, event.pack_name))
        if known is not None and known.version >= event.version:
            return  # a replayed or older version never replaces the newest
        try:
            pack = parse_pack(event.source_yaml, default_name=event.pack_name)
        except PackError as exc:
            # The admin API lints before publishing; a bad pack here was written by hand.
            log.error("published pack does not parse", pack=event.pack_name, error=str(exc))  # noqa: TRY400 - the reason is the message; a traceback adds nothing
            return
        self.packs[(event.tenant_id, event.pack_name)] = PublishedPack(
            event.version, event.source_yaml, pack
        )

    def _apply_baseline(self, event: OrgBaselinePublished) -> None:
        if event.tenant_id != ORG_TENANT:
            log.error(
                "a baseline for one tenant is not a baseline; skipped", tenant=event.tenant_id
            )
            return
        if self.baseline.version >= event.version:
            return  # a replayed or older version never replaces the newest
        try:
            baseline = parse_baseline(event.source_yaml)
        except PackError as exc:
            # The admin API lints before publishing; the baseline in force stays (fail
            # closed: never fall back to no baseline).
            log.error("published baseline does not parse", error=str(exc))  # noqa: TRY400 - the reason is the message
            return
        self.baseline = PublishedBaseline(
            event.version, event.source_yaml, baseline, event.published_by
        )

    def team_month_spent_nanousd(self, tenant_id: str, team_id: str, at_ms: int) -> int:
        """What the team spent in the UTC month of `at_ms`, as published: its wallet's
        settlements and those of its keys' wallets."""
        team_wallet = wallets_logic.team_wallet_id(tenant_id, team_id)
        ids = [team_wallet, *sorted(self.wallet_children.get(team_wallet, ()))]
        return sum(
            wallets_logic.spent_in_month_nanousd(self.wallets[w], at_ms)
            for w in ids
            if w in self.wallets
        )

    def spend_wallet_id(self, key: keys_logic.Key) -> str:
        """The wallet a key's calls settle against: the key's own wallet once money was
        allocated to it, else its team's wallet."""
        own = wallets_logic.key_wallet_id(key.tenant_id, key.team_id, key.key_id)
        wallet = self.wallets.get(own)
        return own if wallet is not None and wallet.allocated_in_nanousd > 0 else key.wallet_id

    def key_for_secret(self, secret: str) -> keys_logic.Key | None:
        """The key whose secret this is, if any."""
        return self.keys_by_hash.get(key_sha256(secret))

    def _apply_price(self, event: PricePublished) -> None:
        if event.tenant_id:
            log.error("a price for one tenant is not a price; skipped", tenant=event.tenant_id)
            return
        try:
            price = published_price(event)
        except ValueError as exc:
            # The admin API checks before publishing; the price in force stays.
            log.error("published price is not one", error=str(exc))  # noqa: TRY400 - the reason is the message
            return
        self.prices.add(price)
