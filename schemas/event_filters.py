"""Which gateway calls a listing shows: one owner for the filters of `GET /v1/events/list`
(the query API reads them from the store) and `govledger events tail` (which applies them
to records as they arrive on the lineage topic), so both mean the same by each filter.

Every value comes from a caller: parsed against allow-lists and length limits here, and
bound as query parameters (never spliced into SQL text) by the store's side."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.records import LineageRecord

MAX_FILTER_CHARS = 200
DEFAULT_LISTED = 50
MAX_LISTED = 1_000
# `status`: a class of outcome or one HTTP status.
STATUS_CLASSES = ("ok", "error")
FILTER_NAMES = ("team", "key", "model", "provider", "status", "guardrail")
_CURSOR = re.compile(r"^(\d{1,15}):([0-9a-f-]{36})$")
_HTTP_STATUS = re.compile(r"^[1-5]\d\d$")


class FilterError(ValueError):
    """A filter, limit or cursor the caller got wrong (a 400 naming it)."""


@dataclass(frozen=True, slots=True)
class EventFilters:
    """Equality filters over lineage; an empty string matches everything."""

    team: str = ""
    key: str = ""
    model: str = ""
    provider: str = ""
    status: str = ""
    guardrail: str = ""

    def matches(self, record: LineageRecord) -> bool:
        """Whether a record passes every filter (the store's WHERE, for one record)."""
        model = record.model_selected or record.model_requested
        return (
            (not self.team or record.team_id == self.team)
            and (not self.key or record.key_id == self.key)
            and (not self.model or model == self.model)
            and (not self.provider or record.provider == self.provider)
            and (not self.status or status_matches(self.status, record.http_status))
            and (
                not self.guardrail
                or any(g.name == self.guardrail for g in record.guardrails_triggered)
            )
        )

    def sql_parameters(self) -> dict[str, Any]:
        """The values `LISTING_WHERE` binds."""
        return {
            "team": self.team,
            "key": self.key,
            "model": self.model,
            "provider": self.provider,
            "status_class": self.status if self.status in STATUS_CLASSES else "",
            "http_status": int(self.status) if _HTTP_STATUS.match(self.status) else 0,
            "guardrail": self.guardrail,
        }


# The store's side of `EventFilters.matches`: each filter is bound, and empty means all.
LISTING_WHERE = (
    "({team:String} = '' OR team_id = {team:String}) "
    "AND ({key:String} = '' OR key_id = {key:String}) "
    "AND ({model:String} = '' OR "
    "if(model_selected = '', model_requested, model_selected) = {model:String}) "
    "AND ({provider:String} = '' OR provider = {provider:String}) "
    "AND ({status_class:String} = '' OR ({status_class:String} = 'ok') = (http_status < 400)) "
    "AND ({http_status:UInt16} = 0 OR http_status = {http_status:UInt16}) "
    "AND ({guardrail:String} = '' OR has(guardrails_triggered.name, {guardrail:String}))"
)


def status_matches(status: str, http_status: int) -> bool:
    """`ok` is a status under 400, `error` one from 400 up, digits one status exactly."""
    if status == "ok":
        return http_status < 400
    if status == "error":
        return http_status >= 400
    return str(http_status) == status


def parse_filters(values: Mapping[str, str]) -> EventFilters:
    """The filters among `values` (a query string or the CLI's options); others ignored."""
    fields: dict[str, str] = {}
    for name in FILTER_NAMES:
        value = values.get(name, "") or ""
        if len(value) > MAX_FILTER_CHARS or any(ord(c) < 32 for c in value):
            raise FilterError(f"{name} must be at most {MAX_FILTER_CHARS} printable characters")
        fields[name] = value
    status = fields["status"]
    if status and status not in STATUS_CLASSES and not _HTTP_STATUS.match(status):
        raise FilterError("status must be ok, error or an HTTP status such as 429")
    return EventFilters(**fields)


def parse_limit(text: str | None) -> int:
    """How many rows a page holds: 1 to MAX_LISTED, DEFAULT_LISTED when not given."""
    if text is None or text == "":
        return DEFAULT_LISTED
    if not text.isdigit() or not 1 <= int(text) <= MAX_LISTED:
        raise FilterError(f"limit must be a whole number from 1 to {MAX_LISTED}")
    return int(text)


def encode_cursor(occurred_at_ms: int, event_id: str) -> str:
    """Where the next page starts: after this row, newest first."""
    return f"{occurred_at_ms}:{event_id}"


def parse_cursor(text: str | None) -> tuple[int, str] | None:
    """A cursor from `encode_cursor`, or None for the first page."""
    if not text:
        return None
    match = _CURSOR.match(text)
    if match is None:
        raise FilterError("after must be a cursor from a previous page's `next`")
    return int(match.group(1)), match.group(2)
