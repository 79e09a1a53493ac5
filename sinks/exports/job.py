"""One export job: what was asked, by whom, and how far it got (kept as job.json)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sinks.exports.formats import FORMATS

MAX_DESCRIPTION_CHARS = 500
Status = Literal["queued", "running", "succeeded", "failed"]
FINISHED: tuple[Status, ...] = ("succeeded", "failed")
JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class ExportQueueFullError(Exception):
    """Too many exports are waiting."""


@dataclass(slots=True)
class ExportJob:
    """One export: what was asked, by whom, and how far it got."""

    id: str
    type: str
    format: str
    since: str
    since_ms: int
    until_ms: int
    tenant: str | None
    description: str
    created_by: str
    created_at_ms: int
    status: Status = "queued"
    rows_done: int = 0
    rows_total: int | None = None
    as_of_ms: int | None = None
    error: str | None = None
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    manifest: dict[str, Any] | None = None

    @property
    def file_name(self) -> str:
        """The export file's name in the job's directory."""
        return "export" + FORMATS[self.format][0]

    def record(self) -> dict[str, Any]:
        """The job as kept in job.json (the manifest is its own file)."""
        kept = asdict(self)
        kept.pop("manifest")
        return kept

    def public(self, *, with_manifest: bool) -> dict[str, Any]:
        """The job as the API shows it."""
        shown = self.record()
        if with_manifest:
            shown["manifest"] = self.manifest
        if self.status == "succeeded":
            shown["download_url"] = f"/v1/exports/{self.id}/download"
            shown["manifest_url"] = f"/v1/exports/{self.id}/manifest"
        return shown
