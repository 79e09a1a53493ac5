"""What every admin handler works with: the gateway's views, the control publisher, the
budget, the default tenant and the escalation configuration (passed in by whoever builds
the admin API: it is the stream processors' configuration, so the listing routes and
times escalations as the escalations processor does)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from gateway.admin.principals import Principal
from gateway.budget import Budget
from gateway.views import LocalViews
from schemas.ids import now_ms, uuid7
from schemas.publisher import Publisher
from schemas.records import Event
from schemas.topics import CONTROL
from streams.escalations.logic import EscalationConfig

E = TypeVar("E", bound=Event)
VIEW_WAIT_S = 5.0


@dataclass(slots=True)
class AdminContext:
    """The admin API's state and its publishing, shared by the resource modules."""

    views: LocalViews
    control: Publisher
    budget: Budget
    default_tenant: str
    escalation_config: EscalationConfig

    def envelope(self, record_type: type[Event], tenant_id: str) -> dict[str, Any]:
        """A fresh envelope for a control record (the publisher seals it)."""
        return {
            "event_id": uuid7(),
            "event_type": record_type.event_type_name,
            "occurred_at": now_ms(),
            "tenant_id": tenant_id,
            "producer_id": "",
            "seq": 0,
        }

    async def publish(self, record: E) -> E:
        """Publish on the control topic, acknowledged by the broker; the sealed record."""
        return await self.control.publish_and_wait(CONTROL.name, record.tenant_id, record)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait (at most `VIEW_WAIT_S`) until this gateway's views show a change."""
        deadline = asyncio.get_running_loop().time() + VIEW_WAIT_S
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.01)


# A resource's handler: the request and who made it, checked by the guard first.
Handler = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]
# The guard wraps a handler: authenticates, then maps a GatewayError to its answer.
Guard = Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]
