"""Server-side console sessions. The browser holds only a random id (a cookie); the admin
key it logged in with stays here, in memory, until logout, expiry or eviction. The store
is bounded: past `max_sessions` the oldest login is dropped (its user logs in again)."""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

# 32 random bytes, URL-safe: the session id and the CSRF token.
TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh unguessable token."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def same_token(presented: str, expected: str) -> bool:
    """Constant-time comparison of a presented token with the expected one."""
    return hmac.compare_digest(presented.encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class Session:
    """One login: who (as the query API named the key), which tenant it sees (None: every
    tenant, an org admin), the key itself, and the CSRF token its forms carry."""

    session_id: str
    key: str
    identity: str
    tenant: str | None
    csrf: str
    expires_s: float

    @property
    def org_level(self) -> bool:
        """An org admin (or the admin token): sees every tenant, may switch."""
        return self.tenant is None

    def sees(self, tenant: str) -> bool:
        """Whether this session may show or change that tenant."""
        return self.tenant is None or self.tenant == tenant


class SessionStore:
    """Sessions by id, oldest first; expired ones are dropped when met or when a new one
    is made."""

    def __init__(
        self, ttl_s: float, max_sessions: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, key: str, identity: str, tenant: str | None) -> Session:
        """A new session with a new id (never one the browser presented: no fixation)."""
        now = self._clock()
        for expired in [s for s in self._sessions.values() if s.expires_s <= now]:
            del self._sessions[expired.session_id]
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        session = Session(new_token(), key, identity, tenant, new_token(), now + self.ttl_s)
        self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session of that id, or None (unknown or expired; an expired one goes)."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_s <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def drop(self, session_id: str) -> None:
        """Log a session out (nothing if it is unknown)."""
        self._sessions.pop(session_id, None)


# Addresses whose failed logins are counted at once; past it the longest-quiet is forgotten.
MAX_THROTTLED_ADDRESSES = 10_000
THROTTLE_WINDOW_S = 60.0


class LoginThrottle:
    """Failed logins per address over the last minute: past `limit`, the address is told
    to wait (every key is 256 random bits; this keeps guessing and log floods cheap)."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.get(address)
        if failures is None:
            return deque()
        horizon = self._clock() - THROTTLE_WINDOW_S
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures

    def allowed(self, address: str) -> bool:
        """Whether a login from this address is tried at all."""
        return len(self._recent(address)) < self.limit

    def failed(self, address: str) -> None:
        """Count a failed login."""
        failures = self._recent(address)
        failures.append(self._clock())
        self._failures[address] = failures
        self._failures.move_to_end(address)
        while len(self._failures) > MAX_THROTTLED_ADDRESSES:
            self._failures.popitem(last=False)
