"""The export job queue of the sink: at most a few jobs run at once, each reading the store
a page at a time and writing it to disk before asking for the next; jobs are reloaded when
the sink starts (see the package's docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import structlog
from pyarrow import ipc

from schemas.ids import now_ms, uuid7
from sinks import sql_guard
from sinks.access import Reader
from sinks.exports.formats import FORMATS
from sinks.exports.job import (
    FINISHED,
    JOB_ID,
    MAX_DESCRIPTION_CHARS,
    ExportJob,
    ExportQueueFullError,
)
from sinks.exports.manifest import Tally, build_manifest, write_json
from sinks.exports.queries import (
    EXPORT_TYPES,
    MAX_PAGE_ROWS,
    PAGE_ROWS,
    ExportType,
    count_sql,
    distinct_keys,
    last_key,
    page_sql,
)
from sinks.exports.writers import ExportFile
from sinks.store import Store

log = structlog.get_logger(__name__)

MAX_RUNNING = 2  # exports running at once (each holds one page; the store thread is shared)
MAX_QUEUED = 16  # waiting behind them; more is a 429
MAX_KEPT = 200  # jobs remembered (with their files); the oldest finished ones are deleted
PAGE_TIMEOUT_S = 120  # max_execution_time of one page's query
MAX_ERROR_CHARS = 2_000


def _write_page(out: ExportFile, tally: Tally, data: bytes, spec: ExportType) -> tuple[int, Any]:
    """Decode one page of Arrow, write it (a record stored twice once), count it; the rows
    the store sent and the last key. The page is dropped on return."""
    page = ipc.open_stream(data).read_all() if data else pa.table({})
    if page.num_columns == 0:
        # A store that sends nothing for an empty result: an empty page of text columns.
        page = pa.table({name: pa.array([], pa.string()) for name in spec.column_names})
    kept = distinct_keys(page, spec)
    out.write(kept)
    tally.add(kept)
    return page.num_rows, (last_key(page, spec) if page.num_rows else None)


class ExportJobs:
    """Export jobs of the sink: at most `max_running` at once, `max_queued` waiting,
    `max_kept` remembered; state on disk under `root`."""

    def __init__(
        self,
        store: Store,
        root: Path,
        *,
        page_rows: int = PAGE_ROWS,
        max_running: int = MAX_RUNNING,
        max_queued: int = MAX_QUEUED,
        max_kept: int = MAX_KEPT,
    ) -> None:
        assert 0 < page_rows <= MAX_PAGE_ROWS, page_rows
        assert max_kept > max_running + max_queued, "every live job must fit the memory"
        self.store = store
        self.root = root
        self.page_rows = page_rows
        self.max_running = max_running
        self.max_kept = max_kept
        self._jobs: dict[str, ExportJob] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=max_queued)
        self._workers: list[asyncio.Task[None]] = []
        self._tenant_tables: frozenset[str] | None = None

    # --- lifecycle ---

    async def start(self) -> None:
        """Reload the jobs kept on disk and start the workers."""
        loaded = await asyncio.to_thread(self._load)
        requeue = []
        for job in sorted(loaded, key=lambda j: j.created_at_ms):
            if job.id in self._jobs:
                continue  # submitted before start: already queued
            self._jobs[job.id] = job
            if job.status == "running":
                self._fail(job, "sink restarted")
                await asyncio.to_thread(self._save, job)
            elif job.status == "queued":
                requeue.append(job)
        for job in requeue:
            try:
                self._queue.put_nowait(job.id)
            except asyncio.QueueFull:
                self._fail(job, "sink restarted")
                await asyncio.to_thread(self._save, job)
        self._workers = [
            asyncio.create_task(self._work(), name=f"export-{n}") for n in range(self.max_running)
        ]

    async def stop(self) -> None:
        """Stop the workers; a running job is marked failed, queued ones run next start."""
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []

    def _load(self) -> list[ExportJob]:
        if not self.root.is_dir():
            return []
        found = []
        for directory in self.root.iterdir():
            path = directory / "job.json"
            if not JOB_ID.match(directory.name) or not path.is_file():
                continue
            try:
                job = ExportJob(**orjson.loads(path.read_bytes()))
                if job.status == "succeeded":
                    job.manifest = orjson.loads((directory / "manifest.json").read_bytes())
            except (OSError, TypeError, ValueError):
                log.warning("export job not readable; skipped", path=str(path))
                continue
            if job.status != "succeeded":
                for partial in directory.glob("*.partial"):
                    partial.unlink(missing_ok=True)
            found.append(job)
        found.sort(key=lambda j: j.created_at_ms)
        for old in found[: max(0, len(found) - self.max_kept)]:
            shutil.rmtree(self.root / old.id, ignore_errors=True)
        return found[-self.max_kept :]

    # --- the API's side ---

    def submit(
        self,
        *,
        type_name: str,
        fmt: str,
        since: str,
        since_ms: int,
        until_ms: int,
        tenant: str | None,
        description: str,
        created_by: str,
    ) -> ExportJob:
        """Queue an export (ExportQueueFullError when too many wait)."""
        assert type_name in EXPORT_TYPES and fmt in FORMATS
        assert len(description) <= MAX_DESCRIPTION_CHARS
        if self._queue.full():
            raise ExportQueueFullError(f"{self._queue.maxsize} exports are already waiting")
        job = ExportJob(
            id=uuid7(),
            type=type_name,
            format=fmt,
            since=since,
            since_ms=since_ms,
            until_ms=until_ms,
            tenant=tenant,
            description=description,
            created_by=created_by,
            created_at_ms=now_ms(),
        )
        self._save(job)
        self._jobs[job.id] = job
        self._queue.put_nowait(job.id)
        self._forget_oldest()
        return job

    def visible(self, reader: Reader) -> list[ExportJob]:
        """Jobs the reader may see, newest first: all for the org level, else the jobs
        scoped to the reader's tenant."""
        return sorted(
            (j for j in self._jobs.values() if self._may_see(reader, j)),
            key=lambda j: j.created_at_ms,
            reverse=True,
        )

    def get(self, job_id: str, reader: Reader) -> ExportJob | None:
        """A job the reader may see, else None (another tenant's job does not exist)."""
        job = self._jobs.get(job_id)
        return job if job is not None and self._may_see(reader, job) else None

    def file_path(self, job: ExportJob) -> Path:
        """Where a job's file is."""
        return self.root / job.id / job.file_name

    def manifest_path(self, job: ExportJob) -> Path:
        """Where a job's manifest is."""
        return self.root / job.id / "manifest.json"

    @staticmethod
    def _may_see(reader: Reader, job: ExportJob) -> bool:
        return reader.tenant_id is None or job.tenant == reader.tenant_id

    def _forget_oldest(self) -> None:
        """Keep at most `max_kept` jobs: delete the oldest finished ones and their files."""
        excess = len(self._jobs) - self.max_kept
        if excess <= 0:
            return
        finished = sorted(
            (j for j in self._jobs.values() if j.status in FINISHED),
            key=lambda j: j.created_at_ms,
        )
        for job in finished[:excess]:
            del self._jobs[job.id]
            shutil.rmtree(self.root / job.id, ignore_errors=True)

    # --- running ---

    def _save(self, job: ExportJob) -> None:
        directory = self.root / job.id
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "job.json", job.record())

    @staticmethod
    def _fail(job: ExportJob, error: str) -> None:
        job.status = "failed"
        job.error = error[:MAX_ERROR_CHARS]
        job.finished_at_ms = now_ms()

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            job = self._jobs.get(job_id)
            if job is None or job.status != "queued":
                continue
            try:
                await self._run(job)
            except asyncio.CancelledError:
                # Stopped while saving its success (the manifest is set only then): the
                # job is done, and stays so on disk.
                if job.manifest is None:
                    self._fail(job, "sink stopped")
                await asyncio.to_thread(self._save, job)
                raise
            except Exception as exc:
                log.exception("export failed", export_id=job.id)
                self._fail(job, str(exc).split("\n", 1)[0] or type(exc).__name__)
                await asyncio.to_thread(self._save, job)

    async def _settings(self, tenant: str | None) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "max_execution_time": PAGE_TIMEOUT_S,
            "output_format_arrow_string_as_string": 1,
        }
        if tenant is not None:
            # Engine-side filters as well as our WHERE, as the tenant reports run.
            if self._tenant_tables is None:
                _, _, self._tenant_tables = await self.store.run(self.store.tables)
            settings["additional_table_filters"] = sql_guard.tenant_filters(
                self._tenant_tables, tenant
            )
        return settings

    async def _run(self, job: ExportJob) -> None:
        spec = EXPORT_TYPES[job.type]
        job.status, job.started_at_ms = "running", now_ms()
        await asyncio.to_thread(self._save, job)
        settings = await self._settings(job.tenant)
        parameters: dict[str, Any] = {
            "all": job.tenant is None,
            "tenant": job.tenant or "",
            "since_ms": job.since_ms,
            "until_ms": job.until_ms,
        }
        rows = await self.store.run(self.store.query_rows, count_sql(spec), parameters, settings)
        job.rows_total, job.as_of_ms = int(rows[0][0]), int(rows[0][1])
        parameters["as_of_ms"] = job.as_of_ms
        directory = self.root / job.id
        partial = directory / (job.file_name + ".partial")
        out = await asyncio.to_thread(ExportFile, partial, job.format)
        tally = Tally(spec.time_column, spec.chain_columns)
        after: dict[str, Any] | None = None
        try:
            while True:
                # One page per store call: inserts queued on the store thread run between.
                data = await self.store.run(
                    self.store.read_only,
                    page_sql(spec, self.page_rows, after=after is not None),
                    "ArrowStream",
                    settings,
                    {**parameters, **(after or {})},
                )
                count, after = await asyncio.to_thread(_write_page, out, tally, data, spec)
                del data
                job.rows_done = tally.rows
                if count < self.page_rows:
                    break
            summary = await asyncio.to_thread(out.finish)
        except asyncio.CancelledError:
            raise  # the page may still be being written: the restart removes the partial file
        except BaseException:
            await asyncio.to_thread(out.abort)
            raise
        await asyncio.to_thread(os.replace, partial, self.file_path(job))
        manifest = build_manifest(job, spec, summary, tally)
        await asyncio.to_thread(write_json, self.manifest_path(job), manifest)
        job.manifest = manifest
        job.status, job.finished_at_ms = "succeeded", now_ms()
        await asyncio.to_thread(self._save, job)
        log.info("export done", export_id=job.id, rows=tally.rows, bytes=summary.bytes)
