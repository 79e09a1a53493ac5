"""Each service's process: gateway, sink (store owner + query API), stream worker."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import structlog
from aiohttp import web

from gateway.admin.principals import principal_for
from gateway.errors import GatewayError
from gateway.policy.baseline import floor_retention
from gateway.policy.pack import AuditPolicy
from gateway.server import GatewayProcess
from gateway.views import LocalViews
from govledger.admin_token import resolve_admin_token
from govledger.export_notices import for_sink
from replay.restore import broker_is_empty, restore
from replay.store_verify import store_verification
from schemas import authn
from schemas.http_errors import JsonErrorAppRunner, handler_args
from schemas.ids import new_producer_id, now_ms
from schemas.kafka import TopicTailer, ensure_topics
from schemas.publisher import ChainedPublisher
from schemas.settings import (
    CommonSettings,
    GatewaySettings,
    NotifySettings,
    SinkSettings,
    StreamSettings,
    load,
)
from schemas.topics import CONTROL
from sinks.access import AccessDeniedError, Authenticate, Reader
from sinks.consume_process import ConsumeProcess
from sinks.exports.scheduler import ScheduleLimits
from sinks.query_api import retention_loop
from sinks.query_app import QueryApi
from sinks.retention import retention_by_tenant
from sinks.store import Store
from sinks.stored import StoredNotices
from sinks.verify_jobs import VerifyJobs
from sinks.writer import SinkWriter
from streams.escalations import logic as escalation_rules

log = structlog.get_logger(__name__)

# Longest the sink writes what is left at a stop (under `up`'s grace before SIGKILL): a
# store that is down must not hold the stop; what is unwritten stays on the broker.
SINK_DRAIN_LIMIT_S = 20.0


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


def install_keyring(settings: CommonSettings) -> None:
    """Load (at first start: make) the org keyring; this process's publishers sign with
    it and its consumers verify with it (see schemas.authn)."""
    keyring = authn.resolve_keyring(settings.data_path, settings.root_secret_file, create=True)
    authn.install(keyring)
    log.info("record authentication on", root_key_id=keyring.signing_id, roots=len(keyring.ids))


def run(coroutine: Any) -> None:
    """Run a service's main coroutine on uvloop."""
    import uvloop

    uvloop.run(coroutine)


async def gateway_main(settings: GatewaySettings) -> None:
    """Serve until SIGINT/SIGTERM."""
    stop = _stop_event()
    token = resolve_admin_token(settings, create=True)
    install_keyring(settings)
    # The listing routes and times escalations as the escalations processor does: with
    # the stream processors' escalation settings, read here where the process starts.
    escalations = escalation_rules.config_of(load(StreamSettings))
    process = GatewayProcess(settings, token, escalation_config=escalations)
    await process.start()
    try:
        await stop.wait()
    finally:
        await process.stop()


def query_readers(views: LocalViews, admin_token: str) -> Authenticate:
    """The query API's readers: the admin API's rule over the keys folded from the
    control topic (org admins and the token: every tenant; tenant admins: their own)."""

    def authenticate(presented: str) -> Reader:
        try:
            principal = principal_for(presented, admin_token, views, now_ms())
        except GatewayError as exc:
            raise AccessDeniedError(exc.kind.status, exc.kind.code, exc.message) from None
        return Reader(principal.identity, principal.tenant_id)

    return authenticate


def retention_days(views: LocalViews) -> dict[str, int]:
    """Retention per tenant from the newest version of each of its published packs,
    never below the org baseline's floor (a pack published before the floor was raised
    says less)."""
    return floor_retention(
        retention_by_tenant(
            (tenant_id, step.policy.retention_days)
            for (tenant_id, _), published in views.packs.items()
            for step in published.pack.steps
            if isinstance(step.policy, AuditPolicy)
        ),
        views.baseline.baseline.retention_floor_days,
    )


def query_runner(settings: SinkSettings, app: web.Application) -> web.AppRunner:
    """The query API's runner: JSON for what aiohttp's HTTP parser refuses too, under the
    configured header and request-line limits (see schemas.http_errors)."""
    return JsonErrorAppRunner(
        app,
        access_log=None,
        **handler_args(
            max_header_bytes=settings.query_max_header_bytes,
            max_headers=settings.max_header_count,
            max_url_bytes=settings.max_url_bytes,
        ),
    )


async def sink_main(settings: SinkSettings) -> None:
    """Migrate, restore an empty broker, serve queries and write until SIGINT/SIGTERM."""
    stop = _stop_event()
    token = resolve_admin_token(settings, create=True)
    install_keyring(settings)
    store = Store(settings.effective_clickhouse_dsn, cluster=settings.store_cluster)
    await store.run(store.migrate)
    await ensure_topics(settings.kafka_bootstrap, settings.topic_partitions)
    if settings.restore_on_start and await broker_is_empty(settings.kafka_bootstrap):
        await restore(store, settings.kafka_bootstrap, new_producer_id("restore"))
    dlq = ChainedPublisher(settings.kafka_bootstrap, new_producer_id("sink"), role="sink")
    await dlq.start()
    # Keys and policy packs, read from the control topic as the gateways read them.
    views = LocalViews()
    tailer = TopicTailer(settings.kafka_bootstrap, [CONTROL.name], views.apply)
    await tailer.start()
    await asyncio.wait_for(tailer.caught_up.wait(), timeout=60)
    # Tells outboxes (gateways, admin API) what each committed batch stored.
    notices = StoredNotices(settings.kafka_bootstrap, new_producer_id("sink"))
    await notices.start()
    writer = SinkWriter(settings, store, dlq, on_committed=notices)
    # Or the consuming in a child process that feeds this one (it sends its own notices).
    feed = None
    if settings.sink_consume_process:
        writer.on_committed = None
        feed = ConsumeProcess(settings, writer, notices=True)
    # A scheduled export's finished run, notified to its routes (docs/notifications.md).
    keyring = authn.installed()
    assert keyring is not None, "install_keyring installed one"
    # (A lambda: each route change replaces the views' dict.)
    routes = lambda: views.notify_routes.values()  # noqa: E731, PLW0108
    export_notices = for_sink(settings, load(NotifySettings), store, routes, keyring)
    await export_notices.start()
    api = QueryApi(
        store,
        query_readers(views, token),
        lambda: _stats(writer),
        settings.query_max_rows,
        consumer_lag=writer.consumer_lag if feed is None else feed.consumer_lag,
        retention_days=lambda: retention_days(views),
        exports_dir=settings.data_path / "exports",
        schedule_limits=ScheduleLimits(
            min_interval_s=settings.export_schedule_min_interval_s,
            max_per_tenant=settings.export_schedules_max_per_tenant,
            runs_kept=settings.export_schedule_runs_kept,
        ),
        metrics=writer.metrics,
        on_schedule_run_finished=export_notices,
        # `POST /v1/audit/verify`: `audit verify` run here, with the installed keyring.
        audit_verify=VerifyJobs(
            store_verification(store),
            timeout_s=settings.audit_verify_timeout_s,
            runs_kept=settings.audit_verify_runs_kept,
        ),
    )
    writer.metrics.watch_writer(writer)
    runner = query_runner(settings, api.application())
    await runner.setup()
    await (writer if feed is None else feed).start()
    task = asyncio.create_task((writer if feed is None else feed).run())
    retention = asyncio.create_task(
        retention_loop(store, lambda: retention_days(views), settings.retention_interval_s)
    )
    await web.TCPSite(runner, settings.query_host, settings.query_port).start()
    log.info("sink ready", query_url=settings.query_url, dsn=store.dsn)
    try:
        done, _ = await asyncio.wait(
            [task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()  # the writer died: surface why
        if feed is not None:  # the child writes what is left, then `run` returns
            await feed.request_stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=SINK_DRAIN_LIMIT_S)
                task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Stopped on purpose: the producers stopped first, so write what is left.
        try:
            if feed is None:
                await asyncio.wait_for(writer.drain(), timeout=SINK_DRAIN_LIMIT_S)
        except TimeoutError:
            log.warning("sink stopped before writing everything", store=writer.stats.store.state())
    finally:
        for running in (task, retention):
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        await writer.stop()
        if feed is not None:
            await feed.stop()
        await notices.stop()
        await tailer.stop()
        await runner.cleanup()
        await export_notices.stop()
        await dlq.stop()
        store.close()


def _stats(writer: SinkWriter) -> dict[str, Any]:
    stats = writer.stats
    return {
        "rows_inserted": stats.rows_inserted,
        "dead_lettered": stats.dead_lettered,
        "last_insert_ms": stats.last_insert_ms,
        "commit_failures": stats.commit_failures,
        "store": stats.store.state(),
    }


def worker_main(settings: StreamSettings) -> None:
    """Run the Faust worker with every domain agent (blocks; Faust handles signals)."""
    import faust

    from streams import checkpoints, commit_watch, intake
    from streams.app import create_app
    from streams.breakers import agent as breakers_agent
    from streams.checkpoints import Checkpoints
    from streams.escalations import agent as escalations_agent
    from streams.quotas import agent as quotas_agent
    from streams.sla import agent as sla_agent
    from streams.wallets import agent as wallets_agent

    install_keyring(settings)
    app = create_app(settings)
    # Every domain seals its outputs into a chain of its own; all are checkpointed.
    chains = Checkpoints()
    domains = [
        wallets_agent.register(
            app, settings.kafka_bootstrap, chains.chain(new_producer_id("streams"))
        ),
        breakers_agent.register(app, settings, chains.chain(new_producer_id("streams-breakers"))),
        sla_agent.register(app, settings, chains.chain(new_producer_id("streams-sla"))),
    ]
    quotas_agent.register(app, chains.chain(new_producer_id("streams-quotas")))
    escalations_agent.register(app, settings, chains.chain(new_producer_id("streams-escalations")))
    send_checkpoints = checkpoints.register(app, chains, settings.worker_checkpoint_interval_s)
    stall_s = settings.worker_commit_stall_s
    commit_watch.register(app, interval_s=max(stall_s / 4, 1.0), stall_after_s=stall_s)

    async def checkpoint_at_stop() -> None:
        await send_checkpoints("stop")

    intake_chain = chains.chain(new_producer_id("streams-intake"))
    intake.register(app, settings, intake_chain, domains, on_stop=checkpoint_at_stop)
    # Faust would replace the root logger's handlers with its own colour format and send
    # stdout and stderr into a logger: it leaves logging alone, so its lines (and mode's,
    # aiokafka's) go through govledger.logs' root handler in the format of the others.
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=False)
    # Faust drops its terminal spinner when it sets up logging below WARN; it does not set
    # logging up here, so drop it too: it writes cursor escapes into the log.
    worker.spinner = None
    worker.execute_from_commandline()


async def notifier_main(settings: NotifySettings) -> None:
    """Deliver alerts and escalations to the routes tenants set, until SIGINT/SIGTERM."""
    from schemas.webhook_sender import WebhookSender, sender_kwargs
    from streams.notify.notifier import Notifier
    from streams.notify.notifier import run as run_notifier
    from streams.notify.state import DeliveryLog

    stop = _stop_event()
    install_keyring(settings)
    keyring = authn.installed()
    assert keyring is not None, "install_keyring installed one"
    await ensure_topics(settings.kafka_bootstrap, settings.topic_partitions)
    publisher = ChainedPublisher(
        settings.kafka_bootstrap, new_producer_id("notifier"), role="processor"
    )
    await publisher.start()
    sender = WebhookSender(**sender_kwargs(settings))
    state = DeliveryLog(
        settings.data_path / "notifier" / "deliveries.jsonl", settings.notify_dedup_entries
    )
    notifier = Notifier(settings, publisher, sender, keyring, state)
    task = asyncio.create_task(run_notifier(notifier, stop))
    try:
        done, _ = await asyncio.wait(
            [task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()  # the notifier died: surface why
        stop.set()
        await asyncio.wait_for(task, timeout=SINK_DRAIN_LIMIT_S)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sender.close()
        await publisher.stop()
        state.close()
