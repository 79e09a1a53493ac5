"""Policy packs and the org baseline: publish a tenant's pack as its next version (with
the diff from the last one), list packs, read and publish the baseline, and the two
checks the key and pack routes make against the baseline. The rules themselves are in
gateway/policy/baseline.py.

Anyone who may use the admin API reads the baseline (a tenant admin must know the floor
its packs are held to); only org admins (the admin token, org-admin keys) publish it."""

from __future__ import annotations

import asyncio
import difflib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.admin import requests
from gateway.admin.context import AdminContext, Guard
from gateway.admin.principals import Principal
from gateway.errors import GatewayError
from gateway.policy.baseline import (
    ORG_TENANT,
    OrgViolation,
    grant_violation,
    lint_baseline,
    pack_violations,
    parse_baseline,
)
from gateway.policy.pack import (
    PACK_NAME,
    PackError,
    parse_pack,
    template_names,
    template_source,
)
from gateway.views import LocalViews
from schemas.http_errors import json_response
from schemas.records import OrgBaselinePublished, PolicyPackPublished, Role

BASELINE_PATH = "/v1/admin/policies/baseline"
TEMPLATES_PATH = "/v1/admin/policies/templates"
# Packs this process holds a publishing lock for at once (idle ones are dropped past it).
MAX_PACK_LOCKS = 10_000


def lint_refusal(problems: Sequence[Any]) -> GatewayError:
    """400 policy_invalid listing each lint problem with its line."""
    return GatewayError(
        errors.POLICY_INVALID,
        "; ".join(str(p) for p in problems),
        details={"lines": [{"line": p.line, "message": p.message} for p in problems]},
    )


def violation_refusal(violations: Sequence[OrgViolation]) -> GatewayError:
    """403 org_policy_violation naming every org rule broken, with its line."""
    return GatewayError(
        errors.ORG_POLICY_VIOLATION,
        "; ".join(str(v) for v in violations),
        details={
            "violations": [{"rule": v.rule, "line": v.line, "message": str(v)} for v in violations]
        },
    )


def check_pack(views: LocalViews, source: str, name: str | None = None) -> None:
    """Refuse a tenant pack that breaks the org baseline (`name`: the pack's, when its
    source has none)."""
    violations = pack_violations(views.baseline.baseline, source, name)
    if violations:
        raise violation_refusal(violations)


def check_grant(views: LocalViews, principal: Principal, role: Role) -> None:
    """Refuse a tenant admin a key above the baseline's role ceiling (org admins are not
    held to it: they set it)."""
    if principal.tenant_id is None:
        return
    violation = grant_violation(views.baseline.baseline, role)
    if violation is not None:
        raise GatewayError(errors.ORG_POLICY_VIOLATION, str(violation))


def unified_diff(before: str, after: str, fromfile: str, tofile: str) -> str:
    """The diff between two versions of a pack or baseline, as published with the new one."""
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=fromfile,
            tofile=tofile,
        )
    )


@dataclass(frozen=True, slots=True)
class Published:
    """What publishing a pack did: a new version (`created`) or nothing (same content)."""

    tenant: str
    name: str
    version: int
    diff: str
    created: bool

    def body(self) -> dict[str, Any]:
        """The admin API's answer."""
        return {
            "pack": self.name,
            "tenant": self.tenant,
            "version": self.version,
            "diff": self.diff,
        }


class PackPublisher:
    """Publishes a tenant's pack as its next version: one owner for the push route, the
    configurations route (`PUT`, with `If-Match`) and reverts.

    Versions are decided by the control topic, not by this process: two gateways may both
    publish version N+1 of a pack, and every view keeps the first in topic order (one
    partition per tenant). So a publisher waits to see its version land and answers 409
    when another publisher's record took it; within this process a lock per pack keeps
    two requests from racing at all."""

    def __init__(self, context: AdminContext) -> None:
        self.context = context
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _lock(self, tenant: str, name: str) -> asyncio.Lock:
        if len(self._locks) > MAX_PACK_LOCKS:  # idle locks only cost memory: start over
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        return self._locks.setdefault((tenant, name), asyncio.Lock())

    async def publish(
        self,
        principal: Principal,
        tenant: str,
        source: str,
        default_name: str | None,
        *,
        required_name: str | None = None,
        expected_version: int | None = None,
    ) -> Published:
        """Lint `source`, hold it to the baseline and publish it unless unchanged.
        `default_name`: the name of a pack that has none; `required_name`: the only name
        it may have (a URL's); `expected_version` (If-Match): the version the caller
        last saw (0: none yet), 412 when the pack is at another."""
        views = self.context.views
        try:
            name = parse_pack(source, default_name=default_name).name
        except PackError as exc:
            raise lint_refusal(exc.errors) from None
        if required_name is not None and name != required_name:
            raise GatewayError(
                errors.INVALID_REQUEST, f"the pack names itself {name!r}, not {required_name!r}"
            )
        check_pack(views, source, name)
        async with self._lock(tenant, name):
            known = views.packs.get((tenant, name))
            current = known.version if known is not None else 0
            if expected_version is not None and expected_version != current:
                raise GatewayError(
                    errors.PRECONDITION_FAILED,
                    f"pack {name!r} is at version {current}, not {expected_version}",
                    details={"version": current},
                )
            if known is not None and known.source_yaml == source:
                return Published(tenant, name, current, "", created=False)
            version = current + 1
            diff = unified_diff(
                known.source_yaml if known is not None else "",
                source,
                fromfile=f"{name} v{current}" if known else "/dev/null",
                tofile=f"{name} v{version}",
            )
            sha256 = hashlib.sha256(source.encode()).hexdigest()
            record = PolicyPackPublished(
                **self.context.envelope(PolicyPackPublished, tenant),
                pack_name=name,
                version=version,
                source_yaml=source,
                source_sha256=sha256,
                diff=diff,
                published_by=principal.identity,
            )
            await self.context.publish(record)
            await self.context.wait_until(
                lambda: version in views.pack_versions.get((tenant, name), {})
            )
        landed = views.pack_versions[(tenant, name)][version]
        if landed.source_sha256 != sha256 or landed.published_by != principal.identity:
            raise GatewayError(
                errors.CONFLICT,
                f"another publisher took version {version} of {name!r}; read it and retry",
            )
        return Published(tenant, name, version, diff, created=True)


class PolicyRoutes:
    """Tenant packs and the org baseline."""

    def __init__(self, context: AdminContext) -> None:
        self.context = context
        self.publisher = PackPublisher(context)

    def routes(self, guard: Guard) -> list[web.RouteDef]:
        """The pack and baseline routes."""
        return [
            web.post("/v1/admin/policies", guard(self.push_policy)),
            web.get("/v1/admin/policies", guard(self.list_policies)),
            web.get(BASELINE_PATH, guard(self.show_baseline)),
            web.get(TEMPLATES_PATH, guard(self.list_templates)),
            web.put(BASELINE_PATH, guard(self.publish_baseline)),
        ]

    async def push_policy(self, request: web.Request, principal: Principal) -> web.Response:
        """Lint a pack and publish it as the next version, with the diff from the last one.
        An unchanged pack publishes nothing."""
        data = await requests.read_body(request)
        tenant = requests.acted_on_tenant(principal, data, self.context.default_tenant)
        source = data.get("source_yaml")
        if not isinstance(source, str):
            raise GatewayError(errors.INVALID_REQUEST, "'source_yaml' must be the pack's text")
        # The name for a pack that has none (the seed's shape): the CLI sends its file's.
        file_name = data.get("name")
        if file_name is not None and (
            not isinstance(file_name, str) or not PACK_NAME.match(file_name)
        ):
            raise GatewayError(
                errors.INVALID_REQUEST,
                "'name' must be lower-case letters, digits, '.', '_' or '-' (at most 64)",
            )
        outcome = await self.publisher.publish(principal, tenant, source, file_name)
        return json_response(outcome.body(), status=201 if outcome.created else 200)

    async def list_templates(self, request: web.Request, principal: Principal) -> web.Response:
        """The seed templates a pack may start from (what `govledger policy templates`
        prints), with their text; the web console's editor offers them."""
        templates = [{"name": n, "source_yaml": template_source(n)} for n in template_names()]
        return json_response({"data": templates})

    async def list_policies(self, request: web.Request, principal: Principal) -> web.Response:
        """Published packs with their newest version."""
        packs = [
            {
                "tenant": tenant,
                "pack": name,
                "version": published.version,
                "description": published.pack.description,
                "steps": [step.name for step in published.pack.steps],
            }
            for (tenant, name), published in sorted(self.context.views.packs.items())
            if principal.sees(tenant)
        ]
        return json_response({"data": packs})

    def _described_baseline(self) -> dict[str, Any]:
        current = self.context.views.baseline
        return {
            "version": current.version,
            "default": current.version == 0,
            "published_by": current.published_by,
            "source_yaml": current.source_yaml,
            **current.baseline.summary(),
        }

    async def show_baseline(self, request: web.Request, principal: Principal) -> web.Response:
        """The baseline in force (version 0: the built-in default)."""
        return json_response(self._described_baseline())

    async def publish_baseline(self, request: web.Request, principal: Principal) -> web.Response:
        """Lint and publish a baseline as the next version (org admins only). Packs already
        published that say less than it are listed: the baseline holds over them anyway."""
        if principal.tenant_id is not None or principal.role != "org-admin":
            raise GatewayError(errors.FORBIDDEN, "only an org admin may publish the org baseline")
        views = self.context.views
        data = await requests.read_body(request)
        source = data.get("source_yaml")
        if not isinstance(source, str):
            raise GatewayError(errors.INVALID_REQUEST, "'source_yaml' must be the baseline's text")
        problems = lint_baseline(source)
        if problems:
            raise lint_refusal(problems)
        known = views.baseline
        if known.version > 0 and known.source_yaml == source:
            return json_response(
                {**self._described_baseline(), "diff": "", "packs_below_baseline": []}
            )
        version = known.version + 1
        diff = unified_diff(
            known.source_yaml,
            source,
            fromfile=f"baseline v{known.version}",
            tofile=f"baseline v{version}",
        )
        record = OrgBaselinePublished(
            **self.context.envelope(OrgBaselinePublished, ORG_TENANT),
            version=version,
            source_yaml=source,
            source_sha256=hashlib.sha256(source.encode()).hexdigest(),
            diff=diff,
            published_by=principal.identity,
        )
        await self.context.publish(record)
        await self.context.wait_until(lambda: views.baseline.version >= version)
        baseline = parse_baseline(source)
        below = [
            {"tenant": tenant, "pack": name, "rule": v.rule, "message": str(v)}
            for (tenant, name), published in sorted(views.packs.items())
            for v in pack_violations(baseline, published.source_yaml, name)
        ]
        return json_response(
            {**self._described_baseline(), "diff": diff, "packs_below_baseline": below}, 201
        )
