"""The notifier: its own process (`govledger notifier`, started by `up` as the `notifier`
part), so a slow or failing webhook never holds the pipeline.

It folds the routes from the whole control topic (a TopicTailer, as gateways read keys),
consumes the alerts, escalations and control topics in its own consumer group, and for
each record that makes a notice (streams.notify.logic) delivers it to each route of its
tenant: at least once, with retries and exponential backoff, every attempt published as
a NotificationAttempted record (the sink stores them in the `notifications` table). The
webhook-id of every delivery is the notified record's event id. A delivery that ended is
written to the delivery log (streams.notify.state) before the consumed offsets are
committed, so a restarted notifier neither skips an event nor sends one twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiokafka import TopicPartition

from schemas import authn, codec
from schemas.authn import Keyring
from schemas.group_consumer import GroupConsumer, client_config
from schemas.ids import now_ms, uuid7
from schemas.kafka import TopicTailer, record_of
from schemas.kafka_security import KafkaSecurity
from schemas.notify_records import NotificationAttempted
from schemas.notify_secrets import SealError, unseal_route
from schemas.rdkafka import UNDECODABLE_HEADERS, headers_of
from schemas.records import Event
from schemas.settings import NotifySettings
from schemas.topics import ALERTS, CONTROL, ESCALATIONS, NOTIFICATIONS, RESTORED_HEADER
from schemas.webhook_destinations import AllowList, DestinationRefusedError, destination
from schemas.webhook_sender import Answer
from streams.notify import logic
from streams.notify.logic import Notice, Route
from streams.notify.state import DeliveryLog

log = structlog.get_logger(__name__)

CONTROL_CATCH_UP_S = 5.0
# Under the Faust app id's prefix: in production the notifier logs in as the worker's
# broker user, whose ACLs cover the groups under that prefix (govledger/broker_acls.py).
CONSUMER_GROUP = "govledger-streams-notifier"
# What the delivery log keeps of a final attempt: the unsealed record (the producer seals).
ATTEMPT_FIELDS = frozenset(
    f.name
    for f in dataclasses.fields(NotificationAttempted)
    if f.name not in ("producer_id", "seq", "prev_hash", "record_hash")
)
POLL_MAX_RECORDS = 200


class Sender(Protocol):
    """What delivers one request (schemas.webhook_sender.WebhookSender)."""

    async def post(self, where: Any, body: bytes, headers: dict[str, str]) -> Answer:
        """POST the body; the answer."""
        ...


class AttemptPublisher(Protocol):
    """Where attempts are recorded (a ChainedPublisher as a processor)."""

    async def publish_and_wait(self, topic: str, key: str, record: Any) -> Any:
        """Publish and wait for the broker's acknowledgement."""
        ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently one notice is attempted to one route."""

    max_attempts: int
    backoff_s: float
    backoff_max_s: float

    @classmethod
    def of(cls, settings: NotifySettings) -> RetryPolicy:
        """From GOVLEDGER_NOTIFY_MAX_ATTEMPTS, _BACKOFF_S and _BACKOFF_MAX_S."""
        return cls(
            settings.notify_max_attempts, settings.notify_backoff_s, settings.notify_backoff_max_s
        )


@dataclass(frozen=True, slots=True)
class Delivering:
    """What a delivery needs besides its notice and route: the keyring that opens the
    route's sealed URL and secret, the sender, the org's allow-list, the retry policy."""

    keyring: Keyring
    sender: Sender
    allow: AllowList
    retry: RetryPolicy


RecordAttempt = Callable[[NotificationAttempted], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notice to one route, sealed secret opened."""

    notice: Notice
    route: Route


class Notifier:
    """Routes folded, notices delivered; the consumer loop is `run`."""

    def __init__(
        self,
        settings: NotifySettings,
        publisher: AttemptPublisher,
        sender: Sender,
        keyring: Keyring,
        state: DeliveryLog,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock_s: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.sender = sender
        self.keyring = keyring
        self.state = state
        self.allow = AllowList.parse(settings.notify_allowed_hosts, settings.notify_private_hosts)
        self.retry = RetryPolicy.of(settings)
        self.routes: dict[str, Route] = {}
        self._sleep = sleep
        self._clock_s = clock_s

    # --- routes -----------------------------------------------------------------------

    def apply_control(self, message: Any) -> None:
        """Fold one control record into the routes (the tailer's handler)."""
        try:
            event = authn.decode_message(message)
        except codec.DecodeError:
            return  # the sink dead-letters it; a view only skips it
        self.routes = logic.evolve(self.routes, event)

    # --- records ----------------------------------------------------------------------

    def deliveries_of(self, record: Event) -> list[Delivery]:
        """The deliveries one record makes that have not ended yet (and the incidents it
        opens or closes, remembered)."""
        notice, incidents = logic.notice_of(record, self.state.incidents)
        self.state.set_incidents(incidents)
        if notice is None:
            return []
        return [
            Delivery(notice, route)
            for route in logic.routes_for(notice, self.routes.values())
            if not self.state.is_finished(route.route_id, notice.event_id)
        ]

    async def handle(self, records: list[Event]) -> None:
        """Deliver what these records make, every delivery of them at once; returns when
        each ended (delivered, given up or refused) and is written down."""
        deliveries = [d for record in records for d in self.deliveries_of(record)]
        if deliveries:
            await asyncio.gather(*(self.deliver(d) for d in deliveries))

    async def deliver(self, delivery: Delivery) -> None:
        """Attempt until delivered or out of attempts; record every attempt. The final one
        is written to the delivery log before its record is published."""
        final = await attempt_delivery(
            delivery.notice,
            delivery.route,
            Delivering(self.keyring, self.sender, self.allow, self.retry),
            self._publish,
            sleep=self._sleep,
            clock_s=self._clock_s,
        )
        fields = {k: v for k, v in final.to_avro().items() if k in ATTEMPT_FIELDS}
        self.state.finish(delivery.route.route_id, delivery.notice.event_id, fields)
        await self._publish(final)
        self.state.published(delivery.route.route_id, delivery.notice.event_id)

    async def publish_unpublished(self) -> None:
        """Publish the final attempts a killed notifier wrote down but did not publish."""
        for (route_id, event_id), fields in list(self.state.unpublished.items()):
            record = NotificationAttempted(**fields)  # type: ignore[arg-type]
            await self._publish(record)
            self.state.published(route_id, event_id)

    async def _publish(self, record: NotificationAttempted) -> None:
        await self.publisher.publish_and_wait(NOTIFICATIONS.name, record.tenant_id, record)


def attempt_record(
    notice: Notice, route: Route, attempt: int, status: str, answer: Answer, *, host: str
) -> NotificationAttempted:
    """The record of one attempt (unsealed: its publisher or writer seals it)."""
    log.info(
        "notification attempt",
        route_id=route.route_id,
        event_id=notice.event_id,
        attempt=attempt,
        status=status,
        http_status=answer.http_status,
    )
    return NotificationAttempted(
        event_id=uuid7(),
        event_type=NotificationAttempted.event_type_name,
        occurred_at=now_ms(),
        tenant_id=notice.tenant_id,
        route_id=route.route_id,
        source_event_id=notice.event_id,
        source_event_type=notice.record.event_type,
        action=notice.action,
        format=route.format,
        attempt=attempt,
        status=status,
        http_status=answer.http_status,
        latency_ms=answer.latency_ms,
        error=answer.error,
        destination_host=host,
    )


async def attempt_delivery(
    notice: Notice,
    route: Route,
    how: Delivering,
    on_failed: RecordAttempt,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock_s: Callable[[], float] = time.time,
) -> NotificationAttempted:
    """Attempt one notice to one route until delivered, refused or out of attempts, with
    backoff between attempts. Each failed attempt that will be retried goes to
    `on_failed`; the final one (delivered, gave_up or refused) is returned, for the caller
    to record (the notifier writes it to its delivery log first). The destination is
    checked again at every attempt: the allow-list may have changed since."""
    try:
        url, secret = unseal_route(
            how.keyring, route.tenant_id, route.route_id, route.secret_sealed
        )
    except SealError as exc:
        return attempt_record(
            notice, route, 1, "refused", Answer(0, f"secret: {exc}", 0.0), host=""
        )
    attempts = how.retry.max_attempts
    for attempt in range(1, attempts + 1):
        try:
            where = destination(url, how.allow)
        except DestinationRefusedError as exc:
            return attempt_record(
                notice, route, attempt, "refused", Answer(0, str(exc), 0.0), host=""
            )
        body, headers = logic.signed_request(notice, route.format, secret, int(clock_s()))
        answer = await how.sender.post(where, body, headers)
        if answer.delivered or attempt == attempts:
            status = "delivered" if answer.delivered else "gave_up"
            return attempt_record(notice, route, attempt, status, answer, host=where.host)
        await on_failed(attempt_record(notice, route, attempt, "failed", answer, host=where.host))
        await sleep(logic.backoff_s(attempt, how.retry.backoff_s, how.retry.backoff_max_s))
    raise AssertionError("unreachable: the last attempt returns")


async def deliver_once(
    route: Route, notice: Notice, keyring: Keyring, sender: Sender, allow: AllowList
) -> Answer:
    """One signed delivery of a notice to a route, now, not recorded and not retried (a
    part that notifies a route of its own outcome with retries and records, as the sink
    does for scheduled exports, uses `attempt_delivery`: govledger/export_notices.py)."""
    try:
        url, secret = unseal_route(keyring, route.tenant_id, route.route_id, route.secret_sealed)
        where = destination(url, allow)
    except (SealError, DestinationRefusedError) as exc:
        return Answer(0, str(exc), 0.0)
    body, headers = logic.signed_request(notice, route.format, secret, int(time.time()))
    return await sender.post(where, body, headers)


def _restored(headers: list[tuple[str, bytes | None]]) -> bool:
    return any(key == RESTORED_HEADER for key, _ in headers)


async def run(notifier: Notifier, stop: asyncio.Event) -> None:
    """Fold the routes, then consume and deliver until `stop`; offsets are committed only
    after a batch's deliveries ended and were written down."""
    settings = notifier.settings
    tailer = TopicTailer(settings.kafka_bootstrap, [CONTROL.name], notifier.apply_control)
    await tailer.start()
    # On librdkafka (as the worker's intake): a record whose headers cannot be read is
    # skipped, where aiokafka's poll raised on it at every restart.
    config = client_config(
        settings.kafka_bootstrap,
        group_id=CONSUMER_GROUP,
        client_id="govledger-notifier",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        fetch_max_wait_ms=100,
        security=KafkaSecurity.of_process(),
    )
    consumer = GroupConsumer(config)
    try:
        await asyncio.wait_for(tailer.caught_up.wait(), timeout=60)
        consumer.subscribe([ALERTS.name, ESCALATIONS.name, CONTROL.name])
        await consumer.start()
        control = await consumer.partitions_of(CONTROL.name)
        await notifier.publish_unpublished()
        log.info("notifier ready", routes=len(notifier.routes))
        while not stop.is_set():
            batches = await consumer.getmany(
                timeout_ms=200, max_records=POLL_MAX_RECORDS, at_hand=True
            )
            if not batches:
                continue
            await _control_caught_up(tailer, consumer, control)
            records = []
            for messages in batches.values():
                for message in messages:
                    headers = headers_of(message)
                    if headers is None:
                        log.warning(
                            "record skipped", topic=message.topic(), error=UNDECODABLE_HEADERS
                        )
                        continue
                    if _restored(headers):
                        continue  # re-published from the store: notified when it happened
                    try:
                        records.append(authn.decode_message(record_of(message, headers)))
                    except codec.DecodeError as exc:
                        log.warning("record skipped", topic=message.topic(), error=str(exc))
            records.sort(key=lambda r: r.occurred_at)
            await notifier.handle(records)
            await consumer.commit({tp: ms[-1].offset() + 1 for tp, ms in batches.items()})
    finally:
        await consumer.stop()
        await tailer.stop()


async def _control_caught_up(
    tailer: TopicTailer, consumer: GroupConsumer, control: list[TopicPartition]
) -> None:
    """Wait (a little) until the routes include every control record published so far: a
    route added just before an alert must see that alert. (The tailer's positions: past a
    record it skipped too, or a hostile one would hold every batch.)"""
    ends = await consumer.end_offsets(control)
    deadline = time.monotonic() + CONTROL_CATCH_UP_S
    while time.monotonic() < deadline:
        if all(
            tailer.positions.get((tp.topic, tp.partition), 0) >= end for tp, end in ends.items()
        ):
            return
        await asyncio.sleep(0.02)
    log.warning("routes lag the control topic; delivering with what is folded")
