"""Notification records: routes a tenant sets (control topic) and every delivery attempt
the notifier makes (notifications topic). Kept out of schemas/records.py, which is long;
the codec registers `NOTIFY_RECORD_TYPES` with the rest (schemas.codec.ALL_RECORD_TYPES)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from schemas.records import Event


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NotifyRouteAdded(Event):
    """A tenant (or, with tenant_id empty, the org) added a notification route; the
    webhook secret travels sealed (schemas.notify_secrets), never in the clear."""

    schema_name: ClassVar[str] = "govledger.v1.NotifyRouteAdded"
    event_type_name: ClassVar[str] = "notify.route_added"

    route_id: str
    events: tuple[str, ...] = ()
    url: str
    format: str
    secret_sealed: bytes
    added_by: str

    @classmethod
    def from_avro(cls, data: Mapping[str, Any]) -> NotifyRouteAdded:
        """Build the record; the event list becomes a tuple."""
        return cls(**{**data, "events": tuple(data["events"])})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NotifyRouteRemoved(Event):
    """A notification route was removed."""

    schema_name: ClassVar[str] = "govledger.v1.NotifyRouteRemoved"
    event_type_name: ClassVar[str] = "notify.route_removed"

    route_id: str
    removed_by: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NotificationAttempted(Event):
    """One delivery attempt of one event to one route, as the notifier made it."""

    schema_name: ClassVar[str] = "govledger.v1.NotificationAttempted"
    event_type_name: ClassVar[str] = "notify.attempted"

    route_id: str
    source_event_id: str
    source_event_type: str
    action: str
    format: str
    attempt: int
    status: str
    http_status: int
    latency_ms: float
    error: str
    destination_host: str


NOTIFY_RECORD_TYPES: tuple[type[Event], ...] = (
    NotifyRouteAdded,
    NotifyRouteRemoved,
    NotificationAttempted,
)
