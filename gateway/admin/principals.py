"""Who is calling an admin surface (the admin API, the query API): the bootstrap token,
or an active key of role tenant-admin or above. The sink process imports this module
for the query API's readers, so it imports nothing of the admin API's handlers."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway import errors
from gateway.errors import GatewayError
from schemas.auth import (
    MalformedCredentialError,
    authorization_header,
    bearer_token,
    check_secret,
)
from schemas.records import Role

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy

    from gateway.views import LocalViews


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling the admin API: an identity, a role and, for tenant admins, a tenant."""

    identity: str
    role: Role
    tenant_id: str | None  # None: every tenant

    def sees(self, tenant_id: str) -> bool:
        """Whether this principal may read and change the tenant's records."""
        return self.tenant_id is None or self.tenant_id == tenant_id


ROOT = Principal("admin", "org-admin", None)


def principal_for(presented: str, admin_token: str, views: LocalViews, at_ms: int) -> Principal:
    """Who presents this secret to an admin surface (the admin API, the query API): the
    bootstrap token, or an active key of role tenant-admin or above. GatewayError with
    401 for no or an unknown, revoked or expired secret, 403 for a lesser role."""
    if not presented:
        raise GatewayError(errors.MISSING_API_KEY, "admin key required")
    try:  # before any comparison or hash: those fail on non-ASCII text
        check_secret(presented)
    except MalformedCredentialError as exc:
        raise GatewayError(errors.MALFORMED_API_KEY, str(exc)) from None
    if hmac.compare_digest(presented, admin_token):
        return ROOT
    key = views.key_for_secret(presented)
    if key is None or key.status(at_ms) != "active":
        raise GatewayError(errors.INVALID_API_KEY, "admin key required")
    if not key.has_role("tenant-admin"):
        raise GatewayError(errors.FORBIDDEN, f"key role {key.role!r} may not use the admin API")
    tenant = None if key.role == "org-admin" else key.tenant_id
    return Principal(f"key:{key.key_id}", key.role, tenant)


def principal_of_headers(
    headers: CIMultiDictProxy[str], admin_token: str, views: LocalViews, at_ms: int
) -> Principal:
    """The principal of a request's Authorization header (a bearer secret)."""
    try:
        presented = bearer_token(authorization_header(headers))
    except MalformedCredentialError as exc:
        raise GatewayError(errors.MALFORMED_API_KEY, str(exc)) from None
    return principal_for(presented, admin_token, views, at_ms)
