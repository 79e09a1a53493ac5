"""Who reads through the query API. The sink does not judge keys itself: the process
that assembles it passes a function that resolves a presented secret the way the
gateway's admin API does (`gateway.admin.principals.principal_for` over the keys folded
from the control topic), so there is one key rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reader:
    """An authenticated reader: every tenant (tenant_id None) or one tenant."""

    identity: str
    tenant_id: str | None

    def sees(self, tenant_id: str) -> bool:
        """Whether this reader may read the tenant's rows."""
        return self.tenant_id is None or self.tenant_id == tenant_id


class AccessDeniedError(Exception):
    """The presented secret does not open this door: HTTP status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# Resolves a presented secret to a Reader, or raises AccessDeniedError.
Authenticate = Callable[[str], Reader]
