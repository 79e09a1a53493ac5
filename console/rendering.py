"""The console's state every handler reaches (`console_of`): the APIs, the Jinja2 templates
(autoescaped, strict) and the settings; and how a page is rendered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from console import formats
from console.backend import Backend
from console.security import SESSION_OF_REQUEST
from console.sessions import Session
from schemas.settings import ConsoleSettings

HERE = Path(__file__).parent
CONSOLE_KEY: web.AppKey[Console] = web.AppKey("console")
# The pages in the navigation, in order: (path, label).
NAV = (
    ("/", "Overview"),
    ("/events", "Events"),
    ("/costs", "Cost Center"),
    ("/keys", "Access keys"),
    ("/policies", "Policies"),
    ("/escalations", "Escalations"),
    ("/audit", "Audit"),
)


class Console:
    """What every page handler needs: the APIs, the templates, the settings."""

    def __init__(self, settings: ConsoleSettings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters.update(formats.FILTERS)

    def render(
        self, request: web.Request, template: str, status: int = 200, /, **context: Any
    ) -> web.Response:
        """A page (or an htmx fragment) rendered with the session's context."""
        session: Session | None = request.get(SESSION_OF_REQUEST)
        context.setdefault("tenant", None)
        text = self.templates.get_template(template).render(
            session=session,
            csrf=session.csrf if session else "",
            nav=NAV,
            path=request.path,
            refresh_s=self.settings.console_refresh_s,
            **context,
        )
        return web.Response(text=text, status=status, content_type="text/html")


def console_of(request: web.Request) -> Console:
    """The console a request is served by."""
    console: Console = request.app[CONSOLE_KEY]
    return console
