"""The admin API: issue and revoke keys, fund, allocate, refund and correct wallets, set
their overdraft limits, read balances, publish policy packs, decide escalations. Each
change is a control event (the admin log), produced with acks=all before the call returns.

Who may do what: the bootstrap admin token and keys with role org-admin act on every
tenant; keys with role tenant-admin act on their own tenant only, and never issue a role
above their own. Funding wallets, allocating from the org wallet to teams, refunds,
corrections and overdraft limits are for org admins: a tenant admin could otherwise lift
the budget it is held to. A tenant admin may allocate its teams' money to their keys.
Another tenant's keys, packs, wallets and escalations are answered with 404, as if they
did not exist."""

from __future__ import annotations

import asyncio
import difflib
import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiohttp import web

from gateway import errors
from gateway.admin_baseline import BaselineRoutes, check_grant, check_pack
from gateway.budget import Budget
from gateway.errors import GatewayError, error_response
from gateway.pipeline import new_key_secret
from gateway.policy.pack import PackError, parse_pack
from gateway.views import MAX_ESCALATIONS, LocalViews, key_sha256
from schemas.auth import (
    MalformedCredentialError,
    authorization_header,
    bearer_token,
    check_secret,
)
from schemas.ids import now_ms, uuid7
from schemas.money import format_usd, usd_to_nanousd
from schemas.publisher import Publisher
from schemas.records import (
    ROLES,
    EscalationChanged,
    EscalationOpened,
    EscalationResolved,
    Event,
    KeyIssued,
    KeyRevoked,
    PolicyPackPublished,
    Role,
    WalletAllocated,
    WalletBudgetSet,
    WalletCorrected,
    WalletFunded,
    WalletLimitSet,
    WalletRefunded,
)
from schemas.settings import StreamSettings, load
from schemas.topics import CONTROL
from streams.escalations import logic as escalations_logic
from streams.escalations.logic import CLAIMED, REASSIGNED, action_of, config_of
from streams.keys.logic import role_rank
from streams.quotas import logic as quotas_logic
from streams.wallets import logic as wallets_logic
from streams.wallets.logic import team_wallet_id

E = TypeVar("E", bound=Event)
KEY_PREFIX_CHARS = 10
VIEW_WAIT_S = 5.0
MAX_ADMIN_BODY_BYTES = 64 * 1024
ID_MAX_CHARS = 128


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _identifier(data: dict[str, Any], name: str, default: str | None = None) -> str:
    value = data.get(name, default)
    if not isinstance(value, str) or not value or len(value) > ID_MAX_CHARS or "/" in value:
        raise GatewayError(
            errors.INVALID_REQUEST, f"'{name}' must be a non-empty string without '/'"
        )
    return value


DURATION_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_SCOPE_ITEMS = 64


def parse_duration_ms(text: str) -> int:
    """'90d', '12h', '30m' or '45s' in milliseconds; ValueError for anything else."""
    number, unit = text[:-1], text[-1:]
    if unit not in DURATION_UNITS_MS or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"not a duration like 90d, 12h, 30m or 45s: {text!r}")
    return int(number) * DURATION_UNITS_MS[unit]


def _names(data: dict[str, Any], name: str) -> tuple[str, ...]:
    value = data.get(name, [])
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if (
        not isinstance(value, list)
        or len(value) > MAX_SCOPE_ITEMS
        or not all(isinstance(v, str) and 0 < len(v) <= ID_MAX_CHARS for v in value)
    ):
        raise GatewayError(errors.INVALID_REQUEST, f"'{name}' must be a list of names")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling the admin API: an identity, a role and, for tenant admins, a tenant."""

    identity: str
    role: Role
    tenant_id: str | None  # None: every tenant

    def sees(self, tenant_id: str) -> bool:
        """Whether this principal may read and change the tenant's records."""
        return self.tenant_id is None or self.tenant_id == tenant_id


ROOT = Principal("admin", "org-admin", None)


def principal_for(presented: str, admin_token: str, views: LocalViews, at_ms: int) -> Principal:
    """Who presents this secret to an admin surface (the admin API, the query API): the
    bootstrap token, or an active key of role tenant-admin or above. GatewayError with
    401 for no or an unknown, revoked or expired secret, 403 for a lesser role."""
    if not presented:
        raise GatewayError(errors.MISSING_API_KEY, "admin key required")
    try:  # before any comparison or hash: those fail on non-ASCII text
        check_secret(presented)
    except MalformedCredentialError as exc:
        raise GatewayError(errors.MALFORMED_API_KEY, str(exc)) from None
    if hmac.compare_digest(presented, admin_token):
        return ROOT
    key = views.key_for_secret(presented)
    if key is None or key.status(at_ms) != "active":
        raise GatewayError(errors.INVALID_API_KEY, "admin key required")
    if not key.has_role("tenant-admin"):
        raise GatewayError(errors.FORBIDDEN, f"key role {key.role!r} may not use the admin API")
    tenant = None if key.role == "org-admin" else key.tenant_id
    return Principal(f"key:{key.key_id}", key.role, tenant)


def _limit(data: dict[str, Any], name: str) -> int:
    value = data.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise GatewayError(errors.INVALID_REQUEST, f"'{name}' must be a non-negative integer")
    return value


ESCALATION_STATUSES = ("open", "resolved", "all")


def thresholds_of(value: Any) -> tuple[int, ...]:
    """Budget thresholds as given: absent (the defaults), a list of whole percentages or
    their comma-separated text; whether they are usable is `quotas.logic.budget_set`'s
    call. ValueError for anything else."""
    if value is None:
        return quotas_logic.DEFAULT_THRESHOLDS_PERCENT
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
        if not all(part.isdigit() for part in parts):
            raise ValueError(f"'thresholds' must be whole percentages, e.g. 50,80,100: {value!r}")
        return tuple(int(part) for part in parts)
    if isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    raise ValueError("'thresholds' must be a list of whole percentages")


@functools.cache
def escalation_config() -> escalations_logic.EscalationConfig:
    """The escalation settings of the stream processors (`GOVLEDGER_ESCALATION_*`), read
    from this process's environment, so the listing routes and times escalations as the
    escalations processor does."""
    return config_of(load(StreamSettings))


def escalation_listing(
    opened: Iterable[EscalationOpened],
    changes: Iterable[EscalationChanged],
    decisions: Mapping[str, str],
    config: escalations_logic.EscalationConfig,
    *,
    now: int,
    status: str = "open",
    queue: str | None = None,
) -> list[dict[str, Any]]:
    """Escalations as the admin API lists them, most urgent first: the opens and the claims
    and reassigns folded with `streams.escalations.logic`, decided ones marked from the
    decisions (`escalation_id -> approve|reject`). `status` is open (every undecided one,
    claimed or not), resolved or all."""
    assert status in ESCALATION_STATUSES, "the status filter is validated by the handler"
    actions = (a for a in (action_of(c) for c in changes) if a is not None)
    state, _ = escalations_logic.fold([*opened, *actions], config)
    rows = []
    for e in escalations_logic.open_escalations(state, queue):
        decision = decisions.get(e.escalation_id)
        if (status == "open" and decision is not None) or (
            status == "resolved" and decision is None
        ):
            continue
        rows.append(
            {
                "escalation_id": e.escalation_id,
                "tenant": e.tenant_id,
                "team": e.team_id,
                "category": e.category,
                "priority": e.priority,
                "queue": e.queue,
                "status": e.status if decision is None else "resolved",
                "claimed_by": e.claimed_by,
                "decision": decision,
                "reason": e.reason,
                "trace_id": e.trace_id,
                "opened_at": e.opened_at,
                "age_ms": max(now - e.opened_at, 0),
                "deadline_at": e.deadline_at,
                "overdue": decision is None and now > e.deadline_at,
            }
        )
    return rows


class AdminApi:
    """Admin routes, authenticated with the admin bearer token."""

    def __init__(
        self,
        *,
        token: str,
        views: LocalViews,
        control: Publisher,
        budget: Budget,
        default_tenant: str,
    ) -> None:
        assert token, "the admin API needs a token"
        self._token = token
        self.views = views
        self.control = control
        self.budget = budget
        self.default_tenant = default_tenant
        # Claims and reassigns this gateway published, by escalation (see `_changes_of`).
        self.escalation_changes: dict[str, list[EscalationChanged]] = {}

    def routes(self) -> list[web.RouteDef]:
        """The admin routes; /v1/tokens is the same key API under its usual name."""
        return [
            web.post("/v1/admin/keys", self._guard(self.create_key)),
            web.get("/v1/admin/keys", self._guard(self.list_keys)),
            web.post("/v1/admin/keys/{key_id}/revoke", self._guard(self.revoke_key)),
            web.post("/v1/tokens", self._guard(self.create_key)),
            web.get("/v1/tokens", self._guard(self.list_keys)),
            web.delete("/v1/tokens/{key_id}", self._guard(self.revoke_key)),
            web.post("/v1/admin/wallets/fund", self._guard(self.fund_wallet)),
            web.get("/v1/admin/wallets/balance", self._guard(self.balance)),
            web.post("/v1/admin/wallets/budget", self._guard(self.set_budget)),
            web.post("/v1/admin/wallets/allocate", self._guard(self.allocate)),
            web.post("/v1/admin/wallets/refund", self._guard(self.refund)),
            web.post("/v1/admin/wallets/correct", self._guard(self.correct)),
            web.post("/v1/admin/wallets/limit", self._guard(self.set_limit)),
            web.get("/v1/admin/escalations", self._guard(self.list_escalations)),
            web.post(
                "/v1/admin/escalations/{escalation_id}/claim", self._guard(self.claim_escalation)
            ),
            web.post(
                "/v1/admin/escalations/{escalation_id}/reassign",
                self._guard(self.reassign_escalation),
            ),
            web.post("/v1/admin/policies", self._guard(self.push_policy)),
            web.get("/v1/admin/policies", self._guard(self.list_policies)),
            web.post("/v1/admin/escalations/{escalation_id}/resolve", self._guard(self.resolve)),
            *BaselineRoutes(self).routes(),
        ]

    def _principal(self, request: web.Request) -> Principal:
        try:
            presented = bearer_token(authorization_header(request.headers))
        except MalformedCredentialError as exc:
            raise GatewayError(errors.MALFORMED_API_KEY, str(exc)) from None
        return principal_for(presented, self._token, self.views, now_ms())

    def _guard(self, handler: Any) -> Any:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                principal = self._principal(request)
                return await handler(request, principal)  # type: ignore[no-any-return]
            except GatewayError as exc:
                return error_response(exc.kind, exc.message, exc.headers)

        return guarded

    @staticmethod
    def _tenant(principal: Principal, data: dict[str, Any], default: str) -> str:
        """The tenant a request acts on: named, or the principal's own, or the default."""
        tenant = _identifier(data, "tenant", principal.tenant_id or default)
        if not principal.sees(tenant):
            raise GatewayError(errors.FORBIDDEN, f"a {principal.role} may not act on {tenant}")
        return tenant

    async def _body(self, request: web.Request) -> dict[str, Any]:
        body = await request.content.read(MAX_ADMIN_BODY_BYTES + 1)
        if len(body) > MAX_ADMIN_BODY_BYTES:
            raise GatewayError(errors.BODY_TOO_LARGE, "admin request body too large")
        try:
            data = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise GatewayError(errors.INVALID_JSON, f"body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise GatewayError(errors.INVALID_REQUEST, "body must be a JSON object")
        return data

    def _envelope(self, record_type: type[Event], tenant_id: str) -> dict[str, Any]:
        return {
            "event_id": uuid7(),
            "event_type": record_type.event_type_name,
            "occurred_at": now_ms(),
            "tenant_id": tenant_id,
            "producer_id": "",
            "seq": 0,
        }

    async def _publish(self, record: E) -> E:
        return await self.control.publish_and_wait(CONTROL.name, record.tenant_id, record)

    async def create_key(self, request: web.Request, principal: Principal) -> web.Response:
        """Issue a key; the secret is in this response and nowhere else."""
        data = await self._body(request)
        tenant = self._tenant(principal, data, self.default_tenant)
        team = _identifier(data, "team")
        role = data.get("role", "developer")
        if role not in ROLES:
            raise GatewayError(errors.INVALID_REQUEST, f"'role' must be one of {', '.join(ROLES)}")
        check_grant(self.views, principal, role)
        if role_rank(role) > role_rank(principal.role):
            raise GatewayError(errors.FORBIDDEN, f"a {principal.role} may not issue a {role} key")
        name = data.get("name") or team
        if not isinstance(name, str) or len(name) > ID_MAX_CHARS:
            raise GatewayError(errors.INVALID_REQUEST, "'name' must be a short string")
        expires_at = None
        if data.get("expires_in"):
            try:
                expires_at = now_ms() + parse_duration_ms(str(data["expires_in"]))
            except ValueError as exc:
                raise GatewayError(errors.INVALID_REQUEST, str(exc)) from exc
        policy_pack = data.get("policy_pack", "")
        if not isinstance(policy_pack, str) or len(policy_pack) > ID_MAX_CHARS:
            raise GatewayError(errors.INVALID_REQUEST, "'policy_pack' must be a short string")
        if policy_pack and (tenant, policy_pack) not in self.views.packs:
            raise GatewayError(
                errors.INVALID_REQUEST,
                f"policy pack '{policy_pack}' is not published in tenant {tenant}; "
                "push it first (govledger policy push)",
            )
        secret = new_key_secret()
        key_id = f"key_{secrets.token_hex(8)}"
        record = KeyIssued(
            **self._envelope(KeyIssued, tenant),
            key_id=key_id,
            key_prefix=secret[:KEY_PREFIX_CHARS],
            key_sha256=key_sha256(secret),
            team_id=team,
            wallet_id=team_wallet_id(tenant, team),
            name=name,
            issued_by=principal.identity,
            expires_at=expires_at,
            models=_names(data, "models"),
            providers=_names(data, "providers"),
            regions=_names(data, "regions"),
            policy_pack=policy_pack,
            requests_per_minute=_limit(data, "requests_per_minute"),
            tokens_per_minute=_limit(data, "tokens_per_minute"),
            role=role,
        )
        await self._publish(record)
        await self._wait_until(lambda: key_id in self.views.keys)
        return _json(
            {
                "key": secret,
                "key_id": key_id,
                "key_prefix": record.key_prefix,
                "tenant": tenant,
                "team": team,
                "wallet_id": record.wallet_id,
                "name": name,
                "expires_at": expires_at,
                "models": list(record.models),
                "providers": list(record.providers),
                "regions": list(record.regions),
                "requests_per_minute": record.requests_per_minute,
                "tokens_per_minute": record.tokens_per_minute,
                "policy_pack": record.policy_pack,
                "role": record.role,
            },
            status=201,
        )

    async def list_keys(self, request: web.Request, principal: Principal) -> web.Response:
        """Keys with prefix, team, status, expiry, when this gateway last saw each used and
        what its wallet has left; never a secret."""
        now = now_ms()
        keys = [
            {
                "key_id": k.key_id,
                "key_prefix": k.key_prefix,
                "tenant": k.tenant_id,
                "team": k.team_id,
                "name": k.name,
                "status": k.status(now),
                "wallet_id": k.wallet_id,
                "expires_at": k.expires_at,
                "models": list(k.models),
                "requests_per_minute": k.requests_per_minute,
                "tokens_per_minute": k.tokens_per_minute,
                "policy_pack": k.policy_pack,
                "role": k.role,
                "last_used_at": self.views.key_last_used_ms.get(k.key_id),
                "spend_wallet_id": self.views.spend_wallet_id(k),
                "remaining_nanousd": self.budget.available_nanousd(self.views.spend_wallet_id(k)),
            }
            for k in self.views.keys.values()
            if principal.sees(k.tenant_id)
        ]
        return _json({"data": keys})

    async def revoke_key(self, request: web.Request, principal: Principal) -> web.Response:
        """Revoke a key; calls with it get 401 key_revoked once the gateway sees the event."""
        key_id = request.match_info["key_id"]
        key = self.views.keys.get(key_id)
        if key is None or not principal.sees(key.tenant_id):
            raise GatewayError(errors.NOT_FOUND, f"no key {key_id}")
        data = await self._body(request)
        reason = data.get("reason", "revoked by admin")
        record = KeyRevoked(
            **self._envelope(KeyRevoked, key.tenant_id),
            key_id=key_id,
            reason=str(reason)[:512],
            revoked_by=principal.identity,
        )
        await self._publish(record)
        await self._wait_until(lambda: self.views.keys[key_id].revoked_at is not None)
        return _json({"key_id": key_id, "status": "revoked"})

    def _wallet_target(self, principal: Principal, data: Mapping[str, Any]) -> str:
        """The wallet a request names: `wallet_id`, or `tenant` (default: the principal's,
        else the gateway's) with `team` and `key` (none: the org wallet). Another tenant's
        wallet is answered with 404."""
        named = data.get("wallet_id")
        if named is not None:
            if (
                not isinstance(named, str)
                or len(named) > 3 * ID_MAX_CHARS + 2
                or not wallets_logic.is_wallet_id(named)
            ):
                raise GatewayError(
                    errors.INVALID_REQUEST,
                    "'wallet_id' must be tenant, tenant/team or tenant/team/key_id",
                )
            wallet_id = named
        else:
            fields = dict(data)
            tenant = _identifier(fields, "tenant", principal.tenant_id or self.default_tenant)
            if fields.get("team") is None:
                if fields.get("key") is not None:
                    raise GatewayError(errors.INVALID_REQUEST, "'key' needs its 'team'")
                wallet_id = wallets_logic.org_wallet_id(tenant)
            elif fields.get("key") is None:
                wallet_id = team_wallet_id(tenant, _identifier(fields, "team"))
            else:
                wallet_id = wallets_logic.key_wallet_id(
                    tenant, _identifier(fields, "team"), _identifier(fields, "key")
                )
        if not principal.sees(wallets_logic.tenant_of(wallet_id)):
            raise GatewayError(errors.NOT_FOUND, f"no wallet {wallet_id}")
        return wallet_id

    @staticmethod
    def _amount(data: Mapping[str, Any], *, sign: int) -> int:
        """The `usd` of a request in nano-USD: positive (sign 1), non-negative (sign 0) or
        signed and non-zero (sign -1)."""
        try:
            amount = usd_to_nanousd(data.get("usd", ""))
        except ValueError as exc:
            raise GatewayError(errors.INVALID_REQUEST, str(exc)) from exc
        if sign == 1 and amount <= 0:
            raise GatewayError(errors.INVALID_REQUEST, "'usd' must be positive")
        if sign == 0 and amount < 0:
            raise GatewayError(errors.INVALID_REQUEST, "'usd' may not be negative")
        if sign == -1 and amount == 0:
            raise GatewayError(errors.INVALID_REQUEST, "'usd' may not be 0")
        return amount

    @staticmethod
    def _text(data: Mapping[str, Any], name: str, *, required: bool = False) -> str:
        value = data.get(name, "")
        if not isinstance(value, str) or (required and not value.strip()):
            raise GatewayError(errors.INVALID_REQUEST, f"'{name}' must be a non-empty string")
        return value[:512]

    def _check_transfer(self, source_id: str, amount_nanousd: int) -> None:
        """Refuse a transfer the source cannot cover as this gateway sees it: balance plus
        overdraft limit, minus what this gateway committed that the balance does not show.
        (The wallets processor decides again, on the published journal.)"""
        available = self.budget.available_nanousd(source_id)
        if amount_nanousd > available:
            raise GatewayError(
                errors.TRANSFER_REJECTED,
                f"wallet {source_id} cannot cover a transfer of {format_usd(amount_nanousd)} "
                f"USD (available {format_usd(available)} USD including its overdraft limit)",
            )

    def _seen(self, wallet_id: str, record: Event) -> bool:
        wallet = self.views.wallets.get(wallet_id)
        return wallet is not None and wallet.applied_seqs.get(record.producer_id, 0) >= record.seq

    async def _transfer_status(self, sealed: Event, source_id: str, dest_id: str | None) -> str:
        """accepted, rejected, or pending (this gateway has not seen the decision yet)."""
        await self._wait_until(lambda: self._seen(source_id, sealed))
        source = self.views.wallets.get(source_id)
        if source is None or not self._seen(source_id, sealed):
            return "pending"
        if source.last_decided_event_id == sealed.event_id:
            decision = source.last_decision
        elif dest_id is not None:
            # Another transfer out of the source was decided since: the child tells.
            await self._wait_until(lambda: self._seen(dest_id, sealed))
            decision = "accepted" if self._seen(dest_id, sealed) else "rejected"
        else:
            decision = "accepted" if source.last_event_id == sealed.event_id else "pending"
        if decision == wallets_logic.REJECTED:
            raise GatewayError(
                errors.TRANSFER_REJECTED,
                f"the wallets processor rejected transfer {sealed.event_id}: wallet "
                f"{source_id} would go below its overdraft limit",
            )
        if dest_id is not None and decision == wallets_logic.ACCEPTED:
            await self._wait_until(lambda: self._seen(dest_id, sealed))
        return decision

    async def fund_wallet(self, request: web.Request, principal: Principal) -> web.Response:
        """Credit a wallet with an exact USD amount (org admins only): the org wallet of
        `tenant`, or a team's (`team`) or key's (`team`, `key`), or `wallet_id`."""
        if principal.role != "org-admin":
            raise GatewayError(errors.FORBIDDEN, "only an org admin may fund wallets")
        data = await self._body(request)
        wallet_id = self._wallet_target(principal, data)
        amount = self._amount(data, sign=1)
        record = WalletFunded(
            **self._envelope(WalletFunded, wallets_logic.tenant_of(wallet_id)),
            wallet_id=wallet_id,
            team_id=wallets_logic.team_of(wallet_id),
            amount_nanousd=amount,
            memo=str(data.get("memo", ""))[:512],
            funded_by=principal.identity,
        )
        sealed = await self._publish(record)
        # Answer once this gateway's view has the credit, so the next call can spend it.
        await self._wait_until(lambda: self._applied(sealed))
        return _json(
            {"event_id": sealed.event_id, "wallet_id": record.wallet_id, "amount_nanousd": amount},
            status=201,
        )

    async def allocate(self, request: web.Request, principal: Principal) -> web.Response:
        """Move money down the tree, from a wallet to one of its children: org → team (org
        admins), team → key (also a tenant admin of that tenant). The child is named like
        any wallet (`team`, `key`, or `wallet_id`); `from_wallet_id`, if given, must be its
        parent. 409 transfer_rejected if the parent cannot cover it."""
        data = await self._body(request)
        to_wallet = self._wallet_target(principal, data)
        parent = wallets_logic.parent_wallet_id(to_wallet)
        if parent is None:
            raise GatewayError(
                errors.INVALID_REQUEST, "an org wallet has no parent to allocate from; fund it"
            )
        named_from = data.get("from_wallet_id")
        if named_from is not None and named_from != parent:
            raise GatewayError(
                errors.INVALID_REQUEST,
                f"money moves from a wallet to its child only: {to_wallet} is a child of {parent}",
            )
        path = wallets_logic.path_of(to_wallet)
        if len(path) == 2 and principal.role != "org-admin":
            raise GatewayError(
                errors.FORBIDDEN, "only an org admin may allocate from the org wallet to a team"
            )
        if len(path) == 3:
            key = self.views.keys.get(path[2])
            if key is None or (key.tenant_id, key.team_id) != path[:2]:
                raise GatewayError(errors.NOT_FOUND, f"no key {path[2]} in team {path[1]}")
        amount = self._amount(data, sign=1)
        self._check_transfer(parent, amount)
        record = WalletAllocated(
            **self._envelope(WalletAllocated, path[0]),
            from_wallet_id=parent,
            to_wallet_id=to_wallet,
            team_id=wallets_logic.team_of(to_wallet),
            amount_nanousd=amount,
            memo=self._text(data, "memo"),
            allocated_by=principal.identity,
        )
        sealed = await self._publish(record)
        status = await self._transfer_status(sealed, parent, to_wallet)
        return _json(
            {
                "event_id": sealed.event_id,
                "from_wallet_id": parent,
                "to_wallet_id": to_wallet,
                "amount_nanousd": amount,
                "status": status,
            },
            status=201,
        )

    async def refund(self, request: web.Request, principal: Principal) -> web.Response:
        """Credit a call's charge back to a wallet (org admins only): `call_event_id` names
        the call, `usd` the amount; the settlement itself stays as it was."""
        if principal.role != "org-admin":
            raise GatewayError(errors.FORBIDDEN, "only an org admin may refund")
        data = await self._body(request)
        wallet_id = self._wallet_target(principal, data)
        call_event_id = _identifier(data, "call_event_id")
        amount = self._amount(data, sign=1)
        record = WalletRefunded(
            **self._envelope(WalletRefunded, wallets_logic.tenant_of(wallet_id)),
            wallet_id=wallet_id,
            team_id=wallets_logic.team_of(wallet_id),
            amount_nanousd=amount,
            call_event_id=call_event_id,
            reason=self._text(data, "reason"),
            refunded_by=principal.identity,
        )
        sealed = await self._publish(record)
        await self._wait_until(lambda: self._seen(wallet_id, sealed))
        return _json(
            {
                "event_id": sealed.event_id,
                "wallet_id": wallet_id,
                "call_event_id": call_event_id,
                "amount_nanousd": amount,
            },
            status=201,
        )

    async def correct(self, request: web.Request, principal: Principal) -> web.Response:
        """A signed correction entry (org admins only): `usd` (negative debits),
        `entry_event_id` (the entry corrected) and a `reason`. No entry is ever edited. A
        debit the wallet cannot cover is 409 transfer_rejected."""
        if principal.role != "org-admin":
            raise GatewayError(errors.FORBIDDEN, "only an org admin may correct wallets")
        data = await self._body(request)
        wallet_id = self._wallet_target(principal, data)
        entry_event_id = _identifier(data, "entry_event_id")
        amount = self._amount(data, sign=-1)
        reason = self._text(data, "reason", required=True)
        if amount < 0:
            self._check_transfer(wallet_id, -amount)
        record = WalletCorrected(
            **self._envelope(WalletCorrected, wallets_logic.tenant_of(wallet_id)),
            wallet_id=wallet_id,
            team_id=wallets_logic.team_of(wallet_id),
            amount_nanousd=amount,
            entry_event_id=entry_event_id,
            reason=reason,
            corrected_by=principal.identity,
        )
        sealed = await self._publish(record)
        if amount < 0:
            status = await self._transfer_status(sealed, wallet_id, None)
        else:
            await self._wait_until(lambda: self._seen(wallet_id, sealed))
            status = "accepted" if self._seen(wallet_id, sealed) else "pending"
        return _json(
            {
                "event_id": sealed.event_id,
                "wallet_id": wallet_id,
                "entry_event_id": entry_event_id,
                "amount_nanousd": amount,
                "status": status,
            },
            status=201,
        )

    async def set_limit(self, request: web.Request, principal: Principal) -> web.Response:
        """Set how far below zero a wallet may go (org admins only): transfers out stop at
        minus the limit, and gateways admit calls against balance plus limit. 0 (every
        wallet's default) allows no overdraft."""
        if principal.role != "org-admin":
            raise GatewayError(errors.FORBIDDEN, "only an org admin may set overdraft limits")
        data = await self._body(request)
        wallet_id = self._wallet_target(principal, data)
        limit = self._amount(data, sign=0)
        record = WalletLimitSet(
            **self._envelope(WalletLimitSet, wallets_logic.tenant_of(wallet_id)),
            wallet_id=wallet_id,
            team_id=wallets_logic.team_of(wallet_id),
            overdraft_limit_nanousd=limit,
            set_by=principal.identity,
        )
        sealed = await self._publish(record)
        await self._wait_until(lambda: self._seen(wallet_id, sealed))
        return _json(
            {
                "event_id": sealed.event_id,
                "wallet_id": wallet_id,
                "overdraft_limit_nanousd": limit,
                "overdraft_limit_usd": format_usd(limit),
            },
            status=201,
        )

    async def balance(self, request: web.Request, principal: Principal) -> web.Response:
        """A wallet's balance as the gateway's local view has it: `wallet_id`, or `tenant`
        with `team` and `key` (none: the org wallet)."""
        wallet_id = self._wallet_target(principal, dict(request.query))
        wallet = self.views.wallets.get(wallet_id) or wallets_logic.new_wallet(wallet_id)
        return _json(
            {
                "wallet_id": wallet_id,
                "parent_wallet_id": wallets_logic.parent_wallet_id(wallet_id),
                "balance_nanousd": wallet.balance_nanousd,
                "balance_usd": format_usd(wallet.balance_nanousd),
                "funded_nanousd": wallet.funded_nanousd,
                "spent_nanousd": wallet.spent_nanousd,
                "allocated_in_nanousd": wallet.allocated_in_nanousd,
                "allocated_out_nanousd": wallet.allocated_out_nanousd,
                "refunded_nanousd": wallet.refunded_nanousd,
                "corrected_nanousd": wallet.corrected_nanousd,
                "overdraft_limit_nanousd": wallet.overdraft_limit_nanousd,
                "available_nanousd": self.budget.available_nanousd(wallet_id),
                "period_start_at": wallet.period_start_at,
                "period_spent_nanousd": wallet.period_spent_nanousd,
                "entry_count": wallet.entry_count,
                "rejected_count": wallet.rejected_count,
                "children": sorted(self.views.wallet_children.get(wallet_id, ())),
            }
        )

    async def push_policy(self, request: web.Request, principal: Principal) -> web.Response:
        """Lint a pack and publish it as the next version, with the diff from the last one.
        An unchanged pack publishes nothing."""
        data = await self._body(request)
        tenant = self._tenant(principal, data, self.default_tenant)
        source = data.get("source_yaml")
        if not isinstance(source, str):
            raise GatewayError(errors.INVALID_REQUEST, "'source_yaml' must be the pack's text")
        try:
            name = parse_pack(source).name
            problems = []
        except PackError as exc:
            problems = exc.errors
        if problems:
            return _json(
                {
                    "error": {
                        "message": "; ".join(str(p) for p in problems),
                        "type": errors.INVALID_REQUEST.type,
                        "code": "policy_invalid",
                        "param": None,
                        "lines": [{"line": p.line, "message": p.message} for p in problems],
                    }
                },
                status=400,
            )
        refusal = check_pack(self.views, source)
        if refusal is not None:
            return refusal
        known = self.views.packs.get((tenant, name))
        if known is not None and known.source_yaml == source:
            return _json({"pack": name, "tenant": tenant, "version": known.version, "diff": ""})
        version = known.version + 1 if known is not None else 1
        before = known.source_yaml if known is not None else ""
        diff = "".join(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                source.splitlines(keepends=True),
                fromfile=f"{name} v{version - 1}" if known else "/dev/null",
                tofile=f"{name} v{version}",
            )
        )
        record = PolicyPackPublished(
            **self._envelope(PolicyPackPublished, tenant),
            pack_name=name,
            version=version,
            source_yaml=source,
            source_sha256=hashlib.sha256(source.encode()).hexdigest(),
            diff=diff,
            published_by=principal.identity,
        )
        await self._publish(record)
        await self._wait_until(
            lambda: (
                (tenant, name) in self.views.packs
                and self.views.packs[(tenant, name)].version >= version
            )
        )
        return _json({"pack": name, "tenant": tenant, "version": version, "diff": diff}, status=201)

    async def list_policies(self, request: web.Request, principal: Principal) -> web.Response:
        """Published packs with their newest version."""
        packs = [
            {
                "tenant": tenant,
                "pack": name,
                "version": published.version,
                "description": published.pack.description,
                "steps": [step.name for step in published.pack.steps],
            }
            for (tenant, name), published in sorted(self.views.packs.items())
            if principal.sees(tenant)
        ]
        return _json({"data": packs})

    async def resolve(self, request: web.Request, principal: Principal) -> web.Response:
        """Approve or reject an escalation; a call held for it proceeds or is refused."""
        escalation_id = request.match_info["escalation_id"]
        opened = self.views.escalations.get(escalation_id)
        if opened is None or not principal.sees(opened.tenant_id):
            raise GatewayError(errors.NOT_FOUND, f"no escalation {escalation_id}")
        data = await self._body(request)
        decision = data.get("decision")
        if decision not in ("approve", "reject"):
            raise GatewayError(errors.INVALID_REQUEST, "'decision' must be approve or reject")
        if escalation_id in self.views.escalation_decisions:
            raise GatewayError(errors.CONFLICT, f"escalation {escalation_id} is already decided")
        record = EscalationResolved(
            **self._envelope(EscalationResolved, opened.tenant_id),
            escalation_id=escalation_id,
            decision=decision,
            resolved_by=principal.identity,
            note=str(data.get("note", ""))[:2_000],
        )
        await self._publish(record)
        await self._wait_until(lambda: escalation_id in self.views.escalation_decisions)
        return _json({"escalation_id": escalation_id, "decision": decision})

    def _applied(self, funded: WalletFunded) -> bool:
        wallet = self.views.wallets.get(funded.wallet_id)
        return wallet is not None and wallet.applied_seqs.get(funded.producer_id, 0) >= funded.seq

    async def _wait_until(self, condition: Any) -> None:
        deadline = asyncio.get_running_loop().time() + VIEW_WAIT_S
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.01)

    async def set_budget(self, request: web.Request, principal: Principal) -> web.Response:
        """Give a team's wallet a monthly budget and alert thresholds (org admins only, as
        funding: budgets are FinOps). A usd of 0 removes the budget."""
        if principal.role != "org-admin":
            raise GatewayError(errors.FORBIDDEN, "only an org admin may set budgets")
        data = await self._body(request)
        tenant = _identifier(data, "tenant", self.default_tenant)
        team = _identifier(data, "team")
        envelope = self._envelope(WalletBudgetSet, tenant)
        try:
            budget = quotas_logic.budget_set(
                wallet_id=team_wallet_id(tenant, team),
                tenant_id=tenant,
                team_id=team,
                budget_nanousd=usd_to_nanousd(data.get("usd", "")),
                occurred_at=envelope["occurred_at"],
                thresholds_percent=thresholds_of(data.get("thresholds")),
            )
        except ValueError as exc:
            raise GatewayError(errors.INVALID_REQUEST, str(exc)) from exc
        sealed = await self._publish(
            WalletBudgetSet(
                **envelope,
                wallet_id=budget.wallet_id,
                team_id=team,
                budget_nanousd=budget.budget_nanousd,
                thresholds_percent=budget.thresholds_percent,
                set_by=principal.identity,
            )
        )
        return _json(
            {
                "event_id": sealed.event_id,
                "wallet_id": budget.wallet_id,
                "budget_nanousd": budget.budget_nanousd,
                "budget_usd": format_usd(budget.budget_nanousd),
                "thresholds_percent": list(budget.thresholds_percent),
            },
            status=201,
        )

    async def list_escalations(self, request: web.Request, principal: Principal) -> web.Response:
        """Escalations this gateway has heard of, with priority, queue, age and deadline;
        `?status=open|resolved|all` (default open), `?queue=`, `?tenant=`."""
        status = request.query.get("status", "open")
        if status not in ESCALATION_STATUSES:
            raise GatewayError(errors.INVALID_REQUEST, "'status' must be open, resolved or all")
        tenant = request.query.get("tenant")
        opened = [
            o
            for o in self.views.escalations.values()
            if principal.sees(o.tenant_id) and tenant in (None, o.tenant_id)
        ]
        rows = escalation_listing(
            opened,
            (c for o in opened for c in self._changes_of(o.escalation_id)),
            self.views.escalation_decisions,
            escalation_config(),
            now=now_ms(),
            status=status,
            queue=request.query.get("queue") or None,
        )
        return _json({"data": rows})

    async def claim_escalation(self, request: web.Request, principal: Principal) -> web.Response:
        """Take an undecided escalation: the first claim wins until a reassign."""
        opened = self._undecided_escalation(request, principal)
        current = self._escalation_state(opened)
        if current.claimed_by not in (None, principal.identity):
            raise GatewayError(
                errors.CONFLICT,
                f"escalation {opened.escalation_id} is claimed by {current.claimed_by}; "
                "reassign it first",
            )
        await self._change_escalation(opened, CLAIMED, principal.identity)
        return _json(
            {
                "escalation_id": opened.escalation_id,
                "status": "claimed",
                "claimed_by": principal.identity,
                "queue": current.queue,
            }
        )

    async def reassign_escalation(self, request: web.Request, principal: Principal) -> web.Response:
        """Move an undecided escalation to a queue, unclaimed or claimed by `reviewer`."""
        opened = self._undecided_escalation(request, principal)
        data = await self._body(request)
        queue = _identifier(data, "queue")
        reviewer = data.get("reviewer") or ""
        if not isinstance(reviewer, str) or len(reviewer) > ID_MAX_CHARS:
            raise GatewayError(errors.INVALID_REQUEST, "'reviewer' must be a short string")
        await self._change_escalation(opened, REASSIGNED, principal.identity, queue, reviewer)
        return _json(
            {
                "escalation_id": opened.escalation_id,
                "status": "claimed" if reviewer else "open",
                "claimed_by": reviewer or None,
                "queue": queue,
            }
        )

    def _undecided_escalation(self, request: web.Request, principal: Principal) -> EscalationOpened:
        escalation_id = request.match_info["escalation_id"]
        opened = self.views.escalations.get(escalation_id)
        if opened is None or not principal.sees(opened.tenant_id):
            raise GatewayError(errors.NOT_FOUND, f"no escalation {escalation_id}")
        if escalation_id in self.views.escalation_decisions:
            raise GatewayError(errors.CONFLICT, f"escalation {escalation_id} is already decided")
        return opened

    def _changes_of(self, escalation_id: str) -> list[EscalationChanged]:
        """Claims and reassigns of an escalation: every gateway's, as the control topic
        has them, then this gateway's own not read back yet. A repeat would apply twice
        (a reassign again after a later claim), so an own change read back is skipped."""
        read = list(self.views.escalation_changes.get(escalation_id, ()))
        seen = {(c.producer_id, c.seq) for c in read}
        own = self.escalation_changes.get(escalation_id, ())
        return read + [c for c in own if (c.producer_id, c.seq) not in seen]

    def _escalation_state(self, opened: EscalationOpened) -> escalations_logic.Escalation:
        changes = self._changes_of(opened.escalation_id)
        actions = (a for a in (action_of(c) for c in changes) if a is not None)
        state, _ = escalations_logic.fold([opened, *actions], escalation_config())
        found = escalations_logic.find(state, opened.escalation_id)
        assert found is not None, "an escalation folded from its open is found"
        return found

    async def _change_escalation(
        self,
        opened: EscalationOpened,
        event_type: str,
        actor: str,
        queue: str = "",
        reviewer: str = "",
    ) -> None:
        """Publish a claim or reassign and remember it until the views read it back, so
        the answer and the next listing already show it."""
        sealed = await self._publish(
            EscalationChanged(
                **{**self._envelope(EscalationChanged, opened.tenant_id), "event_type": event_type},
                escalation_id=opened.escalation_id,
                actor=actor,
                queue=queue,
                reviewer=reviewer,
            )
        )
        self.escalation_changes.setdefault(opened.escalation_id, []).append(sealed)
        while len(self.escalation_changes) > MAX_ESCALATIONS:
            del self.escalation_changes[next(iter(self.escalation_changes))]
