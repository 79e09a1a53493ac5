"""Keys: issue (the secret is in the answer and nowhere else), list, revoke. How a secret
is made and the form it is stored in are `schemas.auth`'s (the views look a presented
secret up by the same rule, and they cannot import this module without a circle)."""

from __future__ import annotations

import secrets

from aiohttp import web

from gateway import errors
from gateway.admin import requests
from gateway.admin.context import AdminContext, Guard
from gateway.admin.policies import check_grant
from gateway.admin.principals import Principal
from gateway.admin.requests import ID_MAX_CHARS
from gateway.errors import GatewayError
from schemas.auth import key_sha256, new_key_secret
from schemas.durations import parse_duration_ms
from schemas.http_errors import json_response
from schemas.ids import now_ms
from schemas.records import ROLES, KeyIssued, KeyRevoked
from streams.keys.logic import role_rank
from streams.wallets.logic import team_wallet_id

KEY_PREFIX_CHARS = 10
REVOKE_REASON_MAX_CHARS = 512


class KeyRoutes:
    """POST/GET /v1/admin/keys, revoke; /v1/tokens is the same API under its usual name."""

    def __init__(self, context: AdminContext) -> None:
        self.context = context

    def routes(self, guard: Guard) -> list[web.RouteDef]:
        """The key routes."""
        return [
            web.post("/v1/admin/keys", guard(self.create_key)),
            web.get("/v1/admin/keys", guard(self.list_keys)),
            web.post("/v1/admin/keys/{key_id}/revoke", guard(self.revoke_key)),
            web.post("/v1/tokens", guard(self.create_key)),
            web.get("/v1/tokens", guard(self.list_keys)),
            web.delete("/v1/tokens/{key_id}", guard(self.revoke_key)),
        ]

    async def create_key(self, request: web.Request, principal: Principal) -> web.Response:
        """Issue a key; the secret is in this response and nowhere else."""
        views = self.context.views
        data = await requests.read_body(request)
        tenant = requests.acted_on_tenant(principal, data, self.context.default_tenant)
        team = requests.identifier(data, "team")
        role = data.get("role", "developer")
        if role not in ROLES:
            raise GatewayError(errors.INVALID_REQUEST, f"'role' must be one of {', '.join(ROLES)}")
        check_grant(views, principal, role)
        if role_rank(role) > role_rank(principal.role):
            raise GatewayError(errors.FORBIDDEN, f"a {principal.role} may not issue a {role} key")
        name = requests.short_string(data, "name", default=team)
        expires_at = None
        if data.get("expires_in"):
            try:
                expires_at = now_ms() + parse_duration_ms(str(data["expires_in"]))
            except ValueError as exc:
                raise GatewayError(errors.INVALID_REQUEST, str(exc)) from exc
        policy_pack = data.get("policy_pack", "")
        if not isinstance(policy_pack, str) or len(policy_pack) > ID_MAX_CHARS:
            raise GatewayError(errors.INVALID_REQUEST, "'policy_pack' must be a short string")
        if policy_pack and (tenant, policy_pack) not in views.packs:
            raise GatewayError(
                errors.INVALID_REQUEST,
                f"policy pack '{policy_pack}' is not published in tenant {tenant}; "
                "push it first (govledger policy push)",
            )
        secret = new_key_secret()
        key_id = f"key_{secrets.token_hex(8)}"
        record = KeyIssued(
            **self.context.envelope(KeyIssued, tenant),
            key_id=key_id,
            key_prefix=secret[:KEY_PREFIX_CHARS],
            key_sha256=key_sha256(secret),
            team_id=team,
            wallet_id=team_wallet_id(tenant, team),
            name=name,
            issued_by=principal.identity,
            expires_at=expires_at,
            models=requests.names(data, "models"),
            providers=requests.names(data, "providers"),
            regions=requests.names(data, "regions"),
            policy_pack=policy_pack,
            requests_per_minute=requests.limit(data, "requests_per_minute"),
            tokens_per_minute=requests.limit(data, "tokens_per_minute"),
            role=role,
        )
        await self.context.publish(record)
        await self.context.wait_until(lambda: key_id in views.keys)
        return json_response(
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
        views, budget = self.context.views, self.context.budget
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
                "last_used_at": views.key_last_used_ms.get(k.key_id),
                "spend_wallet_id": views.spend_wallet_id(k),
                "remaining_nanousd": budget.available_nanousd(views.spend_wallet_id(k)),
            }
            for k in views.keys.values()
            if principal.sees(k.tenant_id)
        ]
        return json_response({"data": keys})

    async def revoke_key(self, request: web.Request, principal: Principal) -> web.Response:
        """Revoke a key; calls with it get 401 key_revoked once the gateway sees the event."""
        views = self.context.views
        key_id = request.match_info["key_id"]
        key = views.keys.get(key_id)
        if key is None or not principal.sees(key.tenant_id):
            raise GatewayError(errors.NOT_FOUND, f"no key {key_id}")
        data = await requests.read_body(request)
        reason = data.get("reason", "revoked by admin")
        record = KeyRevoked(
            **self.context.envelope(KeyRevoked, key.tenant_id),
            key_id=key_id,
            reason=str(reason)[:REVOKE_REASON_MAX_CHARS],
            revoked_by=principal.identity,
        )
        await self.context.publish(record)
        await self.context.wait_until(lambda: views.keys[key_id].revoked_at is not None)
        return json_response({"key_id": key_id, "status": "revoked"})
