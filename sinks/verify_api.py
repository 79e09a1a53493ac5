"""The chain verification routes of the query API (`sinks/verify_jobs.py` runs the jobs):

- `POST /v1/audit/verify[?tenant=]` → 202 and the job; 409 and the job already queued or
  running for that scope; 429 when too many wait;
- `GET /v1/audit/verify[?tenant=]` the jobs the reader may see, newest first;
- `GET /v1/audit/verify/latest[?tenant=]` the newest job of the scope (404: none yet);
- `GET /v1/audit/verify/{id}` one job: status, phase, progress and, once done, its result.

The scope is the query routes' rule: a tenant admin verifies its own tenant (naming
another is a 403); the org level every chain, or `?tenant=`'s. Another tenant's job
answers 404, as one that never existed."""

from __future__ import annotations

import orjson
from aiohttp import web

from schemas.http_errors import error_body
from sinks.access import Reader
from sinks.http_layer import BadRequestError, Guard, json_response
from sinks.verify_jobs import JOB_ID, VerifyBusyError, VerifyJobs

MAX_TENANT_CHARS = 256


def scope_of(request: web.Request, reader: Reader) -> str | None:
    """The tenant a request covers: the reader's own, or for the org level `?tenant=`
    (None: every tenant). A tenant the reader may not see is a 403."""
    asked = request.query.get("tenant") or None
    if asked is not None and (len(asked) > MAX_TENANT_CHARS or not asked.isprintable()):
        raise BadRequestError(400, "invalid_tenant", "tenant must be a tenant id")
    if asked is not None and not reader.sees(asked):
        raise BadRequestError(403, "forbidden", f"this key may not verify tenant {asked!r}")
    return asked if asked is not None else reader.tenant_id


class VerifyRoutes:
    """Handlers over a `VerifyJobs`."""

    def __init__(self, jobs: VerifyJobs) -> None:
        self.jobs = jobs

    def routes(self, guard: Guard) -> list[web.RouteDef]:
        """The routes, each behind the query API's guard (`latest` before `{id}`)."""
        return [
            web.post("/v1/audit/verify", guard(self.create)),
            web.get("/v1/audit/verify", guard(self.listing)),
            web.get("/v1/audit/verify/latest", guard(self.latest)),
            web.get("/v1/audit/verify/{id}", guard(self.status)),
        ]

    async def create(self, request: web.Request, reader: Reader) -> web.StreamResponse:
        """Queue a verification of the scope's chains."""
        if await request.read():
            raise BadRequestError(400, "invalid_request", "no body: the tenant is ?tenant=")
        tenant = scope_of(request, reader)
        try:
            job = self.jobs.submit(tenant, reader.identity)
        except VerifyBusyError as busy:
            if busy.job is None:
                raise BadRequestError(
                    429, "too_many_verifications", "too many verifications wait; retry later"
                ) from None
            message = f"verification {busy.job.id} of this scope is {busy.job.status}"
            error = orjson.loads(error_body(message, "verify_running", status=409))
            return json_response({**error, "job": busy.job.public()}, status=409)
        return json_response(job.public(), status=202)

    async def listing(self, request: web.Request, reader: Reader) -> web.StreamResponse:
        """The jobs the reader may see (of `?tenant=` if named), newest first."""
        asked = request.query.get("tenant") or None
        tenant = scope_of(request, reader) if asked is not None else None
        jobs = self.jobs.visible(reader, tenant)
        return json_response({"verifications": [j.public() for j in jobs]})

    async def latest(self, request: web.Request, reader: Reader) -> web.StreamResponse:
        """The newest job of the scope, the running one included."""
        tenant = scope_of(request, reader)
        found = [j for j in self.jobs.visible(reader) if j.tenant == tenant]
        if not found:
            raise BadRequestError(404, "verify_not_found", "no verification of this scope yet")
        return json_response(found[0].public())

    async def status(self, request: web.Request, reader: Reader) -> web.StreamResponse:
        """One job."""
        job_id = request.match_info["id"]
        job = self.jobs.get(job_id, reader) if JOB_ID.match(job_id) else None
        if job is None:
            raise BadRequestError(404, "verify_not_found", f"no verification {job_id!r}")
        return json_response(job.public())
