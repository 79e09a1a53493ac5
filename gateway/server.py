"""Assemble and run one gateway process."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from gateway.admin.api import AdminApi
from gateway.anthropic_shape import COUNT_TOKENS_PATH, MESSAGES_API, MESSAGES_PATH
from gateway.call_record import CHAT_API
from gateway.catalogue import azure_deployments, build_catalogue, provider_models
from gateway.early_shed import EarlyShed
from gateway.embeddings import EMBEDDINGS_API
from gateway.errors import HEADERS_TOO_LARGE, error_response
from gateway.loop_lag import lag_sampling
from gateway.messages_endpoint import count_tokens, messages
from gateway.pipeline import CALL_PATHS, CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH, Gateway
from gateway.processes import metrics_port, shares_port
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.azure import AzureOpenAIProvider
from gateway.providers.base import Provider
from gateway.providers.compat_variants import mistral_provider, ollama_provider
from gateway.providers.openai_compat import OpenAICompatProvider
from gateway.providers.sim import SimProvider
from gateway.responses_api import RESPONSES_API, RESPONSES_PATH, responses_handler
from gateway.shed_protocol import EARLY_SHED, SheddingAppRunner
from gateway.text_completions import COMPLETIONS_API
from gateway.tracing import tracing_from_env
from gateway.views import LocalViews
from schemas.access_log import access_lines
from schemas.authn import Role
from schemas.confirmations import ConfirmationFeed
from schemas.http_errors import JsonErrorAppRunner, handler_args, header_bytes, json_errors
from schemas.ids import new_producer_id
from schemas.kafka import TopicTailer
from schemas.outbox_publisher import OutboxPublisher
from schemas.settings import GatewaySettings
from schemas.topics import BREAKER_STATE, CONTROL, ESCALATIONS, WALLET_STATE
from streams.escalations.logic import EscalationConfig

log = structlog.get_logger(__name__)

# The calls the HTTP server may shed as it parses them (gateway/shed_protocol.py): the
# paths whose handler is the call pipeline's, and each one's API.
SHED_APIS = {
    CHAT_PATH: CHAT_API,
    EMBEDDINGS_PATH: EMBEDDINGS_API,
    COMPLETIONS_PATH: COMPLETIONS_API,
    RESPONSES_PATH: RESPONSES_API,
    MESSAGES_PATH: MESSAGES_API,
}


def build_providers(settings: GatewaySettings) -> dict[str, Provider]:
    """The provider adapters this gateway's settings enable."""
    providers: dict[str, Provider] = {
        "sim": SimProvider(
            latency_ms=settings.sim_latency_ms,
            error_rate=settings.sim_error_rate,
            chunk_tokens=settings.sim_chunk_tokens,
            completion_tokens=settings.sim_completion_tokens,
        )
    }
    timeout_s = settings.upstream_timeout_s
    configured = provider_models(settings)
    if "openai" in configured:
        providers["openai"] = OpenAICompatProvider(
            name="openai",
            base_url=settings.upstream_base_url,
            api_key=settings.upstream_api_key,
            timeout_s=timeout_s,
        )
    if "anthropic" in configured:
        providers["anthropic"] = AnthropicProvider(
            name="anthropic",
            api_key=settings.anthropic_api_key,
            base_url=settings.anthropic_base_url,
            timeout_s=timeout_s,
        )
    if "azure" in configured:
        providers["azure"] = AzureOpenAIProvider(
            name="azure",
            endpoint=settings.azure_endpoint,
            api_key=settings.azure_api_key,
            api_version=settings.azure_api_version,
            deployments=azure_deployments(settings.azure_deployments),
            timeout_s=timeout_s,
        )
    if "mistral" in configured:
        providers["mistral"] = mistral_provider(
            api_key=settings.mistral_api_key, timeout_s=timeout_s
        )
    if "ollama" in configured:
        providers["ollama"] = ollama_provider(
            base_url=settings.ollama_base_url, timeout_s=timeout_s
        )
    return providers


def _header_limit(max_header_bytes: int) -> Any:
    @web.middleware
    async def limit_headers(request: web.Request, handler: Any) -> web.StreamResponse:
        size = header_bytes(request)
        # The call routes check themselves, so that the refused call has its lineage record.
        checked_itself = request.path in CALL_PATHS or request.path == MESSAGES_PATH
        if size > max_header_bytes and not checked_itself:
            return error_response(
                HEADERS_TOO_LARGE, f"request headers are {size} bytes; limit {max_header_bytes}"
            )
        response: web.StreamResponse = await handler(request)
        return response

    return limit_headers


def gateway_application(
    settings: GatewaySettings, gateway: Gateway, admin: AdminApi
) -> web.Application:
    """The gateway's aiohttp application: its routes, the admin API's, or one of the two
    (`gateway_serves`)."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[access_lines(), json_errors, _header_limit(settings.max_header_bytes)],
    )
    routes = [web.get("/healthz", gateway.healthz), *gateway.metrics.metrics.route()]
    if settings.gateway_serves in ("all", "api"):
        routes += [
            web.get("/v1/models", gateway.models),
            web.post(CHAT_PATH, gateway.chat_completions),
            web.get("/v1/models/{model}", gateway.model),
            web.post(EMBEDDINGS_PATH, gateway.embeddings),
            web.post(COMPLETIONS_PATH, gateway.completions),
        ]
        routes.append(web.post(RESPONSES_PATH, responses_handler(gateway)))
    if settings.gateway_serves in ("all", "admin"):
        routes += admin.routes()
    if settings.gateway_serves in ("all", "api"):  # Anthropic's Messages API
        routes += anthropic_routes(gateway)
        app[EARLY_SHED] = EarlyShed(
            SHED_APIS, gateway.admission, gateway.shed_reply, gateway.lineage, gateway.metrics
        )
    app.add_routes(routes)
    app.cleanup_ctx.append(lag_sampling(gateway.admission))  # feeds the admission limit
    return app


def metrics_application(gateway: Gateway) -> web.Application:
    """This process's own /metrics (and /healthz), on a port no other process shares."""
    app = web.Application()
    app.add_routes([web.get("/healthz", gateway.healthz), *gateway.metrics.metrics.route()])
    return app


def anthropic_routes(gateway: Gateway) -> list[web.RouteDef]:
    """Anthropic's Messages API over the same pipeline (gateway.messages_endpoint)."""

    async def serve_messages(request: web.Request) -> web.StreamResponse:
        return await messages(gateway, request)

    async def serve_count_tokens(request: web.Request) -> web.StreamResponse:
        return await count_tokens(gateway, request)

    return [
        web.post(MESSAGES_PATH, serve_messages),
        web.post(COUNT_TOKENS_PATH, serve_count_tokens),
    ]


def gateway_runner(settings: GatewaySettings, app: web.Application) -> web.AppRunner:
    """A runner whose HTTP parser refuses, as JSON, one header field over the total
    limit, too many headers and a long request line (see schemas.http_errors); the
    middleware refuses headers whose total is over the limit. Where the app serves calls
    its server sheds them as it parses them (gateway/shed_protocol.py)."""
    limits = handler_args(
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_header_count,
        max_url_bytes=settings.max_url_bytes,
    )
    early = app.get(EARLY_SHED)
    if early is not None:  # it serves calls: shed as it parses
        return SheddingAppRunner(app, early, access_log=None, **limits)
    return JsonErrorAppRunner(app, access_log=None, **limits)


def outbox_publisher(settings: GatewaySettings, role: Role, linger_ms: int) -> OutboxPublisher:
    """A publisher of this role whose records stay in data_dir/outbox until stored."""
    return OutboxPublisher(
        settings.kafka_bootstrap,
        new_producer_id(role),
        settings.data_path / "outbox",
        max_bytes=settings.lineage_spool_max_bytes,
        fsync_interval_s=settings.outbox_fsync_interval_ms / 1000,
        resend_after_s=settings.outbox_resend_after_s,
        linger_ms=linger_ms,
        checkpoint_every=settings.checkpoint_every_records,
        checkpoint_interval_s=settings.checkpoint_interval_s,
        role=role,
    )


class GatewayProcess:
    """The gateway with its views, publishers and HTTP server. `escalation_config` is the
    escalations processor's (its listing routes and times escalations as the processor)."""

    def __init__(
        self,
        settings: GatewaySettings,
        admin_token: str,
        *,
        escalation_config: EscalationConfig,
    ) -> None:
        assert settings.kafka_bootstrap, "the gateway needs a broker"
        self.settings = settings
        self.views = LocalViews()
        # Not batched (fetch_min_bytes): every admin change waits until these views show
        # it (gateway/admin/context.py), so a held fetch would slow each by up to 100 ms.
        self.tailer = TopicTailer(
            settings.kafka_bootstrap,
            [CONTROL.name, WALLET_STATE.name, ESCALATIONS.name, BREAKER_STATE.name],
            self.views.apply,
        )
        # Each keeps what it sends in an outbox until the store confirms it (schemas.outbox).
        self.lineage = outbox_publisher(settings, "gateway", settings.lineage_linger_ms)
        self.control = outbox_publisher(settings, "admin", 0)
        self.confirmations = ConfirmationFeed(
            settings.kafka_bootstrap, [self.lineage, self.control]
        )
        self.providers = build_providers(settings)
        self.gateway = Gateway(
            settings=settings,
            views=self.views,
            lineage=self.lineage,
            providers=self.providers,
            catalogue=build_catalogue(settings),
        )
        self.gateway.metrics.watch_lineage(self.lineage)
        self.gateway.tracing = tracing_from_env()  # OTLP when the OTEL_ variables say so
        self.admin = AdminApi(
            token=admin_token,
            views=self.views,
            control=self.control,
            budget=self.gateway.budget,
            default_tenant=settings.default_tenant,
            escalation_config=escalation_config,
        )
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        """The aiohttp application."""
        return gateway_application(self.settings, self.gateway, self.admin)

    async def start(self) -> None:
        """Read the views up to date, then listen."""
        await self.confirmations.start()  # what was stored while no process kept these
        try:
            await asyncio.wait_for(self.confirmations.tailer.caught_up.wait(), timeout=10)
        except TimeoutError:
            log.warning("stored notices not read to the end; leftovers are sent again")
        await self.lineage.start()
        await self.control.start()
        await self.tailer.start()
        await asyncio.wait_for(self.tailer.caught_up.wait(), timeout=60)
        self._runner = gateway_runner(self.settings, self.application())
        await self._runner.setup()
        # One of several processes on this port (gateway/processes.py): the kernel spreads
        # new connections over the sockets that share it.
        reuse_port = shares_port(self.settings)
        host, port = self.settings.gateway_host, self.settings.gateway_port
        site = web.TCPSite(self._runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        own_metrics_port = metrics_port(self.settings)
        if own_metrics_port and self.settings.metrics_enabled:
            self._metrics_runner = web.AppRunner(metrics_application(self.gateway))
            await self._metrics_runner.setup()
            await web.TCPSite(self._metrics_runner, host, own_metrics_port).start()
        log.info(
            "gateway listening",
            url=self.settings.gateway_url,
            keys=len(self.views.keys),
            process=self.settings.gateway_process_index,
            producer_id=self.lineage.producer_id,
        )

    async def stop(self) -> None:
        """Stop listening, flush lineage, disconnect."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self.tailer.stop()
        await self.lineage.stop()
        await self.control.stop()
        await self.confirmations.stop()
        for provider in self.providers.values():
            await provider.close()
        await self.admin.notify.sender.close()  # the route test's webhook client
        await asyncio.to_thread(self.gateway.tracing.shutdown)  # the spans still batched
