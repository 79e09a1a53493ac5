"""Model prices: list the prices by provider, model and date, and publish a new one
(org admins only; prices are org-wide). A published price is a PricePublished control
record: every gateway and replay price a call at the price in force at its occurred_at.

A price may not start in the past: a call already recorded keeps the price it was
charged, and replay's re-pricing agrees with it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.admin import requests
from gateway.admin.context import AdminContext, Guard
from gateway.admin.principals import Principal
from gateway.errors import GatewayError
from gateway.policy.baseline import ORG_TENANT
from schemas.http_errors import json_response
from schemas.ids import now_ms
from schemas.pricing import Price, published_price
from schemas.records import PricePublished

PRICES_PATH = "/v1/admin/prices"
RATES = tuple(f.name for f in dataclasses.fields(Price) if f.name.endswith("_per_mtok"))
REQUIRED_RATES = ("input_nanousd_per_mtok", "output_nanousd_per_mtok")
# The largest rate accepted: $1M per million tokens, far above any price, far below the
# point where tokens x rate could leave an Avro long.
MAX_NANOUSD_PER_MTOK = 10**15


def _org_admin(principal: Principal) -> None:
    if principal.tenant_id is not None or principal.role != "org-admin":
        raise GatewayError(errors.FORBIDDEN, "only an org admin may read or set model prices")


def described(price: Price) -> dict[str, Any]:
    """A price as the admin API shows it."""
    return dataclasses.asdict(price)


def _rate(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None and name not in REQUIRED_RATES:
        return None
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not 0 <= value <= MAX_NANOUSD_PER_MTOK
    ):
        raise GatewayError(
            errors.INVALID_REQUEST,
            f"'{name}' must be an integer of nano-USD per million tokens, 0 to "
            f"{MAX_NANOUSD_PER_MTOK}",
        )
    return value


class PriceRoutes:
    """GET and PUT /v1/admin/prices."""

    def __init__(self, context: AdminContext) -> None:
        self.context = context

    def routes(self, guard: Guard) -> list[web.RouteDef]:
        """The price routes."""
        return [
            web.get(PRICES_PATH, guard(self.list_prices)),
            web.put(PRICES_PATH, guard(self.set_price)),
        ]

    async def list_prices(self, request: web.Request, principal: Principal) -> web.Response:
        """Every price this gateway knows, by provider, model and date (`?provider=`,
        `?model=` narrow the list)."""
        _org_admin(principal)
        provider = request.query.get("provider")
        model = request.query.get("model")
        prices = [
            described(p)
            for p in self.context.views.prices.prices()
            if (provider is None or p.provider == provider) and (model is None or p.model == model)
        ]
        return json_response({"object": "list", "data": prices})

    async def set_price(self, request: web.Request, principal: Principal) -> web.Response:
        """Publish a model's price from `effective_from` (epoch ms; absent: now) on."""
        _org_admin(principal)
        data = await requests.read_body(request)
        provider = requests.identifier(data, "provider")
        model = requests.identifier(data, "model")
        now = now_ms()
        effective_from = data.get("effective_from", now)
        if not isinstance(effective_from, int) or isinstance(effective_from, bool):
            raise GatewayError(errors.INVALID_REQUEST, "'effective_from' must be epoch ms")
        if effective_from < now:
            raise GatewayError(
                errors.INVALID_REQUEST,
                "'effective_from' is in the past: calls already recorded keep their price",
            )
        rates = {name: _rate(data, name) for name in RATES}
        record = PricePublished(
            **self.context.envelope(PricePublished, ORG_TENANT),
            provider=provider,
            model=model,
            effective_from=effective_from,
            published_by=principal.identity,
            **rates,  # type: ignore[arg-type]
        )
        price = published_price(record)
        await self.context.publish(record)
        views = self.context.views
        await self.context.wait_until(
            lambda: views.prices.price_at(provider, model, effective_from) == price
        )
        return json_response(described(price), 201)
