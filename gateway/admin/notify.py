"""Notification routes: add (the destination checked against the org's allow-list and
every address it resolves to, the secret sealed before it is published), list, remove and
test. A tenant admin manages its tenant's routes; an org admin also the org's (`"scope":
"org"`: every tenant's notices and the org-wide ones, such as fleet breakers)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.admin import requests
from gateway.admin.context import AdminContext, Guard
from gateway.admin.principals import Principal
from gateway.errors import GatewayError
from schemas import authn
from schemas.http_errors import json_response
from schemas.ids import now_ms, uuid7
from schemas.notify_records import NotifyRouteAdded, NotifyRouteRemoved
from schemas.notify_secrets import MAX_SECRET_BYTES, SealError, seal_route, unseal_route
from schemas.settings import NotifySettings, load
from schemas.webhook_destinations import (
    AllowList,
    Destination,
    DestinationRefusedError,
    destination,
    display_url,
    refused_addresses,
)
from schemas.webhook_sender import WebhookSender, sender_kwargs
from streams.notify import logic
from streams.notify.logic import FORMATS, ROUTE_EVENTS, Route

Resolve = Callable[[str, int], Awaitable[list[str]]]


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolves a host to."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class NotifyRoutes:
    """Add, list, remove and test notification routes."""

    def __init__(
        self,
        context: AdminContext,
        settings: NotifySettings | None = None,
        resolve: Resolve = system_resolve,
        sender: WebhookSender | None = None,
    ) -> None:
        self.context = context
        self.settings = settings if settings is not None else load(NotifySettings)
        self.allow = AllowList.parse(
            self.settings.notify_allowed_hosts, self.settings.notify_private_hosts
        )
        self.resolve = resolve
        self.sender = (
            sender if sender is not None else WebhookSender(**sender_kwargs(self.settings))
        )

    def routes(self, guard: Guard) -> list[web.RouteDef]:
        """The notification routes."""
        return [
            web.post("/v1/admin/notify/routes", guard(self.add)),
            web.get("/v1/admin/notify/routes", guard(self.list_routes)),
            web.delete("/v1/admin/notify/routes/{route_id}", guard(self.remove)),
            web.post("/v1/admin/notify/routes/{route_id}/test", guard(self.test)),
        ]

    async def checked_destination(self, url: str) -> Destination:
        """The destination of a new route: allowed, and every address it resolves to
        allowed too; GatewayError 400 saying why not."""
        try:
            where = destination(url, self.allow)
        except DestinationRefusedError as exc:
            raise GatewayError(errors.INVALID_REQUEST, f"destination refused: {exc}") from None
        try:
            literal = str(ipaddress.ip_address(where.host))
            addresses = [literal]
        except ValueError:
            try:
                addresses = await self.resolve(where.host, where.port)
            except OSError as exc:
                raise GatewayError(
                    errors.INVALID_REQUEST,
                    f"destination refused: {where.host} does not resolve: {exc}",
                ) from None
        refused = refused_addresses(addresses, where.private_ok)
        if refused or not addresses:
            raise GatewayError(
                errors.INVALID_REQUEST,
                f"destination refused: {where.host} resolves to private or reserved addresses "
                f"({', '.join(refused)}); list it in GOVLEDGER_NOTIFY_PRIVATE_HOSTS to allow",
            )
        return where

    def _tenant_of(self, principal: Principal, data: dict[str, Any]) -> str:
        scope = data.get("scope", "tenant")
        if scope == "org":
            if principal.tenant_id is not None:
                raise GatewayError(errors.FORBIDDEN, "only an org admin may add an org route")
            return ""
        if scope != "tenant":
            raise GatewayError(errors.INVALID_REQUEST, "'scope' must be tenant or org")
        return requests.acted_on_tenant(principal, data, self.context.default_tenant)

    async def add(self, request: web.Request, principal: Principal) -> web.Response:
        """Add a route: `{"events": [...], "url", "secret", "format"?, "tenant"?, "scope"?}`."""
        data = await requests.read_body(request)
        tenant_id = self._tenant_of(principal, data)
        events = requests.names(data, "events")
        unknown = sorted(set(events) - set(ROUTE_EVENTS))
        if not events or unknown:
            raise GatewayError(
                errors.INVALID_REQUEST,
                f"'events' must name some of {', '.join(ROUTE_EVENTS)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
            )
        fmt = data.get("format", "cloudevents")
        if fmt not in FORMATS:
            raise GatewayError(
                errors.INVALID_REQUEST, f"'format' must be one of {', '.join(FORMATS)}"
            )
        secret = data.get("secret")
        if not isinstance(secret, str) or not secret or len(secret.encode()) > MAX_SECRET_BYTES:
            raise GatewayError(
                errors.INVALID_REQUEST, f"'secret' must be a string of 1..{MAX_SECRET_BYTES} bytes"
            )
        url = data.get("url")
        if not isinstance(url, str):
            raise GatewayError(errors.INVALID_REQUEST, "'url' must be a string")
        where = await self.checked_destination(url)
        views = self.context.views
        owned = sum(1 for r in views.notify_routes.values() if r.tenant_id == tenant_id)
        if owned >= self.settings.notify_max_routes:
            raise GatewayError(
                errors.CONFLICT, f"{tenant_id or 'the org'} has {owned} routes already (the most)"
            )
        keyring = authn.installed()
        if keyring is None:
            raise GatewayError(errors.POLICY_UNAVAILABLE, "no org keyring to seal the secret with")
        route_id = uuid7()
        record = NotifyRouteAdded(
            **self.context.envelope(NotifyRouteAdded, tenant_id),
            route_id=route_id,
            events=tuple(dict.fromkeys(events)),
            url=display_url(where),
            format=fmt,
            secret_sealed=seal_route(keyring, tenant_id, route_id, url, secret),
            added_by=principal.identity,
        )
        await self.context.publish(record)
        await self.context.wait_until(lambda: route_id in views.notify_routes)
        folded = logic.evolve({}, record)[route_id]
        return json_response(folded.public(), status=201)

    def _visible(self, principal: Principal) -> list[Route]:
        return [
            r
            for r in self.context.views.notify_routes.values()
            if principal.tenant_id is None or r.tenant_id == principal.tenant_id
        ]

    def _route(self, request: web.Request, principal: Principal) -> Route:
        route_id = request.match_info["route_id"]
        for route in self._visible(principal):
            if route.route_id == route_id:
                return route
        raise GatewayError(errors.NOT_FOUND, f"no notification route {route_id}")

    async def list_routes(self, request: web.Request, principal: Principal) -> web.Response:
        """The routes the caller sees (`?tenant=` narrows), oldest first; no secrets."""
        tenant = request.query.get("tenant")
        rows = [
            r.public()
            for r in sorted(self._visible(principal), key=lambda r: r.added_at)
            if tenant is None or r.tenant_id == tenant
        ]
        return json_response({"object": "list", "data": rows})

    async def remove(self, request: web.Request, principal: Principal) -> web.Response:
        """Remove a route of the caller's tenant (org routes: org admins)."""
        route = self._route(request, principal)
        record = NotifyRouteRemoved(
            **self.context.envelope(NotifyRouteRemoved, route.tenant_id),
            route_id=route.route_id,
            removed_by=principal.identity,
        )
        await self.context.publish(record)
        views = self.context.views
        await self.context.wait_until(lambda: route.route_id not in views.notify_routes)
        return json_response({"id": route.route_id, "deleted": True})

    async def test(self, request: web.Request, principal: Principal) -> web.Response:
        """Send a signed test notice (event type notify.test) to the route now, once, and
        answer how it went (not recorded in the notifications table)."""
        route = self._route(request, principal)
        keyring = authn.installed()
        if keyring is None:
            raise GatewayError(errors.POLICY_UNAVAILABLE, "no org keyring to open the secret with")
        try:
            url, secret = unseal_route(
                keyring, route.tenant_id, route.route_id, route.secret_sealed
            )
        except SealError as exc:
            raise GatewayError(
                errors.CONFLICT, f"the route's secret does not open: {exc}"
            ) from None
        where = await self.checked_destination(url)
        notice = logic.trial_notice(route, uuid7(), now_ms())
        body, headers = logic.signed_request(notice, route.format, secret, now_ms() // 1000)
        answer = await self.sender.post(where, body, headers)
        return json_response(
            {
                "id": route.route_id,
                "webhook_id": notice.event_id,
                "delivered": answer.delivered,
                "http_status": answer.http_status,
                "latency_ms": answer.latency_ms,
                "error": answer.error,
            }
        )
