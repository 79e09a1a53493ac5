"""A scheduled export's finished run (succeeded, failed or skipped) notified to the routes
that subscribe to `export.completed`: the sink's `on_run_finished` hook of its schedules
(sinks/exports/scheduler.py). A tenant route gets its own tenant's runs, an org route
every tenant's and the org-wide schedules' (streams.notify.logic.routes_for, the
notifier's rule).

Where the delivery happens, and why in the sink: the notifier consumes alerts,
escalations and control, and only registered producers write those topics; the sink's
broker user and record role may write dead letters, checkpoints and stored notices only
(govledger/broker_acls.py, schemas.authn.ROLES_BY_TOPIC). Publishing run records for the
notifier would widen the sink's rights on the broker for one message a run. The sink
already holds what a delivery needs: the routes (its LocalViews folds the control topic),
the org root (it verifies records with it; routes' URLs and secrets are sealed under it)
and the store (where the attempts go: sinks/notification_rows.py).

The hook never holds the schedules: it picks the routes and returns; each delivery runs
in a task of its own, with the notifier's retries and backoff (streams.notify.notifier.
attempt_delivery, the one implementation), its destination checked against the org's
allow-list at every attempt, redirects never followed, every attempt stored. At most
GOVLEDGER_NOTIFY_EXPORT_DELIVERIES_MAX deliveries run at once; one more is recorded
`refused` rather than queued without bound. A delivery under way when the sink stops is
not finished by the next sink (the run's notice is at most once across a sink restart;
its webhook-id is stable per run, so a receiver dedupes a resend)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

import structlog

from schemas.authn import Keyring
from schemas.ids import new_producer_id, now_ms
from schemas.settings import NotifySettings, SinkSettings
from schemas.webhook_destinations import AllowList
from schemas.webhook_sender import Answer, WebhookSender, sender_kwargs
from sinks.exports.schedules import ExportSchedule, ScheduleRun, run_outcome
from sinks.notification_rows import AttemptRows, RowStore
from sinks.store_faults import Backoff
from streams.notify import logic
from streams.notify.logic import Notice, Route
from streams.notify.notifier import Delivering, RetryPolicy, attempt_delivery, attempt_record

log = structlog.get_logger(__name__)

# Attempts queued for the store per delivery allowed at once (a delivery queues one attempt
# at a time, then waits its backoff or ends).
ROWS_QUEUED_PER_DELIVERY = 4
BUSY = "too many deliveries at once (GOVLEDGER_NOTIFY_EXPORT_DELIVERIES_MAX)"


class ExportRunNotices:
    """The hook: `await notices(schedule, run)` starts the run's deliveries and returns."""

    def __init__(
        self,
        routes: Callable[[], Iterable[Route]],
        how: Delivering,
        rows: AttemptRows,
        max_deliveries: int,
        *,
        clock_ms: Callable[[], int] = now_ms,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        assert max_deliveries > 0, "deliveries at once are bounded"
        self.routes = routes
        self.how = how
        self.rows = rows
        self.max_deliveries = max_deliveries
        self._clock_ms = clock_ms
        self._sleep = sleep
        self._close = close
        self._deliveries: set[asyncio.Task[None]] = set()

    async def __call__(self, schedule: ExportSchedule, run: ScheduleRun) -> None:
        """Start delivering the run's notice to each route subscribed to it."""
        at_ms = run.finished_at_ms if run.finished_at_ms is not None else self._clock_ms()
        notice = logic.export_run_notice(run_outcome(schedule, run), at_ms)
        for route in logic.routes_for(notice, self.routes()):
            if len(self._deliveries) >= self.max_deliveries:
                busy = Answer(0, BUSY, 0.0)
                await self.rows.record(attempt_record(notice, route, 1, "refused", busy, host=""))
                continue
            task = asyncio.create_task(self._deliver(notice, route), name="export-notice")
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, notice: Notice, route: Route) -> None:
        try:
            final = await attempt_delivery(
                notice, route, self.how, self.rows.record, sleep=self._sleep
            )
            await self.rows.record(final)
        except Exception:  # one delivery's bug must not reach the others
            log.exception("export notice failed", route_id=route.route_id)

    async def settled(self) -> None:
        """Wait until every delivery started so far has ended and its attempts are stored."""
        while self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)
        await self.rows.flush()

    async def start(self) -> None:
        """Start storing attempts."""
        await self.rows.start()

    async def stop(self) -> None:
        """Cancel the deliveries under way (their last stored attempt says how far each
        got), stop storing, close the sender."""
        for task in list(self._deliveries):
            task.cancel()
        for task in list(self._deliveries):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.rows.stop()
        if self._close is not None:
            await self._close()


def for_sink(
    sink: SinkSettings,
    notify: NotifySettings,
    store: RowStore,
    routes: Callable[[], Iterable[Route]],
    keyring: Keyring,
) -> ExportRunNotices:
    """The sink's hook: the notifier's allow-list, timeout and retries (GOVLEDGER_NOTIFY_*),
    the sink's store patience (GOVLEDGER_SINK_STORE_RETRY_*), a chain of its own."""
    sender = WebhookSender(**sender_kwargs(notify))
    allow = AllowList.parse(notify.notify_allowed_hosts, notify.notify_private_hosts)
    rows = AttemptRows(
        store,
        new_producer_id("sink"),
        ROWS_QUEUED_PER_DELIVERY * notify.notify_export_deliveries_max,
        Backoff(sink.sink_store_retry_base_ms, sink.sink_store_retry_max_ms),
        keyring=keyring,
    )
    how = Delivering(keyring, sender, allow, RetryPolicy.of(notify))
    return ExportRunNotices(
        routes, how, rows, notify.notify_export_deliveries_max, close=sender.close
    )
