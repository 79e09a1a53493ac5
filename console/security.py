"""What every console request passes: the security headers, the session, the CSRF check
on changes, and the tenant a page may show.

- Content-Security-Policy: scripts and styles from this origin only (no inline code;
  htmx reads its configuration from a meta tag), no frames, forms post here only.
- Session: the cookie holds a random id; HttpOnly, SameSite=Strict, Secure over TLS (or
  when configured behind a TLS proxy). Without a live session a page redirects to the
  login (an htmx fragment gets 401 and `HX-Redirect`).
- CSRF: every request that is not GET or HEAD carries the session's token, as the form
  field `csrf` or the `X-CSRF-Token` header (htmx sends it from `hx-headers`); missing
  or wrong is 403 and nothing is done. The login form, before any session, carries a
  token that must equal its own cookie's (double submit).
- Tenant: a tenant admin's pages show its tenant only; naming another is 403 here, and
  the APIs, which are asked with the session's key, would refuse it anyway."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from console.sessions import LoginThrottle, Session, SessionStore, same_token

SESSION_COOKIE = "govledger_console"
LOGIN_COOKIE = "govledger_console_login"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
SESSION_KEY = web.AppKey("sessions", SessionStore)
SECURE_COOKIE_KEY = web.AppKey("secure_cookie", bool)
SESSION_OF_REQUEST = web.RequestKey("session", Session)
THROTTLE_KEY = web.AppKey("login_throttle", LoginThrottle)
# Routes that need no session.
PUBLIC_PREFIXES = ("/login", "/static/", "/healthz", "/favicon.ico")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SAFE_METHODS = frozenset({"GET", "HEAD"})
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RefusedError(web.HTTPForbidden):
    """A request the console refuses (403) with a reason shown to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(text=reason)
        self.reason_text = reason


SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The headers of every answer, errors included (a streamed one sets them itself,
    before its first byte: `SECURITY_HEADERS`)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
    if isinstance(response, web.HTTPException):
        raise response
    return response


def session_of(request: web.Request) -> Session:
    """The request's session (set by `require_session`)."""
    return request[SESSION_OF_REQUEST]


def secure_cookie(request: web.Request) -> bool:
    """Whether the cookies this answer sets are Secure."""
    return request.secure or request.app[SECURE_COOKIE_KEY]


def set_session_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Secure over TLS."""
    response.set_cookie(
        SESSION_COOKIE,
        value,
        httponly=True,
        samesite="Strict",
        secure=secure_cookie(request),
        path="/",
    )


@web.middleware
async def require_session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A live session on every route but the public ones, and the CSRF token on every
    change."""
    if request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    session = request.app[SESSION_KEY].get(request.cookies.get(SESSION_COOKIE, ""))
    if session is None:
        if request.headers.get("HX-Request"):
            raise web.HTTPUnauthorized(headers={"HX-Redirect": "/login"})
        raise web.HTTPSeeOther("/login")
    request[SESSION_OF_REQUEST] = session
    if request.method not in SAFE_METHODS:
        await check_csrf(request, session.csrf)
    return await handler(request)


async def check_csrf(request: web.Request, expected: str) -> None:
    """403 unless the request carries `expected` as its CSRF header or form field."""
    presented = request.headers.get(CSRF_HEADER, "")
    if not presented and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        presented = str((await request.post()).get(CSRF_FIELD, ""))
    if not presented or not expected or not same_token(presented, expected):
        raise RefusedError("the form's CSRF token is missing or wrong; reload the page")


def tenant_scope(request: web.Request, session: Session, named: str | None = None) -> str | None:
    """The tenant a page shows: a tenant admin's own, always (another named: 403); for an
    org admin the `tenant` parameter (or `named`: a form's), None (every tenant) when
    empty."""
    asked = (request.query.get("tenant", "") if named is None else named).strip()
    if asked and not TENANT_ID.fullmatch(asked):
        raise RefusedError("a tenant id is letters, digits, '.', '_' or '-'")
    if session.tenant is not None:
        if asked and asked != session.tenant:
            raise RefusedError(f"this key may not see tenant {asked!r}")
        return session.tenant
    return asked or None
