"""The admin API's side of the org baseline: read and publish it, and the two checks the
key and pack routes make against it. The rules themselves are in gateway/policy/baseline.py.

Anyone who may use the admin API reads the baseline (a tenant admin must know the floor
its packs are held to); only org admins (the admin token, org-admin keys) publish it."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from gateway import errors
from gateway.errors import GatewayError
from gateway.policy.baseline import (
    ORG_TENANT,
    OrgViolation,
    grant_violation,
    lint_baseline,
    pack_violations,
    parse_baseline,
)
from gateway.views import LocalViews
from schemas.records import OrgBaselinePublished, Role

if TYPE_CHECKING:
    from gateway.admin import AdminApi, Principal

BASELINE_PATH = "/v1/admin/policies/baseline"


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def violation_response(violations: Sequence[OrgViolation]) -> web.Response:
    """403 org_policy_violation naming every org rule broken, with its line."""
    kind = errors.ORG_POLICY_VIOLATION
    return _json(
        {
            "error": {
                "message": "; ".join(str(v) for v in violations),
                "type": kind.type,
                "code": kind.code,
                "param": None,
                "violations": [
                    {"rule": v.rule, "line": v.line, "message": str(v)} for v in violations
                ],
            }
        },
        status=kind.status,
    )


def check_pack(views: LocalViews, source: str) -> web.Response | None:
    """The refusal of a tenant pack that breaks the org baseline, or None."""
    violations = pack_violations(views.baseline.baseline, source)
    return violation_response(violations) if violations else None


def check_grant(views: LocalViews, principal: Principal, role: Role) -> None:
    """Refuse a tenant admin a key above the baseline's role ceiling (org admins are not
    held to it: they set it)."""
    if principal.tenant_id is None:
        return
    violation = grant_violation(views.baseline.baseline, role)
    if violation is not None:
        raise GatewayError(errors.ORG_POLICY_VIOLATION, str(violation))


class BaselineRoutes:
    """GET and PUT of the org baseline, on the admin API's guard, body and publisher."""

    def __init__(self, admin: AdminApi) -> None:
        self.admin = admin

    def routes(self) -> list[web.RouteDef]:
        """The baseline's routes."""
        guard = self.admin._guard
        return [
            web.get(BASELINE_PATH, guard(self.show)),
            web.put(BASELINE_PATH, guard(self.publish)),
        ]

    def _described(self) -> dict[str, Any]:
        current = self.admin.views.baseline
        return {
            "version": current.version,
            "default": current.version == 0,
            "published_by": current.published_by,
            "source_yaml": current.source_yaml,
            **current.baseline.summary(),
        }

    async def show(self, request: web.Request, principal: Principal) -> web.Response:
        """The baseline in force (version 0: the built-in default)."""
        return _json(self._described())

    async def publish(self, request: web.Request, principal: Principal) -> web.Response:
        """Lint and publish a baseline as the next version (org admins only). Packs already
        published that say less than it are listed: the baseline holds over them anyway."""
        if principal.tenant_id is not None or principal.role != "org-admin":
            raise GatewayError(errors.FORBIDDEN, "only an org admin may publish the org baseline")
        data = await self.admin._body(request)
        source = data.get("source_yaml")
        if not isinstance(source, str):
            raise GatewayError(errors.INVALID_REQUEST, "'source_yaml' must be the baseline's text")
        problems = lint_baseline(source)
        if problems:
            return _json(
                {
                    "error": {
                        "message": "; ".join(str(p) for p in problems),
                        "type": errors.INVALID_REQUEST.type,
                        "code": "policy_invalid",
                        "param": None,
                        "lines": [{"line": p.line, "message": p.message} for p in problems],
                    }
                },
                status=400,
            )
        known = self.admin.views.baseline
        if known.version > 0 and known.source_yaml == source:
            return _json({**self._described(), "diff": "", "packs_below_baseline": []})
        version = known.version + 1
        diff = "".join(
            difflib.unified_diff(
                known.source_yaml.splitlines(keepends=True),
                source.splitlines(keepends=True),
                fromfile=f"baseline v{known.version}",
                tofile=f"baseline v{version}",
            )
        )
        record = OrgBaselinePublished(
            **self.admin._envelope(OrgBaselinePublished, ORG_TENANT),
            version=version,
            source_yaml=source,
            source_sha256=hashlib.sha256(source.encode()).hexdigest(),
            diff=diff,
            published_by=principal.identity,
        )
        await self.admin._publish(record)
        await self.admin._wait_until(lambda: self.admin.views.baseline.version >= version)
        baseline = parse_baseline(source)
        below = [
            {"tenant": tenant, "pack": name, "rule": v.rule, "message": str(v)}
            for (tenant, name), published in sorted(self.admin.views.packs.items())
            for v in pack_violations(baseline, published.source_yaml)
        ]
        return _json({**self._described(), "diff": diff, "packs_below_baseline": below}, 201)
