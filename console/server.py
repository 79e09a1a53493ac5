"""The console's application: the Jinja2 environment, the middlewares of
`console.security`, login and logout, every page's routes, and `govledger console`."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from typing import Any

import structlog
from aiohttp import web

from console.backend import ApiError, Backend
from console.pages import audit, costs, escalations, events, keys, overview, policies
from console.rendering import CONSOLE_KEY, HERE, Console, console_of
from console.security import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SECURE_COOKIE_KEY,
    SESSION_COOKIE,
    SESSION_KEY,
    SESSION_OF_REQUEST,
    THROTTLE_KEY,
    RefusedError,
    require_session,
    secure_cookie,
    security_headers,
    session_of,
    set_session_cookie,
)
from console.sessions import LoginThrottle, SessionStore, new_token, same_token
from schemas.auth import MalformedCredentialError, check_secret
from schemas.settings import ConsoleSettings

log = structlog.get_logger(__name__)

MAX_FORM_BYTES = 64 * 1024
LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


@web.middleware
async def errors_as_pages(request: web.Request, handler: Any) -> web.StreamResponse:
    """A refusal of the console or of an API, shown as a page (or a fragment); a key the
    APIs no longer accept (revoked, expired) ends the session."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except RefusedError as exc:
        return _error_page(request, 403, "forbidden", exc.reason_text)
    except web.HTTPNotFound as exc:
        return _error_page(request, 404, "not_found", exc.text or "no such page")
    except ApiError as exc:
        if exc.status == 401 and SESSION_OF_REQUEST in request:
            request.app[SESSION_KEY].drop(session_of(request).session_id)
            raise web.HTTPSeeOther("/login") from None
        return _error_page(request, exc.status, exc.code, exc.message)
    except web.HTTPException:
        raise  # redirects and aiohttp's own answers, as they are
    except Exception:  # a bug: logged, and answered as a page with the console's headers
        log.exception("console page failed", path=request.path)
        return _error_page(request, 500, "internal_error", "the console failed; see its log")


def _error_page(request: web.Request, status: int, code: str, message: str) -> web.Response:
    name = "_error.html" if request.headers.get("HX-Request") else "error.html"
    return console_of(request).render(request, name, status, code=code, message=message)


async def healthz(request: web.Request) -> web.Response:
    """Liveness (`up` waits for it)."""
    return web.Response(text="ok\n")


async def no_icon(request: web.Request) -> web.Response:
    """No icon (browsers ask for one on every origin)."""
    return web.Response(status=204)


async def login_form(request: web.Request) -> web.Response:
    """The login page; its form token is also its own cookie (double submit)."""
    return _login_page(request, "", 200)


def _login_page(request: web.Request, message: str, status: int) -> web.Response:
    # One token per browser until it logs in: a second tab (or the browser's own favicon
    # request, redirected here) must not invalidate the form already shown.
    token = request.cookies.get(LOGIN_COOKIE, "")
    if not LOGIN_TOKEN.fullmatch(token):
        token = new_token()
    response = console_of(request).render(
        request, "login.html", status, login_token=token, message=message
    )
    response.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="Strict", secure=secure_cookie(request)
    )
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """Check the key with the query API (`/v1/me`: tenant admins and above), then start a
    new session (a new id: whatever session cookie came with the request is dropped)."""
    form = await request.post()
    presented = str(form.get(CSRF_FIELD, ""))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not presented or not expected or not same_token(presented, expected):
        raise RefusedError("the login form's token is missing or wrong; reload the page")
    throttle, address = request.app[THROTTLE_KEY], request.remote or ""
    if not throttle.allowed(address):
        return _login_page(request, "Too many failed logins: wait a minute.", 429)
    key = str(form.get("key", "")).strip()
    try:
        check_secret(key)
        me = await console_of(request).backend.query(key, "/v1/me")
    except MalformedCredentialError:
        throttle.failed(address)
        return _login_page(request, "That is not a key.", 401)
    except ApiError as exc:
        if exc.status in (401, 403):
            throttle.failed(address)
            return _login_page(request, "This key is not an active admin key.", 401)
        return _login_page(request, f"The query API did not answer: {exc.message}", 502)
    sessions = request.app[SESSION_KEY]
    sessions.drop(request.cookies.get(SESSION_COOKIE, ""))
    session = sessions.create(key, str(me["identity"]), me["tenant"])
    log.info("console login", identity=session.identity, tenant=session.tenant)
    response = web.HTTPSeeOther("/")
    set_session_cookie(request, response, session.session_id)
    response.del_cookie(LOGIN_COOKIE)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session (CSRF-checked like any change)."""
    request.app[SESSION_KEY].drop(session_of(request).session_id)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE)
    raise response


def console_application(settings: ConsoleSettings, backend: Backend) -> web.Application:
    """The console's aiohttp application."""
    app = web.Application(
        client_max_size=MAX_FORM_BYTES,
        middlewares=[security_headers, errors_as_pages, require_session],
    )
    console = Console(settings, backend)
    app[CONSOLE_KEY] = console
    app[SESSION_KEY] = SessionStore(settings.console_session_ttl_s, settings.console_max_sessions)
    app[SECURE_COOKIE_KEY] = settings.console_secure_cookie
    app[THROTTLE_KEY] = LoginThrottle(settings.console_login_failures_per_minute)
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/favicon.ico", no_icon),
            web.get("/login", login_form),
            web.post("/login", login),
            web.post("/logout", logout),
            web.static("/static", HERE / "static", append_version=False),
        ]
    )
    for page in (overview, events, costs, keys, policies, escalations, audit):
        app.add_routes(page.routes())
    return app


async def console_main(settings: ConsoleSettings) -> None:
    """Serve the console until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    backend = Backend(settings.gateway_url, settings.query_url, settings.console_api_timeout_s)
    await backend.start()
    runner = web.AppRunner(console_application(settings, backend), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.console_host, settings.console_port).start()
        log.info("console ready", url=settings.console_url)
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
        await backend.close()
