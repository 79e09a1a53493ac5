"""Notifications, pure: routes folded from the control log, which alert or escalation
record makes which notice (trigger or resolve, with its incident's dedup key), which
routes a notice goes to (tenant-isolated), the three payload formats, the Standard
Webhooks signature and the retry backoff. No I/O, no clock, no ids: the notifier
(streams.notify.notifier) and the admin API's route test are the adapters."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from schemas.money import format_usd
from schemas.notify_events import FORMATS, ROUTE_EVENTS, Format
from schemas.notify_records import NotifyRouteAdded, NotifyRouteRemoved
from schemas.records import (
    CircuitChanged,
    EscalationOpened,
    EscalationResolved,
    EscalationSlaBreached,
    Event,
    QuotaThresholdCrossed,
    SlaBreached,
)

__all__ = ["FORMATS", "ROUTE_EVENTS", "Format"]  # the notifier's vocabulary, re-exported

Action = Literal["trigger", "resolve"]

CLOUDEVENT_TYPE_PREFIX = "dev.govledger."
SIGNATURE_VERSION = "v1"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
ENVELOPE_ONLY = ("producer_id", "seq", "prev_hash", "record_hash")


@dataclass(frozen=True, slots=True)
class Route:
    """A route as folded: where a tenant's (tenant_id '' : the org's) notices go."""

    route_id: str
    tenant_id: str
    events: tuple[str, ...]
    url: str  # shown: scheme://host[:port]/… (the full URL is sealed with the secret)
    format: str
    secret_sealed: bytes
    added_at: int
    added_by: str

    def public(self) -> dict[str, Any]:
        """The route as the admin API lists it (never its secret)."""
        return {
            "id": self.route_id,
            "tenant_id": self.tenant_id,
            "scope": "org" if not self.tenant_id else "tenant",
            "events": list(self.events),
            "url": self.url,
            "format": self.format,
            "added_at_ms": self.added_at,
            "added_by": self.added_by,
        }


def evolve(routes: Mapping[str, Route], event: Event) -> dict[str, Route]:
    """The routes after one control record (others change nothing). A removal names a
    route of its own tenant only; a re-delivered add changes nothing."""
    folded = dict(routes)
    if isinstance(event, NotifyRouteAdded) and event.route_id not in folded:
        folded[event.route_id] = Route(
            event.route_id,
            event.tenant_id,
            tuple(event.events),
            event.url,
            event.format,
            event.secret_sealed,
            event.occurred_at,
            event.added_by,
        )
    elif isinstance(event, NotifyRouteRemoved):
        known = folded.get(event.route_id)
        if known is not None and known.tenant_id == event.tenant_id:
            del folded[event.route_id]
    return folded


# --- notices ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing to tell routes about: the record, the route event it counts as, trigger or
    resolve, and the incident's dedup key (the event id of the record that opened it)."""

    record: Event
    route_event: str
    action: Action
    dedup_key: str
    summary: str
    severity: str
    # What a payload carries as the event's data, when not the record's fields (a scheduled
    # export's run outcome: its record is only the envelope).
    details: Mapping[str, Any] | None = None

    @property
    def event_id(self) -> str:
        """The notified record's id: the webhook-id (idempotency key) of every delivery."""
        return self.record.event_id

    @property
    def tenant_id(self) -> str:
        """Whose notice it is ('' : org-wide, e.g. a fleet breaker)."""
        return self.record.tenant_id


def incident_key(record: Event) -> str | None:
    """The incident an opening or closing record belongs to (None: it stands alone)."""
    if isinstance(record, CircuitChanged):
        return f"circuit:{record.provider}/{record.model}"
    if isinstance(record, EscalationOpened | EscalationResolved):
        return f"escalation:{record.tenant_id}/{record.escalation_id}"
    return None


def notice_of(record: Event, incidents: Mapping[str, str]) -> tuple[Notice | None, dict[str, str]]:
    """The notice a consumed record makes (None: nothing to tell) and the open incidents
    after it (incident key -> event id of its opening record)."""
    opened = dict(incidents)
    key = incident_key(record)
    if isinstance(record, QuotaThresholdCrossed):
        summary = (
            f"{record.team_id or record.wallet_id} spent {record.threshold_percent}% of its "
            f"budget (${format_usd(record.spent_nanousd)} of "
            f"${format_usd(record.budget_nanousd)})"
        )
        severity = "critical" if record.threshold_percent >= 100 else "warning"
        return Notice(
            record, "quota.threshold", "trigger", record.event_id, summary, severity
        ), opened
    if isinstance(record, SlaBreached):
        summary = (
            f"SLA breached on {record.provider}/{record.model}: {record.metric} "
            f"{record.observed:g} against target {record.target:g}"
        )
        return Notice(record, "sla.breached", "trigger", record.event_id, summary, "error"), opened
    if isinstance(record, EscalationSlaBreached):
        summary = f"escalation {record.escalation_id} ({record.priority}) passed its deadline"
        notice = Notice(
            record, "escalation.sla_breached", "trigger", record.event_id, summary, "error"
        )
        return notice, opened
    if isinstance(record, CircuitChanged) and key is not None:
        target = f"{record.provider}/{record.model}"
        if record.event_type == "circuit.opened":
            opened[key] = record.event_id
            summary = f"circuit opened for {target}: calls are routed around it"
            return Notice(
                record, "circuit.opened", "trigger", record.event_id, summary, "critical"
            ), opened
        if record.event_type == "circuit.closed" and key in opened:
            summary = f"circuit closed for {target}: calls flow again"
            notice = Notice(record, "circuit.opened", "resolve", opened.pop(key), summary, "info")
            return notice, opened
        return None, opened
    if isinstance(record, EscalationOpened) and key is not None:
        if record.priority != "P1":
            return None, opened
        opened[key] = record.event_id
        summary = (
            f"P1 escalation {record.escalation_id} ({record.category}) for team "
            f"{record.team_id}: {record.reason}"
        )
        return Notice(
            record, "escalation.p1", "trigger", record.event_id, summary, "critical"
        ), opened
    if isinstance(record, EscalationResolved) and key is not None and key in opened:
        summary = f"escalation {record.escalation_id} resolved: {record.decision}"
        notice = Notice(record, "escalation.p1", "resolve", opened.pop(key), summary, "info")
        return notice, opened
    return None, opened


def routes_for(notice: Notice, routes: Iterable[Route]) -> list[Route]:
    """The routes a notice goes to: subscribed to its event, of its tenant (an org route
    gets every tenant's notices and the org-wide ones; a tenant route only its own), and
    added before the record happened (a new route is not sent the past)."""
    return [
        r
        for r in routes
        if notice.route_event in r.events
        and (not r.tenant_id or r.tenant_id == notice.tenant_id)
        and r.added_at <= notice.record.occurred_at
    ]


# --- payloads ----------------------------------------------------------------------------


def rfc3339(epoch_ms: int) -> str:
    """An epoch-millisecond moment as RFC 3339 UTC with milliseconds."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_data(record: Event) -> dict[str, Any]:
    """A record's fields for a payload: without the chain fields, bytes as nothing."""
    return {
        k: v
        for k, v in record.to_avro().items()
        if k not in ENVELOPE_ONLY and not isinstance(v, bytes)
    }


def notice_data(notice: Notice) -> dict[str, Any]:
    """What a payload tells of the notified event: its details, else its record's fields."""
    return dict(notice.details) if notice.details is not None else record_data(notice.record)


def cloudevent_type(notice: Notice) -> str:
    """`dev.govledger.<event type>` of the notified record (circuit.closed for a
    breaker's resolve, escalation.resolved for an escalation's)."""
    return CLOUDEVENT_TYPE_PREFIX + notice.record.event_type


def cloudevent(notice: Notice) -> dict[str, Any]:
    """A CloudEvents 1.0 structured-mode JSON event; id is the source record's event id."""
    source = f"/govledger/tenants/{notice.tenant_id}" if notice.tenant_id else "/govledger/org"
    data = notice_data(notice)
    data.update(action=notice.action, dedup_key=notice.dedup_key, summary=notice.summary)
    return {
        "specversion": "1.0",
        "id": notice.event_id,
        "source": source,
        "type": cloudevent_type(notice),
        "subject": notice.route_event,
        "time": rfc3339(notice.record.occurred_at),
        "datacontenttype": "application/json",
        "data": data,
    }


def slack_message(notice: Notice) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (the fallback) plus blocks."""
    icon = ":white_check_mark:" if notice.action == "resolve" else ":rotating_light:"
    scope = notice.tenant_id or "org"
    text = f"{icon} [{scope}] {notice.summary}"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"{notice.record.event_type} · {rfc3339(notice.record.occurred_at)}"
                        f" · event {notice.event_id}",
                    }
                ],
            },
        ],
    }


def pagerduty_event(notice: Notice, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event: trigger or resolve, deduplicated by the event id
    of the record that opened the incident."""
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": notice.action,
        "dedup_key": notice.dedup_key,
    }
    if notice.action == "trigger":
        event["payload"] = {
            "summary": notice.summary[:1024],
            "severity": notice.severity,
            "source": notice.tenant_id or "govledger-org",
            "timestamp": rfc3339(notice.record.occurred_at),
            "component": notice.route_event,
            "custom_details": notice_data(notice),
        }
    return event


def payload(notice: Notice, fmt: str, secret: str) -> dict[str, Any]:
    """The payload of a notice in a route's format (PagerDuty's routing key is the route's
    secret)."""
    if fmt == "slack":
        return slack_message(notice)
    if fmt == "pagerduty":
        return pagerduty_event(notice, secret)
    return cloudevent(notice)


def content_type(fmt: str) -> str:
    """The Content-Type of a format's body."""
    return "application/cloudevents+json" if fmt == "cloudevents" else "application/json"


# --- Standard Webhooks signature -----------------------------------------------------------


def signing_key(secret: str) -> bytes:
    """The HMAC key of a secret: a Standard Webhooks `whsec_<base64>` secret is its decoded
    bytes; any other secret is used as its UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except ValueError:
            pass
    return secret.encode()


def signature(secret: str, webhook_id: str, timestamp_s: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`, the webhook-signature value."""
    signed = f"{webhook_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signed_headers(
    secret: str, webhook_id: str, timestamp_s: int, body: bytes, fmt: str
) -> dict[str, str]:
    """The request's headers: content type, webhook-id (the idempotency key, also sent as
    Idempotency-Key), webhook-timestamp and webhook-signature."""
    return {
        "Content-Type": content_type(fmt),
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature(secret, webhook_id, timestamp_s, body),
        "Idempotency-Key": webhook_id,
        "User-Agent": "govledger-notifier/1",
    }


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, now_s: int, tolerance_s: int = 300
) -> bool:
    """A receiver's check (for `notify test` and docs): a signature of this body, made at a
    timestamp within `tolerance_s` of now (older or newer is a replay: refused)."""
    try:
        timestamp_s = int(headers["webhook-timestamp"])
        webhook_id = headers["webhook-id"]
    except (KeyError, ValueError):
        return False
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    expected = signature(secret, webhook_id, timestamp_s, body).split(",", 1)[1]
    offered = [s.split(",", 1)[1] for s in headers.get("webhook-signature", "").split() if "," in s]
    return any(hmac.compare_digest(expected, o) for o in offered)


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Wait after failed attempt number `attempt` (from 1): base doubling, capped."""
    return float(min(base_s * 2 ** (attempt - 1), max_s))


def notice_for(record: Event, route_event: str, summary: str, severity: str = "info") -> Notice:
    """A trigger notice for any record (e.g. a scheduled export's run: `route_event` names
    it, `export.completed`), its own dedup key and webhook-id being the record's event id."""
    return Notice(record, route_event, "trigger", record.event_id, summary, severity)


# A scheduled export's runs: their notices' ids are UUIDv5 names in this namespace.
EXPORT_COMPLETED = "export.completed"
EXPORT_RUN_NAMESPACE = uuid.UUID("5b0c9f3e-2d7a-5c1e-9a44-6f1d8e0b7c21")
EXPORT_SEVERITY = {"succeeded": "info", "skipped": "warning"}  # anything else: failed


def export_run_event_id(schedule_id: str, slot_ms: int) -> str:
    """The stable id of one run of a schedule (a schedule runs each slot at most once): the
    CloudEvent id and webhook-id of every delivery of its notice, so a receiver dedupes."""
    return str(uuid.uuid5(EXPORT_RUN_NAMESPACE, f"{schedule_id}/{slot_ms}"))


def export_run_notice(outcome: Mapping[str, Any], at_ms: int) -> Notice:
    """The notice of a scheduled export's finished run (succeeded, failed or skipped), from
    its outcome (sinks.exports.schedules.run_outcome), which is the payload's data. The
    summary leaves out the creator's description (Slack would render its markup); the
    data carries it."""
    status = str(outcome["status"])
    record = Event(
        event_id=export_run_event_id(str(outcome["schedule_id"]), int(outcome["slot_ms"])),
        event_type=EXPORT_COMPLETED,
        occurred_at=at_ms,
        tenant_id=str(outcome["tenant"] or ""),
    )
    what = f"scheduled {outcome['type']} export ({outcome['format']})"
    what += f" of schedule {outcome['schedule_id']}"
    if status == "succeeded":
        summary = f"{what} succeeded: export {outcome['export_id']}, {outcome['rows']} rows"
    else:
        summary = f"{what} {status}: {outcome['error'] or 'no reason given'}"
    severity = EXPORT_SEVERITY.get(status, "error")
    return Notice(
        record, EXPORT_COMPLETED, "trigger", record.event_id, summary, severity, dict(outcome)
    )


def signed_request(
    notice: Notice, fmt: str, secret: str, timestamp_s: int
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one delivery of a notice in a route's format."""
    body = orjson.dumps(payload(notice, fmt, secret))
    return body, signed_headers(secret, notice.event_id, timestamp_s, body, fmt)


def trial_notice(route: Route, event_id: str, at_ms: int) -> Notice:
    """The notice `notify test` sends (event type notify.test): no real alert behind it."""
    record = QuotaThresholdCrossed(
        event_id=event_id,
        event_type="notify.test",
        occurred_at=at_ms,
        tenant_id=route.tenant_id,
        wallet_id="test",
        team_id="test",
        period_start_at=at_ms,
        threshold_percent=0,
        spent_nanousd=0,
        budget_nanousd=0,
    )
    summary = f"test notification for route {route.route_id}"
    return Notice(record, "notify.test", "trigger", event_id, summary, "info")
