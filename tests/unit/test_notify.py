"""Notifications, pure: which record makes which notice for which routes (tenant-isolated,
resolves keyed by the opening event), the three payload shapes, the Standard Webhooks
signature checked with a receiver's own algorithm, the backoff, and sealed secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace

import orjson
import pytest

from schemas.authn import Keyring
from schemas.notify_secrets import SealError, seal, unseal
from schemas.records import Event
from streams.notify import logic
from streams.notify.logic import Route
from tests.unit import builders

T0 = builders.T0


def route(
    tenant_id: str = builders.TENANT, events: tuple[str, ...] = logic.ROUTE_EVENTS, **kw: object
) -> Route:
    fields: dict[str, object] = {
        "route_id": f"route-{tenant_id or 'org'}",
        "tenant_id": tenant_id,
        "events": events,
        "url": "https://hooks.example.com/x",
        "format": "cloudevents",
        "secret_sealed": b"",
        "added_at": T0 - 60_000,
        "added_by": "admin",
    }
    fields.update(kw)
    return Route(**fields)  # type: ignore[arg-type]


def notices(records: list[Event]) -> list[logic.Notice]:
    incidents: dict[str, str] = {}
    found = []
    for record in records:
        notice, incidents = logic.notice_of(record, incidents)
        if notice is not None:
            found.append(notice)
    return found


# --- notices and routes ------------------------------------------------------------------


def test_a_breaker_open_triggers_and_its_close_resolves_with_the_opening_event_id() -> None:
    opened = builders.circuit_changed()
    closed = replace(
        builders.circuit_changed(occurred_at=T0 + 30_000, before="open", after="closed"),
        event_type="circuit.closed",
    )
    trigger, resolve = notices([opened, closed])
    assert (trigger.action, trigger.dedup_key, trigger.route_event) == (
        "trigger",
        opened.event_id,
        "circuit.opened",
    )
    assert (resolve.action, resolve.dedup_key, resolve.event_id) == (
        "resolve",
        opened.event_id,
        closed.event_id,
    )


def test_a_close_without_a_known_open_and_a_p2_escalation_notify_no_one() -> None:
    closed = replace(builders.circuit_changed(), event_type="circuit.closed")
    assert notices([closed, builders.escalation_opened(priority="P2")]) == []


def test_a_p1_escalation_triggers_and_its_decision_resolves() -> None:
    opened = builders.escalation_opened(priority="P1")
    decided = builders.escalation_resolved(escalation_id=opened.escalation_id, occurred_at=T0 + 5)
    trigger, resolve = notices([opened, decided])
    assert trigger.route_event == resolve.route_event == "escalation.p1"
    assert resolve.dedup_key == opened.event_id and resolve.action == "resolve"


def test_a_tenant_route_gets_its_tenant_only_and_an_org_route_gets_everything() -> None:
    ours, theirs, org = route(), route("globex"), route("")
    quota = notices([builders.quota_crossed()])[0]
    fleet = notices([builders.circuit_changed()])[0]
    assert logic.routes_for(quota, [ours, theirs, org]) == [ours, org]
    assert logic.routes_for(fleet, [ours, theirs, org]) == [org]


def test_a_route_gets_only_its_events_and_nothing_from_before_it_was_added() -> None:
    quota = notices([builders.quota_crossed()])[0]
    assert logic.routes_for(quota, [route(events=("circuit.opened",))]) == []
    assert logic.routes_for(quota, [route(added_at=T0 + 1)]) == []


def test_routes_fold_from_adds_and_removes_of_the_same_tenant_only() -> None:
    added = builders.notify_route_added()
    routes = logic.evolve({}, added)
    assert routes[added.route_id].events == ("quota.threshold", "escalation.p1")
    forged_removal = builders.notify_route_removed(tenant_id="globex")
    assert logic.evolve(routes, forged_removal) == routes
    assert logic.evolve(routes, builders.notify_route_removed()) == {}


# --- payloads ----------------------------------------------------------------------------


def test_cloudevent_has_the_required_attributes_and_the_source_event_id() -> None:
    crossed = builders.quota_crossed()
    event = logic.cloudevent(notices([crossed])[0])
    assert event["specversion"] == "1.0"
    assert event["id"] == crossed.event_id
    assert event["type"] == "dev.govledger.quota.threshold"
    assert event["source"] == f"/govledger/tenants/{builders.TENANT}"
    assert event["time"].endswith("Z") and event["datacontenttype"] == "application/json"
    assert event["data"]["threshold_percent"] == crossed.threshold_percent
    assert "record_hash" not in event["data"] and "producer_id" not in event["data"]
    orjson.dumps(event)  # serialisable as is


def test_slack_message_has_text_and_blocks() -> None:
    message = logic.slack_message(notices([builders.circuit_changed()])[0])
    assert "circuit opened for openai/gpt-4o" in message["text"]
    assert message["blocks"][0]["type"] == "section"


def test_pagerduty_trigger_and_resolve_share_the_dedup_key() -> None:
    opened = builders.escalation_opened(priority="P1")
    decided = builders.escalation_resolved(escalation_id=opened.escalation_id)
    trigger, resolve = (logic.pagerduty_event(n, "R0UT1NGKEY") for n in notices([opened, decided]))
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == opened.event_id
    assert trigger["routing_key"] == "R0UT1NGKEY"
    assert set(trigger["payload"]) >= {
        "summary",
        "severity",
        "source",
        "timestamp",
        "custom_details",
    }
    assert trigger["payload"]["severity"] in {"critical", "error", "warning", "info"}
    assert "payload" not in resolve


# --- signature: what a receiver following the Standard Webhooks spec checks -----------------


def receiver_accepts(secret_b64: str, headers: dict[str, str], body: bytes, now_s: int) -> bool:
    """The receiver's algorithm, written from the spec: base64 HMAC-SHA256 of
    `id.timestamp.body` under the decoded whsec_ key, timestamps within 5 minutes."""
    if abs(now_s - int(headers["webhook-timestamp"])) > 300:
        return False
    key = base64.b64decode(secret_b64.removeprefix("whsec_"))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(part.split(",", 1)[1] == expected for part in headers["webhook-signature"].split())


SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_a_receiver_verifies_the_signature_and_refuses_a_changed_body_or_a_replay() -> None:
    body = b'{"specversion":"1.0"}'
    headers = logic.signed_headers(SECRET, "evt-1", 1_700_000_000, body, "cloudevents")
    assert headers["webhook-id"] == headers["Idempotency-Key"] == "evt-1"
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert receiver_accepts(SECRET, headers, body, 1_700_000_010)
    assert not receiver_accepts(SECRET, headers, body + b" ", 1_700_000_010)
    assert not receiver_accepts(SECRET, headers, body, 1_700_000_000 + 301)  # stale: replay
    assert logic.verify(SECRET, headers, body, 1_700_000_010)
    assert not logic.verify(SECRET, headers, body, 1_700_000_000 + 301)
    assert not logic.verify("whsec_b3RoZXI=", headers, body, 1_700_000_010)


def test_a_plain_secret_signs_with_its_utf8_bytes() -> None:
    expected = hmac.new(b"s3cret", b"id.5.{}", hashlib.sha256).digest()
    assert logic.signature("s3cret", "id", 5, b"{}") == "v1," + base64.b64encode(expected).decode()


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [logic.backoff_s(n, 1.0, 5.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


# --- sealed secrets ----------------------------------------------------------------------


def test_a_sealed_secret_opens_only_for_its_tenant_and_route_under_the_org_root() -> None:
    keyring = Keyring([bytes(range(32))])
    sealed = seal(keyring, "acme", "r1", "whsec_abc")
    assert b"whsec_abc" not in sealed
    assert unseal(keyring, "acme", "r1", sealed) == "whsec_abc"
    for tenant, route_id in (("globex", "r1"), ("acme", "r2")):
        with pytest.raises(SealError):
            unseal(keyring, tenant, route_id, sealed)
    with pytest.raises(SealError):
        unseal(Keyring([bytes(32)]), "acme", "r1", sealed)
    with pytest.raises(SealError):
        unseal(keyring, "acme", "r1", sealed[:-1] + bytes([sealed[-1] ^ 1]))
    rotated = Keyring([bytes(range(32)), bytes(32)])
    assert unseal(rotated, "acme", "r1", sealed) == "whsec_abc"  # older root still opens


def _export_outcome(**overrides: object) -> dict[str, object]:
    outcome: dict[str, object] = {
        "schedule_id": "0190d4f0-0000-7000-8000-0000000000e1",
        "tenant": builders.TENANT,
        "type": "events",
        "format": "csv",
        "description": "weekly <!channel> *bold*",
        "export_id": "0190d4f0-0000-7000-8000-0000000000f1",
        "status": "succeeded",
        "slot_ms": T0,
        "missed": 0,
        "started_at_ms": T0 + 1,
        "finished_at_ms": T0 + 2,
        "rows": 75,
        "manifest_sha256": "ab" * 32,
        "error": None,
        "download_url": "/v1/exports/0190d4f0-0000-7000-8000-0000000000f1/download",
    }
    outcome.update(overrides)
    return outcome


def test_an_export_run_notice_carries_its_outcome_under_an_id_stable_per_run() -> None:
    notice = logic.export_run_notice(_export_outcome(), T0 + 2)
    again = logic.export_run_notice(_export_outcome(), T0 + 9)  # the same run, told again
    later = logic.export_run_notice(_export_outcome(slot_ms=T0 + 60_000), T0 + 60_002)
    assert notice.event_id == again.event_id != later.event_id
    assert (notice.route_event, notice.severity, notice.tenant_id) == (
        "export.completed",
        "info",
        builders.TENANT,
    )
    event = logic.cloudevent(notice)
    assert event["type"] == "dev.govledger.export.completed" and event["id"] == notice.event_id
    assert event["data"] == {
        **_export_outcome(),
        "action": "trigger",
        "dedup_key": notice.event_id,
        "summary": notice.summary,
    }
    # Slack renders the summary: the creator's description (markup) stays out of it.
    slack = logic.slack_message(notice)["text"]
    assert "succeeded" in slack and "75 rows" in slack and "<!channel>" not in slack
    paged = logic.pagerduty_event(notice, "routing-key")
    assert paged["payload"]["custom_details"] == _export_outcome()
    failed = logic.export_run_notice(_export_outcome(status="failed", error="disk full"), T0)
    assert failed.severity == "error" and "failed: disk full" in failed.summary
    org_wide = logic.export_run_notice(_export_outcome(tenant=None), T0)
    assert logic.cloudevent(org_wide)["source"] == "/govledger/org"


def test_an_export_run_goes_to_its_tenants_and_the_orgs_routes_only() -> None:
    notice = logic.export_run_notice(_export_outcome(), T0)
    routes = [route(), route("globex"), route(""), route(events=("quota.threshold",), route_id="q")]
    assert [r.route_id for r in logic.routes_for(notice, routes)] == [
        f"route-{builders.TENANT}",
        "route-org",
    ]
