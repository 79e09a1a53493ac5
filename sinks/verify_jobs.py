"""Chain verifications run by the store's owner (`POST /v1/audit/verify`): what
`govledger audit verify` checks (`replay/store_verify.py` does the checking), as a
background job, so a request never waits for it.

- One job runs at a time (the store thread is shared with the writer), a few wait
  (`MAX_QUEUED`; more is a 429); one scope (a tenant, or every tenant) has at most one job
  queued or running: asking again answers that job (409).
- Each job is bounded in time (`GOVLEDGER_AUDIT_VERIFY_TIMEOUT_S`): past it, it fails.
- The newest `runs_kept` jobs are remembered, in memory: a sink restart forgets them
  (the store is what is verified; a new run says the same).
- A tenant-bound reader sees its tenant's jobs only; the org level sees all."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import structlog

from schemas.ids import now_ms, uuid7
from sinks.access import Reader

log = structlog.get_logger(__name__)

Status = Literal["queued", "running", "succeeded", "failed"]
ACTIVE: tuple[Status, ...] = ("queued", "running")
MAX_QUEUED = 8
MAX_ERROR_CHARS = 500
# What the API shows of a job (not its stop flag or deadline).
SHOWN = frozenset(
    {
        "id",
        "tenant",
        "created_by",
        "created_at_ms",
        "status",
        "phase",
        "records_checked",
        "records_total",
        "started_at_ms",
        "finished_at_ms",
        "error",
        "result",
    }
)
JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class VerifyBusyError(Exception):
    """The scope has a job queued or running already (`job`), or too many wait (None)."""

    def __init__(self, job: VerifyJob | None) -> None:
        super().__init__("busy")
        self.job = job


class VerifyStoppedError(Exception):
    """The sink stops, or the job ran out of its time: the verification ends."""


@dataclass(slots=True)
class VerifyJob:
    """One verification: its scope, who asked, how far it got, and what it found."""

    id: str
    tenant: str | None
    created_by: str
    created_at_ms: int
    status: Status = "queued"
    phase: str = ""
    records_checked: int = 0
    records_total: int | None = None
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    # Set when the sink stops or the job's time is up; the verifying thread reads it.
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    deadline_s: float = 0.0  # time.monotonic() the job must end by (set when it starts)

    def public(self) -> dict[str, Any]:
        """The job as the API shows it."""
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name in SHOWN}
        started, finished = self.started_at_ms, self.finished_at_ms
        shown["duration_ms"] = (
            finished - started if started is not None and finished is not None else None
        )
        return shown


# Runs on a thread: verifies the job's scope, updating its progress; answers the result.
Verification = Callable[[VerifyJob, asyncio.AbstractEventLoop], dict[str, Any]]


class VerifyJobs:
    """The jobs of one sink: one runs at a time, `MAX_QUEUED` wait, `runs_kept` kept."""

    def __init__(
        self, verification: Verification, *, timeout_s: float, runs_kept: int = 20
    ) -> None:
        assert timeout_s > 0 and runs_kept > 0
        self.verification = verification
        self.timeout_s = timeout_s
        self.runs_kept = runs_kept
        self._jobs: dict[str, VerifyJob] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=MAX_QUEUED)
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the worker."""
        self._worker = asyncio.create_task(self._work(), name="audit-verify")

    async def stop(self) -> None:
        """Stop the worker; a running verification is told to end and marked failed."""
        for job in self._jobs.values():
            job.stop.set()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    def submit(self, tenant: str | None, created_by: str) -> VerifyJob:
        """Queue a verification of `tenant`'s chains (None: every chain)."""
        for job in self._jobs.values():
            if job.tenant == tenant and job.status in ACTIVE:
                raise VerifyBusyError(job)
        if self._queue.full():
            raise VerifyBusyError(None)
        job = VerifyJob(id=uuid7(), tenant=tenant, created_by=created_by, created_at_ms=now_ms())
        self._jobs[job.id] = job
        self._queue.put_nowait(job.id)
        self._forget_oldest()
        return job

    def visible(self, reader: Reader, tenant: str | None = None) -> list[VerifyJob]:
        """The jobs the reader may see, newest first; with `tenant`, of that scope only
        (None: every job the reader sees)."""
        return [
            j
            for j in reversed(self._jobs.values())  # kept in the order they were asked
            if reader.tenant_id in (None, j.tenant) and (tenant is None or j.tenant == tenant)
        ]

    def get(self, job_id: str, reader: Reader) -> VerifyJob | None:
        """A job the reader may see, else None (another tenant's job does not exist)."""
        job = self._jobs.get(job_id)
        return job if job is not None and reader.tenant_id in (None, job.tenant) else None

    def _forget_oldest(self) -> None:
        finished = [j for j in self._jobs.values() if j.status not in ACTIVE]
        for job in finished[: max(0, len(self._jobs) - self.runs_kept)]:
            del self._jobs[job.id]

    @staticmethod
    def _fail(job: VerifyJob, error: str) -> None:
        job.status, job.error = "failed", error[:MAX_ERROR_CHARS]
        job.finished_at_ms = now_ms()

    async def _work(self) -> None:
        while True:
            job = self._jobs.get(await self._queue.get())
            if job is None or job.status != "queued":
                continue
            loop = asyncio.get_running_loop()
            job.status, job.started_at_ms = "running", now_ms()
            job.deadline_s = time.monotonic() + self.timeout_s
            timer = loop.call_later(self.timeout_s, job.stop.set)
            try:
                result = await asyncio.to_thread(self.verification, job, loop)
            except asyncio.CancelledError:
                self._fail(job, "sink stopped")
                raise
            except VerifyStoppedError:
                self._fail(job, f"stopped after {self.timeout_s:g} s (the time one run may take)")
            except Exception as exc:
                log.exception("verification failed", verify_id=job.id)
                self._fail(job, str(exc).split("\n", 1)[0] or type(exc).__name__)
            else:
                job.result, job.status, job.finished_at_ms = result, "succeeded", now_ms()
                job.phase = "done"
            finally:
                timer.cancel()
            self._forget_oldest()
