"""The export routes of the query API (`sinks/exports/` runs the jobs):

- `POST /v1/exports` {type, format, since, description, tenant?} → 202 and the job;
- `GET /v1/exports` the jobs the reader may see, newest first;
- `GET /v1/exports/{id}` a job with its manifest once done;
- `GET /v1/exports/{id}/download` the file, streamed from disk;
- `GET /v1/exports/{id}/manifest` the manifest.

Readers are the query API's: the org level sees and exports every tenant; a tenant admin
only its own tenant, and another tenant's job answers 404, as one that never existed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from schemas.ids import now_ms
from sinks.access import Reader
from sinks.exports.formats import FORMATS
from sinks.exports.job import JOB_ID, MAX_DESCRIPTION_CHARS, ExportJob, ExportQueueFullError
from sinks.exports.jobs import ExportJobs
from sinks.exports.queries import EXPORT_TYPES
from sinks.http_layer import BadRequestError, Guard, json_response, window_ms

FIELDS = frozenset({"type", "format", "since", "description", "tenant"})
MAX_TENANT_CHARS = 256
DOWNLOAD_CHUNK_BYTES = 256 * 1024


def _choice(body: dict[str, Any], name: str, choices: Any, code: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or value not in choices:
        raise BadRequestError(400, code, f"{name} must be one of {sorted(choices)}")
    return value


@dataclass(frozen=True, slots=True)
class ExportOrder:
    """What an export asks for, checked: `tenant` None covers every tenant."""

    type_name: str
    fmt: str
    since: str
    span_ms: int
    description: str
    tenant: str | None


class ExportRoutes:
    """Handlers over an `ExportJobs`."""

    def __init__(self, jobs: ExportJobs) -> None:
        self.jobs = jobs

    def routes(self, guard: Guard) -> list[web.RouteDef]:
        """The routes, each behind the query API's guard."""
        return [
            web.post("/v1/exports", guard(self.create)),
            web.get("/v1/exports", guard(self.listing)),
            web.get("/v1/exports/{id}", guard(self.status)),
            web.get("/v1/exports/{id}/manifest", guard(self.manifest)),
            web.get("/v1/exports/{id}/download", guard(self.download)),
        ]

    async def create(self, request: web.Request, reader: Reader) -> web.StreamResponse:
        """Queue an export of the reader's tenant (or, for the org level, of `tenant` or
        of every tenant)."""
        order = self.order(await self.json_object(request, FIELDS), reader)
        until_ms = now_ms()
        try:
            job = self.jobs.submit(
                type_name=order.type_name,
                fmt=order.fmt,
                since=order.since,
                since_ms=until_ms - order.span_ms,
                until_ms=until_ms,
                tenant=order.tenant,
                description=order.description,
                created_by=reader.identity,
            )
        except ExportQueueFullError as exc:
            raise BadRequestError(429, "too_many_exports", f"{exc}; retry later") from None
        return json_response(job.public(with_manifest=False), status=202)

    @staticmethod
    async def json_object(request: web.Request, fields: frozenset[str]) -> dict[str, Any]:
        """The body: a JSON object of known fields only (also the schedules' routes')."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise BadRequestError(400, "invalid_json", "the body must be a JSON object")
        unknown = sorted(set(body) - fields)
        if unknown:
            raise BadRequestError(400, "unknown_field", f"unknown fields: {unknown}")
        return body

    @staticmethod
    def order(body: dict[str, Any], reader: Reader) -> ExportOrder:
        """What an export asks for, checked, with the tenant it covers (None: every one);
        one rule for exports asked for now and for those scheduled."""
        type_name = _choice(body, "type", EXPORT_TYPES, "invalid_export_type")
        fmt = _choice(body, "format", FORMATS, "invalid_export_format")
        since = body.get("since", "30d")
        try:
            if not isinstance(since, str):
                raise BadRequestError(400, "invalid_since", "since must be a string like 90d")
            span_ms = window_ms(since)
        except BadRequestError as exc:
            raise BadRequestError(400, "invalid_since", exc.message) from None
        description = body.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
            raise BadRequestError(
                400,
                "invalid_description",
                f"description must be a string of at most {MAX_DESCRIPTION_CHARS} characters",
            )
        tenant = body.get("tenant")
        if tenant is not None and (
            not isinstance(tenant, str) or not tenant or len(tenant) > MAX_TENANT_CHARS
        ):
            raise BadRequestError(400, "invalid_tenant", "tenant must be a tenant id")
        if tenant is not None and not reader.sees(tenant):
            raise BadRequestError(403, "forbidden", f"this key may not export tenant {tenant!r}")
        scope = tenant if tenant is not None else reader.tenant_id
        return ExportOrder(type_name, fmt, since, span_ms, description, scope)

    async def listing(self, request: web.Request, reader: Reader) -> web.StreamResponse:
        """The jobs the reader may see, newest first (without their manifests)."""
        jobs = [job.public(with_manifest=False) for job in self.jobs.visible(reader)]
        return json_response({"exports": jobs})

    def _job(self, request: web.Request, reader: Reader) -> ExportJob:
        job_id = request.match_info["id"]
        job = self.jobs.get(job_id, reader) if JOB_ID.match(job_id) else None
        if job is None:
            raise BadRequestError(404, "export_not_found", f"no export {job_id!r}")
        return job

    def _finished(self, request: web.Request, reader: Reader) -> ExportJob:
        job = self._job(request, reader)
        if job.status != "succeeded":
            raise BadRequestError(
                409, "export_not_ready", f"export {job.id} is {job.status}, not succeeded"
            )
        return job

    async def status(self, request: web.Request, reader: Reader) -> web.StreamResponse:
        """A job: status, progress, and its manifest once it has succeeded."""
        return json_response(self._job(request, reader).public(with_manifest=True))

    async def manifest(self, request: web.Request, reader: Reader) -> web.StreamResponse:
        """The manifest file, as written next to the export."""
        job = self._finished(request, reader)
        return web.FileResponse(
            self.jobs.manifest_path(job), headers={"Content-Type": "application/json"}
        )

    async def download(self, request: web.Request, reader: Reader) -> web.StreamResponse:
        """The export file, streamed from disk (never read into memory)."""
        job = self._finished(request, reader)
        path = self.jobs.file_path(job)
        if not path.is_file():
            raise BadRequestError(410, "export_gone", f"the file of export {job.id} is gone")
        extension, content_type = FORMATS[job.format]
        sha256 = job.manifest["file"]["sha256"] if job.manifest else ""
        return web.FileResponse(
            path,
            chunk_size=DOWNLOAD_CHUNK_BYTES,
            headers={
                "Content-Type": content_type,
                "Content-Disposition": (
                    f'attachment; filename="govledger-export-{job.id}{extension}"'
                ),
                "X-Govledger-Sha256": sha256,
            },
        )
