"""What the pages share: the time window, the tenant filter of their SQL, and calls to the
APIs with the session's key."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from console.backend import Backend
from console.security import RefusedError, session_of, tenant_scope
from console.sessions import Session

# The windows a page offers: name -> seconds.
WINDOWS = {"15m": 900, "1h": 3_600, "6h": 21_600, "24h": 86_400, "7d": 604_800, "30d": 2_592_000}
DEFAULT_WINDOW = "1h"
# Every SQL of the pages narrows by this (empty: every tenant the key sees). For a tenant
# admin the engine also filters every table to its tenant, whatever the text says.
TENANT_FILTER = "({tenant:String} = '' OR tenant_id = {tenant:String})"
IDENTIFIER_CHARS = 64
# Longest form field the console passes on (the APIs have their own, tighter limits).
FIELD_CHARS = 128


def now_ms() -> int:
    """Wall-clock now in milliseconds (the window's end)."""
    return time.time_ns() // 1_000_000


def window_of(request: web.Request) -> tuple[str, int]:
    """The window the page shows: its name and seconds."""
    name = request.query.get("window", DEFAULT_WINDOW)
    if name not in WINDOWS:
        raise RefusedError(f"the window is one of {', '.join(WINDOWS)}")
    return name, WINDOWS[name]


def text_filter(request: web.Request, name: str) -> str:
    """A short free-text filter value (bound as a parameter, never spliced)."""
    value = request.query.get(name, "").strip()
    if len(value) > IDENTIFIER_CHARS or not value.isprintable():
        raise RefusedError(f"'{name}' must be printable and at most {IDENTIFIER_CHARS} characters")
    return value


def form_fields(form: Any, *names: str) -> dict[str, str]:
    """The named fields of a form, trimmed; empty ones left out."""
    fields = {}
    for name in names:
        value = str(form.get(name, "")).strip()
        if len(value) > FIELD_CHARS:
            raise RefusedError(f"'{name}' is too long")
        if value:
            fields[name] = value
    return fields


class PageContext:
    """A request's session, backend and tenant, ready for a page to query with."""

    def __init__(self, request: web.Request, backend: Backend, tenant: str | None = None) -> None:
        self.request = request
        self.session: Session = session_of(request)
        self.backend = backend
        self.tenant = tenant_scope(request, self.session, tenant)

    @property
    def tenant_param(self) -> str:
        """The tenant as a SQL parameter: empty for every tenant."""
        return self.tenant or ""

    async def sql(self, text: str, **parameters: Any) -> list[dict[str, Any]]:
        """Rows of a read-only query with the session's key, narrowed to the tenant."""
        bound = {"tenant": self.tenant_param}
        bound.update({name: str(value) for name, value in parameters.items()})
        return await self.backend.sql(self.session.key, text, bound)

    async def admin(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        """A call to the admin API with the session's key."""
        return await self.backend.admin(self.session.key, method, path, body, params or None)

    async def report(self, path: str, **params: str) -> Any:
        """A report of the query API with the session's key (and the tenant, if any)."""
        if self.tenant:
            params = {"tenant": self.tenant, **params}
        return await self.backend.query(self.session.key, path, params)
