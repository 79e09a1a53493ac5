"""The gateway's call pipeline: each call to an API (chat completions, embeddings, legacy
completions; an adapter per API, gateway.endpoint) authenticated, rate-limited, checked
by the policy chain, routed with fallbacks and breakers, paid for from its budget and
recorded as one lineage record; and its health and models routes. The aiohttp app that
serves them is built in server.py."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncGenerator, Callable
from typing import TypeVar

import orjson
import structlog
from aiohttp import web

from gateway import errors, replies
from gateway.admission import Admission, admission_config, admitted_ahead
from gateway.attempts import TargetRunner
from gateway.breakers import BreakerBoard, config_of
from gateway.budget import Budget
from gateway.call_log import log_call
from gateway.call_record import CHAT_API, CallRecord
from gateway.catalogue import SIM_FALLBACKS, Target, model_object, price_in_force
from gateway.chat import parse_traceparent, traceparent_error
from gateway.chat_endpoint import parse_chat
from gateway.chat_params import BodyLimits, body_limits
from gateway.credentials import presented_secret
from gateway.embeddings import EMBEDDINGS_API, parse_embeddings
from gateway.endpoint import Endpoint
from gateway.errors import GatewayError, error_response, refusal_response
from gateway.metrics import gateway_metrics
from gateway.policy.baseline import ChainCache
from gateway.policy.chain import CallFacts, RefusalReason, reads_text
from gateway.processes import serving_processes
from gateway.providers.base import Completion, Delta, Provider, UpstreamError, Usage
from gateway.ratelimit import Limits, RateLimiter, parse_team_limits
from gateway.replies import link_headers
from gateway.responses_api import RESPONSES_PATH
from gateway.review import hold_for_review
from gateway.routing import (
    group_order,
    parse_fallbacks,
    parse_model_groups,
    plan,
)
from gateway.shed import ShedReply
from gateway.target_access import TargetAccess
from gateway.text_completions import COMPLETIONS_API, parse_completions
from gateway.tracing import NO_TRACING, Tracing
from gateway.views import LocalViews
from schemas.access_log import ACCESS_LOGGED
from schemas.auth import MalformedCredentialError
from schemas.http_errors import header_bytes
from schemas.ids import new_trace_id, now_ms
from schemas.pricing import cost_nanousd
from schemas.publisher import Publisher
from schemas.settings import GatewaySettings
from schemas.topics import LINEAGE
from streams.keys.logic import Key

log = structlog.get_logger(__name__)

R = TypeVar("R")
E = TypeVar("E", bound=Endpoint)
# Makes an API's request adapter from the body; GatewayError naming the parameter at fault.
Parse = Callable[[bytes, GatewaySettings, BodyLimits], Endpoint]

# Reservation when the caller sets no max_tokens: a generous answer, so the budget check
# errs on the side of refusing rather than overspending.
DEFAULT_RESERVED_COMPLETION_TOKENS = 4_096
# Keys that name no pack run under the tenant's pack of this name, if it has one.
DEFAULT_PACK = "default"
CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
COMPLETIONS_PATH = "/v1/completions"
CALL_PATHS = frozenset({CHAT_PATH, EMBEDDINGS_PATH, COMPLETIONS_PATH, RESPONSES_PATH})

REFUSALS: dict[RefusalReason, errors.ErrorKind] = {
    "user_required": errors.USER_REQUIRED,
    "role_insufficient": errors.ROLE_INSUFFICIENT,
    "pii_blocked": errors.PII_BLOCKED,
    "content_blocked": errors.CONTENT_BLOCKED,
    "cost_limit_exceeded": errors.COST_LIMIT_EXCEEDED,
}


class Gateway:
    """Routes calls under a tenant's keys and budget, and records each one."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        views: LocalViews,
        lineage: Publisher,
        providers: dict[str, Provider],
        catalogue: dict[str, Target],
    ) -> None:
        self.settings = settings
        self.views = views
        self.lineage = lineage
        self.providers = providers
        self.catalogue = catalogue
        self.region = settings.region
        self.limits = body_limits(settings)
        self.budget = Budget(views, lineage.producer_id)
        self.limiter = RateLimiter(processes=serving_processes(settings))
        self.team_limits = parse_team_limits(settings.team_rate_limits)
        self.fallbacks = {**SIM_FALLBACKS, **parse_fallbacks(settings.fallbacks)}
        self.groups = parse_model_groups(settings.model_groups)
        self.access = TargetAccess(settings, catalogue)
        self.breakers = BreakerBoard(config_of(settings), views.fleet_breakers)
        self.runner = TargetRunner(settings, self.breakers)
        self.upstream_in_flight = 0
        self.admission = Admission(admission_config(settings))  # by loop lag (loop_lag.py)
        self.shed_reply = ShedReply(settings.region, self.admission.retry_after_s)
        self.metrics = gateway_metrics(self)  # Prometheus, labels bounded by the catalogue
        self.tracing: Tracing = NO_TRACING  # gateway.tracing: set from the OTEL_ variables
        self.chains = ChainCache()  # each tenant pack's effective chain, until republished
        # Calls served while the lineage outbox could not keep their records.
        self.lineage_overflow = 0
        # Not for security: the pick of a model group's member only spreads the load.
        self._jitter = random.Random()  # noqa: S311

    # --- routes ---------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness and whether the local views have caught up."""
        body = {"status": "ok", "keys": len(self.views.keys), "wallets": len(self.views.wallets)}
        body["lineage_overflow"] = self.lineage_overflow  # served while the outbox was full
        # Which of the processes on this port answered (0: a lone gateway), and as whom.
        body["process"] = self.settings.gateway_process_index
        body["producer_id"] = self.lineage.producer_id
        return web.json_response(body, dumps=lambda v: orjson.dumps(v).decode())

    async def models(self, request: web.Request) -> web.Response:
        """OpenAI `GET /v1/models`: the models the key may call."""
        try:
            key = self._authenticate(request)
        except GatewayError as exc:
            return refusal_response(exc)
        data = [model_object(t) for t in self.access.usable(key)]
        return _json({"object": "list", "data": data})

    async def model(self, request: web.Request) -> web.Response:
        """OpenAI `GET /v1/models/{id}`: a model the key may call (as `models` lists
        them); any other is 404 model_not_found, whether it exists or not."""
        try:
            key = self._authenticate(request)
            name = request.match_info["model"]
            found = next((t for t in self.access.usable(key) if t.model == name), None)
            if found is None:
                raise GatewayError(
                    errors.MODEL_NOT_FOUND,
                    # Not quoted back: the path is the caller's, and hostile.
                    "the model does not exist or this key may not use it",
                    param="model",
                )
        except GatewayError as exc:
            return refusal_response(exc)
        return _json(model_object(found))

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """OpenAI `POST /v1/chat/completions`: one lineage record per call, whatever happens."""
        return await self.serve(request, CHAT_API, parse_chat)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """OpenAI `POST /v1/embeddings`, priced by input tokens."""
        return await self.serve(request, EMBEDDINGS_API, parse_embeddings)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's legacy `POST /v1/completions`, streamed or not."""
        return await self.serve(request, COMPLETIONS_API, parse_completions)

    async def serve(self, request: web.Request, api: str, parse: Parse) -> web.StreamResponse:
        """One call to an API (its request adapter made by `parse`) under the key, the
        policy chain, the budget and routing; one lineage record whatever happens. Past
        the admission limit (a lagging event loop), refused at once, before any work (or
        before the request reached a handler: gateway/shed_protocol.py)."""
        if not (admitted_ahead(request.protocol) or self.admission.admit()):
            return await self._shed(request, api)
        try:
            return await self._serve(request, api, parse)
        finally:
            self.admission.release()

    async def _shed(self, request: web.Request, api: str) -> web.Response:
        """A call past the admission limit, recorded as any refusal at least cost (shed.py)."""
        request[ACCESS_LOGGED] = True  # by log_call, as every call
        record = self.shed_reply.record(api, request.headers)
        log_call(record, "")
        emitting = time.perf_counter()
        await self.lineage.publish(LINEAGE.name, record.tenant_id, record)
        self.metrics.recorded(None, record, time.perf_counter() - emitting)
        return self.shed_reply.response(record)

    async def _serve(self, request: web.Request, api: str, parse: Parse) -> web.StreamResponse:
        started = time.perf_counter()
        request[ACCESS_LOGGED] = True  # by _record: one `gateway call` line per call
        # Two traceparent headers join into a value that is not W3C's form: refused.
        traceparent = ",".join(request.headers.getall("traceparent", [])) or None
        traced = parse_traceparent(traceparent)
        call = CallRecord(started, "", *(traced or (new_trace_id(), None)))
        call.api = api
        call.trace = self.tracing.call(call, request)  # may take the span's ids as the call's
        call.prices = self.views.prices
        try:
            self._check_lineage()
            body = await self._read_body(request, call)
            call.policies.append("auth")
            key = self._authenticate(request)
            self.views.key_last_used_ms[key.key_id] = now_ms()
            call.tenant_id, call.team_id = key.tenant_id, key.team_id
            call.key_id, call.wallet_id = key.key_id, self.views.spend_wallet_id(key)
            if (size := header_bytes(request)) > (limit := self.settings.max_header_bytes):
                raise GatewayError(
                    errors.HEADERS_TOO_LARGE, f"headers of {size} bytes; limit {limit}"
                )
            if traceparent is not None and traced is None:  # refused once the caller is known
                raise traceparent_error()
            endpoint = call.trace.requested(parse(body, self.settings, self.limits))
            call.stream, call.model_requested = endpoint.stream, endpoint.model
            call.user_id = endpoint.user
            targets, call.selection_reason = self._plan(endpoint.model)
            if not targets:
                raise GatewayError(
                    errors.MODEL_NOT_FOUND, f"model '{endpoint.model}' does not exist"
                )
            call.target = targets[0]
            call.policies.append("key-scopes")
            targets = self.access.allowed(key, endpoint.model, targets)
            targets = self._serving_targets(endpoint, targets)
            call.target = targets[0]
            call.policies.append("rate-limit")
            self._check_rate(key, endpoint.rate_tokens())
            reserve_nanousd = self._reservation_nanousd(endpoint, targets)
            endpoint = await self._run_policies(call, key, endpoint, reserve_nanousd)
            if self.upstream_in_flight >= self.settings.max_concurrent_upstream:
                # Shed at once: a queue here would only turn into caller timeouts.
                raise GatewayError(
                    errors.OVERLOADED,
                    "gateway at its limit of concurrent upstream calls",
                    headers={"Retry-After": "1"},
                )
            call.policies.append("budget")
            self.budget.reserve(call.wallet_id, reserve_nanousd)
            call.reserved_nanousd = reserve_nanousd
        except GatewayError as exc:
            await self._record(call, exc.kind.status, exc.kind.code, "rejected")
            return _linked(call, refusal_response(exc))
        self.upstream_in_flight += 1
        try:
            if endpoint.stream:
                return _linked(call, await self._stream(request, call, endpoint, targets))
            return _linked(call, await self._complete(call, endpoint, targets))
        except GatewayError as exc:  # every target's breaker is open
            await self._record(call, exc.kind.status, exc.kind.code, "failed")
            return _linked(call, error_response(exc.kind, exc.message, exc.headers))
        finally:
            self.upstream_in_flight -= 1
            self._release(call)

    # --- steps ----------------------------------------------------------------------

    def _check_lineage(self) -> None:
        """Every call must be recorded: refuse quickly when it could not be."""
        if self.lineage.pending >= self.settings.lineage_max_pending:
            raise GatewayError(
                errors.OVERLOADED, "gateway overloaded: lineage backlog at its limit"
            )
        if self.lineage.degraded and self.settings.lineage_fail_closed:
            raise GatewayError(
                errors.LINEAGE_UNAVAILABLE, "the broker is unavailable and lineage fails closed"
            )
        if not self.lineage.accepting:
            # The outbox is full or its disk refuses writes: records cannot be kept until
            # the store has them. Fail closed refuses; else the call is served, counted.
            if self.settings.lineage_fail_closed:
                raise GatewayError(
                    errors.LINEAGE_UNAVAILABLE,
                    "the lineage outbox is full or not writable and lineage fails closed",
                )
            self.lineage_overflow += 1
            log.warning("lineage outbox cannot keep records; serving", served=self.lineage_overflow)

    async def _read_body(self, request: web.Request, call: CallRecord) -> bytes:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise GatewayError(errors.BODY_TOO_LARGE, f"request body over {limit} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise GatewayError(errors.BODY_TOO_LARGE, f"request body over {limit} bytes") from exc
        call.request_sha256 = hashlib.sha256(body).hexdigest()
        return body

    def _authenticate(self, request: web.Request) -> Key:
        try:
            secret = presented_secret(request.headers, request.path)  # bearer or x-api-key
        except MalformedCredentialError as exc:  # its message never quotes the secret
            raise GatewayError(errors.MALFORMED_API_KEY, str(exc)) from None
        if not secret:
            raise GatewayError(errors.MISSING_API_KEY, "missing bearer key in Authorization")
        key = self.views.key_for_secret(secret)
        if key is None:
            raise GatewayError(errors.INVALID_API_KEY, "unknown gateway key")
        status = key.status(now_ms())
        if status == "revoked":
            raise GatewayError(errors.KEY_REVOKED, f"key {key.key_prefix}… has been revoked")
        if status == "expired":
            raise GatewayError(errors.KEY_EXPIRED, f"key {key.key_prefix}… has expired")
        return key

    def _plan(self, model: str) -> tuple[list[Target], str]:
        """The targets to try in order, and why the first was chosen: `catalogue` (the
        model asked for) or `weighted` (a group's weighted pick; model_selected says which)."""
        group = self.groups.get(model)
        if group is None:
            return plan(model, self.catalogue, self.fallbacks), "catalogue"
        members = group_order(group, self._jitter.random())
        targets = [t for name in members for t in plan(name, self.catalogue, self.fallbacks)]
        return list(dict.fromkeys(targets)), "weighted"

    def _serving_targets(self, endpoint: Endpoint, targets: list[Target]) -> list[Target]:
        """The targets whose provider has the endpoint's API; refuses the call when none
        has (an Anthropic model asked for embeddings, say)."""
        serving = [t for t in targets if endpoint.served_by(self.providers[t.provider])]
        if not serving:
            raise GatewayError(
                errors.INVALID_REQUEST,
                f"model '{endpoint.model}' is served by provider '{targets[0].provider}', "
                f"which has no {endpoint.api} API",
                param="model",
            )
        return serving

    def _check_rate(self, key: Key, tokens: int) -> None:
        """The team's limits, then the key's: a call needs room in both."""
        now_s = time.monotonic()
        team = self.team_limits.get((key.tenant_id, key.team_id))
        limited = [
            (f"team/{key.tenant_id}/{key.team_id}", team, f"team {key.team_id}"),
            (
                key.key_id,
                Limits(key.requests_per_minute, key.tokens_per_minute),
                "key " + key.key_prefix + "…",
            ),
        ]
        for bucket, limits, whose in limited:
            if limits is None:
                continue
            retry_after_s = self.limiter.admit(
                bucket,
                requests_per_minute=limits.requests_per_minute,
                tokens_per_minute=limits.tokens_per_minute,
                tokens=tokens,
                now_s=now_s,
            )
            if retry_after_s:
                raise GatewayError(
                    errors.RATE_LIMITED,
                    f"rate limit of {whose} reached; retry in {retry_after_s}s",
                    headers={"Retry-After": str(retry_after_s)},
                )

    def _reservation_nanousd(self, endpoint: Endpoint, targets: list[Target]) -> int:
        prompt_tokens, completion_tokens = endpoint.reservation_tokens(
            DEFAULT_RESERVED_COMPLETION_TOKENS
        )
        # A fallback may cost more than the primary: hold enough for the dearest, at the
        # prices in force now, every token at the plain rate.
        usage, at_ms = Usage(prompt_tokens, completion_tokens), now_ms()
        return max(
            cost_nanousd(price_in_force(self.views.prices, t, at_ms), usage) for t in targets
        )

    async def _run_policies(
        self, call: CallRecord, key: Key, endpoint: E, reserve_nanousd: int
    ) -> E:
        """Run the org baseline's steps and the key's policy pack; the request as the
        provider may see it (redacted)."""
        pack_name = key.policy_pack or DEFAULT_PACK
        published = self.views.packs.get((key.tenant_id, pack_name))
        if published is None and key.policy_pack:  # a pack the key names must exist
            raise GatewayError(
                errors.POLICY_UNAVAILABLE, f"policy pack '{pack_name}' is not published"
            )
        chain = self.chains.chain(
            key.tenant_id,
            pack_name,
            self.views.baseline.baseline,
            published.pack if published is not None else None,
        )
        if (param := endpoint.token_ids_in) is not None and reads_text(
            chain, key.team_id, self.settings.gateway_name
        ):
            # Token ids hide their text from the PII and content steps: fail closed.
            raise GatewayError(
                errors.INVALID_REQUEST,
                f"token ids in '{param}' cannot be checked by this key's policy chain; send text",
                param=param,
            )
        now = now_ms()
        facts = CallFacts(
            gateway=self.settings.gateway_name,
            team_id=key.team_id,
            role=key.role,
            user_id=endpoint.user,
            messages=(scanned := endpoint.policy_messages()),
            team_month_spent_nanousd=self.views.team_month_spent_nanousd(
                key.tenant_id, key.team_id, now
            )
            + self.budget.committed_nanousd(call.wallet_id),
            estimated_cost_nanousd=reserve_nanousd,
        )
        verdict = call.trace.policy_chain(chain, facts)
        call.policies.extend(verdict.applied)
        call.guardrails.extend(verdict.triggered)
        if verdict.refusal is not None:
            raise GatewayError(REFUSALS[verdict.refusal.reason], verdict.refusal.message)
        if verdict.review is not None:
            await hold_for_review(
                self.views,
                self.lineage,
                call=call,
                key=key,
                pack_name=pack_name,
                review=verdict.review,
            )
        return endpoint.after_policy(scanned, verdict.messages)

    def _release(self, call: CallRecord) -> None:
        if call.reserved_nanousd:
            self.budget.release(call.wallet_id, call.reserved_nanousd)

    def _settle_usage(
        self, call: CallRecord, usage: Usage | None, text: str, endpoint: Endpoint
    ) -> Usage:
        if usage is not None:
            call.usage_source = "reported"
            resolved = usage
        else:
            call.usage_source = "estimated"
            resolved = endpoint.estimate_usage(text)
        call.usage = resolved
        call.prompt_tokens, call.completion_tokens = (
            resolved.prompt_tokens,
            resolved.completion_tokens,
        )
        call.response_sha256 = hashlib.sha256(text.encode()).hexdigest()
        return resolved

    async def _complete(
        self, call: CallRecord, endpoint: Endpoint, targets: list[Target]
    ) -> web.Response:
        async def complete(target: Target) -> Completion:
            return await endpoint.complete(self.providers[target.provider], target.upstream_model)

        try:
            completion, target, started = await self.runner.run(call, targets, complete)
        except UpstreamError as exc:
            failure = replies.upstream_failure(exc)
            await self._record(call, failure.kind.status, failure.kind.code, "failed")
            return refusal_response(failure)
        call.attempted(target, started, 200, None)
        call.trace.answered(completion.finish_reason)
        usage = self._settle_usage(call, completion.usage, completion.content, endpoint)
        body = endpoint.reply_body(completion, call.event_id, usage)
        await self._record(call, 200, None, "allowed")
        return web.Response(body=body, content_type="application/json")

    async def _stream(
        self,
        request: web.Request,
        call: CallRecord,
        endpoint: Endpoint,
        targets: list[Target],
    ) -> web.StreamResponse:
        async def open_stream(target: Target) -> tuple[AsyncGenerator[Delta, None], Delta | None]:
            # Retries and fallbacks happen only before the first delta reaches the caller.
            opened = endpoint.open_stream(self.providers[target.provider], target.upstream_model)
            try:
                return opened, await anext(opened)
            except StopAsyncIteration:
                return opened, None
            except UpstreamError:
                await opened.aclose()
                raise

        try:
            (deltas, first), target, attempt_started = await self.runner.run(
                call, targets, open_stream
            )
        except UpstreamError as exc:
            failure = replies.upstream_failure(exc)
            await self._record(call, failure.kind.status, failure.kind.code, "failed")
            return refusal_response(failure)
        relay = endpoint.relay(call.event_id)
        response: web.StreamResponse | None = None
        parts: list[str] = []
        usage: Usage | None = None

        async def send(event: bytes) -> web.StreamResponse:
            nonlocal response
            if response is None:
                call.ttft_ms = (time.perf_counter() - call.started) * 1000
                response = web.StreamResponse(
                    headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
                )
                _linked(call, response)
                await response.prepare(request)
            await response.write(event)
            return response

        async def all_deltas() -> AsyncGenerator[Delta, None]:
            if first is not None:
                yield first
            async for delta in deltas:
                yield delta

        try:
            async for delta in all_deltas():
                if delta.content:
                    parts.append(delta.content)
                for event in relay.events(delta):
                    await send(event)
                usage = delta.usage or usage
        except UpstreamError as exc:
            call.attempted(target, attempt_started, exc.status, exc.error_class)
            if parts:  # the upstream produced (and bills) part of an answer: charge it
                self._settle_usage(call, None, "".join(parts), endpoint)
            await self._record(call, 502, errors.UPSTREAM_ERROR.code, "failed")
            if response is None:
                return error_response(errors.UPSTREAM_ERROR, f"upstream failed: {exc}")
            await self._write_or_drop(response, relay.error_event(str(exc)))
            return response
        except ConnectionResetError:
            # The caller went away mid-stream. The upstream still produced (and billed)
            # what was generated so far: charge that, estimated, and record why it ended.
            await deltas.aclose()
            call.attempted(target, attempt_started, 200, None)
            self._settle_usage(call, None, "".join(parts), endpoint)
            await self._record(call, 499, errors.CLIENT_CLOSED.code, "allowed")
            return response or web.StreamResponse()
        ended_in = relay.failure()
        call.attempted(target, attempt_started, 200, ended_in)
        call.trace.answered(relay.finish)
        resolved = self._settle_usage(call, usage, "".join(parts), endpoint)
        if ended_in is None:
            await self._record(call, 200, None, "allowed")
        else:  # the upstream's own failure event ended it: failed, what it produced charged
            await self._record(call, 502, errors.UPSTREAM_ERROR.code, "failed")
        try:
            for event in relay.tail(resolved):
                stream = await send(event)
            await stream.write_eof()
        except ConnectionResetError:
            log.info("caller left before the end of the stream", trace_id=call.trace_id)
        assert response is not None, "send() prepared the response"
        return response

    async def _write_or_drop(self, response: web.StreamResponse, event: bytes) -> None:
        try:
            await response.write(event)
        except ConnectionResetError:
            log.info("caller left before the error event")

    async def _record(
        self, call: CallRecord, http_status: int, error_code: str | None, decision: str
    ) -> None:
        latency_ms = (time.perf_counter() - call.started) * 1000
        record = call.lineage(
            region=self.region,
            latency_ms=latency_ms,
            http_status=http_status,
            error_code=error_code,
            decision=decision,
        )
        call.trace.finished(record)
        known = self.views.keys.get(call.key_id)
        # The access line and the metrics wait until the answer is written: the handler
        # returns it within this task step, and callbacks queued now run after that step.
        loop = asyncio.get_running_loop()
        loop.call_soon(log_call, record, known.key_prefix if known is not None else "")
        emitting = time.perf_counter()
        sealed = await self.lineage.publish(LINEAGE.name, record.tenant_id, record)
        loop.call_soon(self.metrics.call_done, call, record, time.perf_counter() - emitting)
        self.budget.settled(call.wallet_id, sealed.seq, record.cost_nanousd)


def _json(body: object) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _linked(call: CallRecord, response: web.StreamResponse) -> web.StreamResponse:
    """The response with the headers that name its lineage record (replies.link_headers);
    one already under way has them."""
    if not response.prepared:
        response.headers.update(link_headers(call.event_id, call.trace_id, call.span_id))
    return response
