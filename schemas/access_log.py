"""One structured access line per HTTP request (event `http request`), the same on every
govledger HTTP server: the admin API and the gateway's other routes, the query API.

A line holds the method, the matched route's pattern (`/v1/admin/keys/{key_id}`: never the
raw path or query string, which a caller controls and which may carry SQL or ids), the
status, the latency and the tenant of the authenticated caller (`None`: every tenant, as
the admin token and org admins; absent: not authenticated). Never a header, a body or a
credential. A gateway call has its own, richer line (`gateway call`,
gateway/pipeline.py): its handler marks the request so this middleware does not log it
twice. Health and scrape routes log at debug: a probe every few seconds is not news.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection

import structlog
from aiohttp import web

log = structlog.get_logger("govledger.access")

# Set by a handler that logs its request itself (a gateway call's access line).
ACCESS_LOGGED = web.RequestKey("govledger_access_logged", bool)
# The authenticated caller's tenant (None: every tenant), set by the routes' guards.
CALLER_TENANT = web.RequestKey("govledger_caller_tenant", object)
QUIET_ROUTES = frozenset({"/healthz", "/ping", "/metrics"})
UNMATCHED = "(no route)"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def note_caller(request: web.Request, tenant_id: str | None) -> None:
    """Record the authenticated caller's tenant for the request's access line."""
    request[CALLER_TENANT] = tenant_id


def route_of(request: web.Request) -> str:
    """The pattern of the route the request matched, else UNMATCHED."""
    if request.match_info.http_exception is not None:
        return UNMATCHED
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def access_lines(
    quiet_routes: Collection[str] = QUIET_ROUTES,
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The middleware; install it first (outermost) so the status is the one answered."""

    @web.middleware
    async def log_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            if not request.get(ACCESS_LOGGED, False):
                route = route_of(request)
                emit = log.debug if route in quiet_routes else log.info
                fields: dict[str, object] = {}
                if CALLER_TENANT in request:
                    fields["tenant"] = request[CALLER_TENANT]
                emit(
                    "http request",
                    method=request.method,
                    route=route,
                    status=status,
                    latency_ms=round((time.perf_counter() - started) * 1000, 3),
                    **fields,
                )

    return log_access
