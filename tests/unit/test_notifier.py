"""The notifier's delivery with a stand-in sender and publisher: retries with backoff
until the third attempt succeeds, every attempt recorded; a refused destination is not
contacted; after a restart on the same delivery log nothing is sent twice, and an
incident opened before the restart is resolved with the opening event id after it."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.authn import Keyring
from schemas.notify_records import NotificationAttempted
from schemas.notify_secrets import seal_route
from schemas.settings import NotifySettings, load
from schemas.webhook_destinations import AllowList
from schemas.webhook_sender import Answer
from streams.notify import logic
from streams.notify.notifier import Notifier, deliver_once
from streams.notify.state import DeliveryLog
from tests.unit import builders

KEYRING = Keyring([bytes(range(32))])
SETTINGS = load(
    NotifySettings,
    {},
    notify_allowed_hosts="hooks.example.com",
    notify_max_attempts=4,
    notify_backoff_s=0.5,
)


class Publisher:
    def __init__(self) -> None:
        self.records: list[NotificationAttempted] = []

    async def publish_and_wait(self, topic: str, key: str, record: Any) -> Any:
        self.records.append(record)
        return record


class Sender:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.sent: list[tuple[str, dict[str, str], bytes]] = []

    async def post(self, where: Any, body: bytes, headers: dict[str, str]) -> Answer:
        self.sent.append((where.url, headers, body))
        status = self.statuses.pop(0) if self.statuses else 200
        return Answer(status, "" if status < 300 else f"HTTP {status}", 3.0)


def notifier(tmp_path: Path, sender: Sender, sleeps: list[float]) -> tuple[Notifier, Publisher]:
    publisher = Publisher()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    state = DeliveryLog(tmp_path / "deliveries.jsonl", 100)
    made = Notifier(
        SETTINGS, publisher, sender, KEYRING, state, sleep=sleep, clock_s=lambda: 1_700_000_000.0
    )
    return made, publisher


def add_route(
    notifier: Notifier,
    url: str = "https://hooks.example.com/h",
    tenant: str = builders.TENANT,
    events: tuple[str, ...] = ("quota.threshold",),
) -> str:
    """A route of the tenant ('' : the org's) as the notifier folds it."""
    added = builders.notify_route_added(
        tenant_id=tenant,
        route_id=f"route-{tenant or 'org'}",
        events=events,
        url=url,
        occurred_at=builders.T0 - 1,
    )
    added = replace(added, secret_sealed=seal_route(KEYRING, tenant, added.route_id, url, "s3cret"))
    notifier.routes = {**notifier.routes, added.route_id: _routes_of(added)}
    return added.route_id


def _routes_of(added: Any) -> Any:
    return logic.evolve({}, added)[added.route_id]


async def test_a_receiver_failing_twice_gets_the_delivery_on_the_third_attempt(
    tmp_path: Path,
) -> None:
    sleeps: list[float] = []
    sender = Sender([503, 500, 200])
    made, publisher = notifier(tmp_path, sender, sleeps)
    route_id = add_route(made)
    crossed = builders.quota_crossed()
    await made.handle([crossed])
    assert [r.status for r in publisher.records] == ["failed", "failed", "delivered"]
    assert [r.attempt for r in publisher.records] == [1, 2, 3]
    assert [r.http_status for r in publisher.records] == [503, 500, 200]
    assert {(r.route_id, r.source_event_id) for r in publisher.records} == {
        (route_id, crossed.event_id)
    }
    assert sleeps == [0.5, 1.0]
    # every attempt carries the same idempotency key: the source event id
    assert {headers["webhook-id"] for _, headers, _ in sender.sent} == {crossed.event_id}
    assert orjson.loads(sender.sent[0][2])["id"] == crossed.event_id


async def test_attempts_end_with_gave_up(tmp_path: Path) -> None:
    made, publisher = notifier(tmp_path, Sender([500] * 9), [])
    add_route(made)
    await made.handle([builders.quota_crossed()])
    assert [r.status for r in publisher.records] == ["failed", "failed", "failed", "gave_up"]


async def test_a_destination_no_longer_allowed_is_refused_without_a_request(tmp_path: Path) -> None:
    sender = Sender([])
    made, publisher = notifier(tmp_path, sender, [])
    add_route(made, url="https://elsewhere.example.com/h")
    await made.handle([builders.quota_crossed()])
    assert sender.sent == []
    assert [(r.status, r.http_status) for r in publisher.records] == [("refused", 0)]


async def test_after_a_restart_nothing_is_sent_twice_and_open_incidents_resolve(
    tmp_path: Path,
) -> None:
    crossed, opened = builders.quota_crossed(), builders.circuit_changed()
    first = Sender([])
    made, _ = notifier(tmp_path, first, [])
    add_route(made)
    add_route(made, tenant="", events=("circuit.opened",))
    await made.handle([crossed, opened])
    assert sorted(h["webhook-id"] for _, h, _ in first.sent) == sorted(
        [crossed.event_id, opened.event_id]
    )
    made.state.close()

    again = Sender([])
    restarted, publisher = notifier(tmp_path, again, [])
    add_route(restarted)
    add_route(restarted, tenant="", events=("circuit.opened",))
    closed = replace(
        builders.circuit_changed(occurred_at=builders.T0 + 9, before="open", after="closed"),
        event_type="circuit.closed",
    )
    await restarted.handle([crossed, opened, closed])  # redelivered, then the close
    assert [h["webhook-id"] for _, h, _ in again.sent] == [closed.event_id]
    body = orjson.loads(again.sent[0][2])
    assert body["type"] == "dev.govledger.circuit.closed"
    assert body["data"]["dedup_key"] == opened.event_id
    assert [r.action for r in publisher.records] == ["resolve"]


class Killed(Exception):
    """The process died here."""


class DyingPublisher(Publisher):
    async def publish_and_wait(self, topic: str, key: str, record: Any) -> Any:
        raise Killed


async def test_a_final_attempt_unpublished_at_a_kill_is_published_at_the_next_start(
    tmp_path: Path,
) -> None:
    made, _ = notifier(tmp_path, Sender([]), [])
    made.publisher = DyingPublisher()
    add_route(made)
    crossed = builders.quota_crossed()
    with pytest.raises(Killed):
        await made.handle([crossed])
    made.state.close()
    sender = Sender([])
    restarted, publisher = notifier(tmp_path, sender, [])
    add_route(restarted)
    await restarted.publish_unpublished()
    (record,) = publisher.records
    assert (record.source_event_id, record.status, record.http_status) == (
        crossed.event_id,
        "delivered",
        200,
    )
    await restarted.handle([crossed])  # redelivered: not sent again, not recorded again
    assert sender.sent == [] and len(publisher.records) == 1
    restarted.state.close()
    assert DeliveryLog(tmp_path / "deliveries.jsonl", 100).unpublished == {}


async def test_deliver_once_sends_any_record_signed_or_refuses_a_destination() -> None:
    route_id = "route-x"
    route = logic.Route(
        route_id,
        builders.TENANT,
        ("export.completed",),
        "https://hooks.example.com/…",
        "cloudevents",
        seal_route(KEYRING, builders.TENANT, route_id, "https://hooks.example.com/h", "s3cret"),
        builders.T0,
        "admin",
    )
    record = builders.quota_crossed()
    notice = logic.notice_for(record, "export.completed", "weekly export done")
    sender = Sender([])
    answer = await deliver_once(route, notice, KEYRING, sender, notifier_allow())
    assert answer.delivered and sender.sent[0][1]["webhook-id"] == record.event_id
    assert logic.verify("s3cret", sender.sent[0][1], sender.sent[0][2], int(time.time()))
    elsewhere = replace(
        route,
        secret_sealed=seal_route(
            KEYRING, builders.TENANT, route_id, "https://elsewhere.example.com/h", "s3cret"
        ),
    )
    refused = await deliver_once(elsewhere, notice, KEYRING, sender, notifier_allow())
    assert refused.http_status == 0 and len(sender.sent) == 1


def notifier_allow() -> AllowList:
    return AllowList.parse(SETTINGS.notify_allowed_hosts)
