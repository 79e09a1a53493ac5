"""The admin API assembled: one guard (authentication, then every refusal answered in
one place, `gateway.errors.refusal_response`) in front of each resource's routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.admin.configurations import ConfigurationRoutes
from gateway.admin.context import AdminContext, Handler
from gateway.admin.escalations import EscalationRoutes
from gateway.admin.keys import KeyRoutes
from gateway.admin.notify import NotifyRoutes
from gateway.admin.policies import PolicyRoutes
from gateway.admin.prices import PriceRoutes
from gateway.admin.principals import principal_of_headers
from gateway.admin.wallets import WalletRoutes
from gateway.budget import Budget
from gateway.errors import GatewayError, refusal_response
from gateway.views import LocalViews
from schemas.access_log import note_caller
from schemas.ids import now_ms
from schemas.publisher import Publisher
from streams.escalations.logic import EscalationConfig


class AdminApi:
    """Admin routes, authenticated with the admin bearer token or an admin key."""

    def __init__(
        self,
        *,
        token: str,
        views: LocalViews,
        control: Publisher,
        budget: Budget,
        default_tenant: str,
        escalation_config: EscalationConfig,
    ) -> None:
        assert token, "the admin API needs a token"
        self._token = token
        self.context = AdminContext(
            views=views,
            control=control,
            budget=budget,
            default_tenant=default_tenant,
            escalation_config=escalation_config,
        )
        self.keys = KeyRoutes(self.context)
        self.wallets = WalletRoutes(self.context)
        self.policies = PolicyRoutes(self.context)
        self.configurations = ConfigurationRoutes(self.context, self.policies.publisher)
        self.escalations = EscalationRoutes(self.context)
        self.prices = PriceRoutes(self.context)
        # Notification routes; a test may put its own (allow-list, resolver) before `routes`.
        self.notify = NotifyRoutes(self.context)

    @property
    def views(self) -> LocalViews:
        """The gateway's views the admin API reads."""
        return self.context.views

    def routes(self) -> list[web.RouteDef]:
        """The admin routes; /v1/tokens is the key API under its usual name."""
        return [
            *self.keys.routes(self.guard),
            *self.wallets.routes(self.guard),
            *self.escalations.routes(self.guard),
            *self.policies.routes(self.guard),
            *self.configurations.routes(self.guard),
            *self.prices.routes(self.guard),
            *self.notify.routes(self.guard),
        ]

    def guard(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The handler behind authentication; a GatewayError is answered as its kind says."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                principal = principal_of_headers(request.headers, self._token, self.views, now_ms())
                note_caller(request, principal.tenant_id)
                return await handler(request, principal)
            except GatewayError as exc:
                return refusal_response(exc)

        return guarded
