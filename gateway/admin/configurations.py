"""Policy packs as configurations a CI pipeline applies, and the versions behind them:

- `PUT /v1/configurations/{name}`: apply a pack idempotently: the same content again
  answers 200 and publishes nothing; a change answers 201 with the new version and its
  diff. `If-Match: "N"` makes it conditional on the version the pipeline last saw (412
  otherwise; `"0"`: the pack must not exist yet), so two pipelines cannot overwrite each
  other unknowingly. The body is the pack's YAML (or `{"source_yaml": …}` as JSON).
- `GET /v1/configurations/{name}`: the version in force, its source, `ETag: "N"`.
- `GET /v1/admin/policies/{name}/versions`: the versions this gateway keeps.
- `POST /v1/admin/policies/{name}/revert` `{"to_version": N}`: publish version N's
  content again as the next version (audited like any push, with its diff).

`?tenant=` (or `"tenant"` in a JSON body) names the tenant for org admins, as elsewhere."""

from __future__ import annotations

import re

import orjson
from aiohttp import web

from gateway import errors
from gateway.admin import requests
from gateway.admin.context import AdminContext, Guard
from gateway.admin.policies import PackPublisher
from gateway.admin.principals import Principal
from gateway.errors import GatewayError
from gateway.policy.pack import PACK_NAME
from schemas.http_errors import json_response

CONFIGURATION_PATH = "/v1/configurations/{name}"
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/plain"})
# If-Match as RFC 9110 writes an entity tag: "3" (or W/"3"); a bare 3 is read too.
_ENTITY_TAG = re.compile(r'^(?:W/)?"?(\d{1,9})"?$')


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not PACK_NAME.match(name):
        raise GatewayError(
            errors.INVALID_REQUEST,
            "a configuration's name is lower-case letters, digits, '.', '_' or '-' (at most 64)",
        )
    return name


def _expected_version(request: web.Request) -> int | None:
    header = request.headers.get("If-Match")
    if header is None:
        return None
    match = _ENTITY_TAG.match(header.strip())
    if match is None:
        raise GatewayError(
            errors.INVALID_REQUEST, 'If-Match must be a version as an entity tag, such as "3"'
        )
    return int(match.group(1))


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


class ConfigurationRoutes:
    """Configurations (packs applied by name) and pack versions."""

    def __init__(self, context: AdminContext, publisher: PackPublisher) -> None:
        self.context = context
        self.publisher = publisher

    def routes(self, guard: Guard) -> list[web.RouteDef]:
        """The configuration and version routes."""
        return [
            web.put(CONFIGURATION_PATH, guard(self.apply)),
            web.get(CONFIGURATION_PATH, guard(self.show)),
            web.get("/v1/admin/policies/{name}/versions", guard(self.versions)),
            web.post("/v1/admin/policies/{name}/revert", guard(self.revert)),
        ]

    def _tenant(self, principal: Principal, request: web.Request) -> str:
        named = {"tenant": request.query["tenant"]} if "tenant" in request.query else {}
        return requests.acted_on_tenant(principal, named, self.context.default_tenant)

    async def apply(self, request: web.Request, principal: Principal) -> web.Response:
        """Apply a pack by name: 200 unchanged, 201 a new version, 412 a stale If-Match."""
        name = _name(request)
        expected = _expected_version(request)
        body = await request.content.read(requests.MAX_ADMIN_BODY_BYTES + 1)
        if len(body) > requests.MAX_ADMIN_BODY_BYTES:
            raise GatewayError(errors.BODY_TOO_LARGE, "configuration body too large")
        tenant = self._tenant(principal, request)
        if request.content_type == "application/json":
            try:
                data = orjson.loads(body or b"{}")
            except orjson.JSONDecodeError as exc:
                raise GatewayError(errors.INVALID_JSON, f"body is not valid JSON: {exc}") from exc
            source = data.get("source_yaml") if isinstance(data, dict) else None
            if isinstance(data, dict) and "tenant" in data:
                tenant = requests.acted_on_tenant(principal, data, self.context.default_tenant)
        elif request.content_type in YAML_TYPES or not body:
            try:
                source = body.decode()
            except UnicodeDecodeError:
                source = None
        else:
            raise GatewayError(
                errors.UNSUPPORTED_MEDIA_TYPE,
                "send the pack as application/yaml (or JSON with 'source_yaml')",
            )
        if not isinstance(source, str) or not source.strip():
            raise GatewayError(errors.INVALID_REQUEST, "the body must be the pack's YAML text")
        outcome = await self.publisher.publish(
            principal, tenant, source, name, required_name=name, expected_version=expected
        )
        return json_response(
            outcome.body(), status=201 if outcome.created else 200, headers=_etag(outcome.version)
        )

    async def show(self, request: web.Request, principal: Principal) -> web.Response:
        """The version in force and its source."""
        name, tenant = _name(request), self._tenant(principal, request)
        published = self.context.views.packs.get((tenant, name))
        if published is None:
            raise GatewayError(errors.NOT_FOUND, f"no configuration {name!r} in {tenant!r}")
        answer = {
            "pack": name,
            "tenant": tenant,
            "version": published.version,
            "source_yaml": published.source_yaml,
        }
        return json_response(answer, headers=_etag(published.version))

    async def versions(self, request: web.Request, principal: Principal) -> web.Response:
        """The versions kept, newest first (no sources: `revert` or the store has them)."""
        name, tenant = _name(request), self._tenant(principal, request)
        kept = self.context.views.pack_versions.get((tenant, name), {})
        data = [
            {
                "version": v.version,
                "published_by": v.published_by,
                "published_at_ms": v.published_at_ms,
                "source_sha256": v.source_sha256,
            }
            for v in sorted(kept.values(), key=lambda v: v.version, reverse=True)
        ]
        return json_response({"pack": name, "tenant": tenant, "data": data})

    async def revert(self, request: web.Request, principal: Principal) -> web.Response:
        """Publish an earlier version's content as the next version."""
        name = _name(request)
        data = await requests.read_body(request)
        tenant = requests.acted_on_tenant(principal, data, self.context.default_tenant)
        to_version = data.get("to_version")
        if not isinstance(to_version, int) or isinstance(to_version, bool) or to_version < 1:
            raise GatewayError(errors.INVALID_REQUEST, "'to_version' must be a version number")
        kept = self.context.views.pack_versions.get((tenant, name), {})
        if to_version not in kept:
            raise GatewayError(
                errors.NOT_FOUND, f"{name!r} has no version {to_version} kept in {tenant!r}"
            )
        outcome = await self.publisher.publish(
            principal, tenant, kept[to_version].source_yaml, name, required_name=name
        )
        answer = {**outcome.body(), "reverted_to": to_version}
        return json_response(
            answer, status=201 if outcome.created else 200, headers=_etag(outcome.version)
        )
