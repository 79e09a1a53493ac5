"""The gateway's call pipeline: each chat completion authenticated, rate-limited, checked
by the policy chain, routed with fallbacks and breakers, paid for from its budget and
recorded as one lineage record; and its health and models routes. The aiohttp app that
serves them is built in server.py."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
import structlog
from aiohttp import web

from gateway import errors, replies
from gateway.breakers import BreakerBoard, config_of
from gateway.budget import Budget
from gateway.catalogue import SIM_FALLBACKS, Target
from gateway.chat import (
    ChatRequest,
    parse_chat_request,
    parse_traceparent,
    traceparent_error,
)
from gateway.chat_params import body_limits
from gateway.errors import GatewayError, error_response, refusal_response
from gateway.policy.baseline import effective_pack
from gateway.policy.chain import CallFacts, RefusalReason, Review, evaluate
from gateway.providers.base import ChatCall, Completion, Delta, Provider, UpstreamError, Usage
from gateway.ratelimit import Limits, RateLimiter, parse_team_limits
from gateway.replies import ChunkRelay, completion_id, link_headers, reply_body
from gateway.routing import (
    RETRYABLE,
    backoff_s,
    group_order,
    in_regions,
    parse_fallbacks,
    parse_model_groups,
    parse_target_regions,
    parse_tenant_regions,
    plan,
)
from gateway.tokens import estimate_prompt_tokens, estimate_text_tokens
from gateway.views import LocalViews
from schemas.auth import MalformedCredentialError, authorization_header, bearer_token
from schemas.http_errors import header_bytes
from schemas.ids import new_span_id, new_trace_id, now_ms, uuid7
from schemas.publisher import Publisher
from schemas.records import Attempt, EscalationOpened, Guardrail, LineageRecord, UsageSource
from schemas.settings import GatewaySettings
from schemas.topics import ESCALATIONS, LINEAGE
from streams.keys.logic import Key

log = structlog.get_logger(__name__)

R = TypeVar("R")

# Reservation when the caller sets no max_tokens: a generous answer, so the budget check
# errs on the side of refusing rather than overspending.
DEFAULT_RESERVED_COMPLETION_TOKENS = 4_096
# Keys that name no pack run under the tenant's pack of this name, if it has one.
DEFAULT_PACK = "default"
DECISION_POLL_S = 0.05
CHAT_PATH = "/v1/chat/completions"

REFUSALS: dict[RefusalReason, errors.ErrorKind] = {
    "user_required": errors.USER_REQUIRED,
    "role_insufficient": errors.ROLE_INSUFFICIENT,
    "pii_blocked": errors.PII_BLOCKED,
    "content_blocked": errors.CONTENT_BLOCKED,
    "cost_limit_exceeded": errors.COST_LIMIT_EXCEEDED,
}


@dataclass(slots=True)
class CallRecord:
    """What the gateway learns during one call; becomes the lineage record."""

    started: float
    request_sha256: str
    trace_id: str
    parent_span_id: str | None
    stream: bool = False
    tenant_id: str = "unknown"
    team_id: str = ""
    key_id: str = ""
    wallet_id: str = ""
    user_id: str | None = None
    model_requested: str = ""
    target: Target | None = None
    selection_reason: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    guardrails: list[Guardrail] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_source: UsageSource = "none"
    reserved_nanousd: int = 0
    ttft_ms: float | None = None
    response_sha256: str | None = None
    # Made when the call starts, so the reply (its id and headers) can name its record.
    event_id: str = field(default_factory=uuid7)
    span_id: str = field(default_factory=new_span_id)

    def upstream_ms(self) -> float:
        """Time spent waiting on upstream attempts."""
        return sum(a.latency_ms for a in self.attempts)


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
        self.budget = Budget(views, lineage.producer_id)
        self.limiter = RateLimiter()
        self.team_limits = parse_team_limits(settings.team_rate_limits)
        self.fallbacks = {**SIM_FALLBACKS, **parse_fallbacks(settings.fallbacks)}
        self.groups = parse_model_groups(settings.model_groups)
        self.target_regions = parse_target_regions(settings.target_regions)
        self.tenant_regions = parse_tenant_regions(settings.tenant_regions)
        self.breakers = BreakerBoard(config_of(settings), views.fleet_breakers)
        self.upstream_in_flight = 0
        # Calls served while the lineage outbox could not keep their records.
        self.lineage_overflow = 0
        # Not for security: jitter only spreads retries out.
        self._jitter = random.Random()  # noqa: S311

    # --- routes ---------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness and whether the local views have caught up."""
        body = {"status": "ok", "keys": len(self.views.keys), "wallets": len(self.views.wallets)}
        body["lineage_overflow"] = self.lineage_overflow  # served while the outbox was full
        return web.json_response(body, dumps=lambda v: orjson.dumps(v).decode())

    async def models(self, request: web.Request) -> web.Response:
        """OpenAI `GET /v1/models`."""
        try:
            self._authenticate(request)
        except GatewayError as exc:
            return refusal_response(exc)
        data = [
            {"id": t.model, "object": "model", "created": 0, "owned_by": t.provider}
            for t in self.catalogue.values()
        ]
        return web.Response(
            body=orjson.dumps({"object": "list", "data": data}), content_type="application/json"
        )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """OpenAI `POST /v1/chat/completions`: one lineage record per call, whatever happens."""
        started = time.perf_counter()
        # Two traceparent headers join into a value that is not W3C's form: refused.
        traceparent = ",".join(request.headers.getall("traceparent", [])) or None
        traced = parse_traceparent(traceparent)
        call = CallRecord(started, "", *(traced or (new_trace_id(), None)))
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
            chat = parse_chat_request(
                body,
                max_messages=self.settings.max_messages,
                max_identifier_chars=self.settings.max_identifier_chars,
                limits=body_limits(self.settings),
            )
            call.stream, call.model_requested, call.user_id = chat.stream, chat.model, chat.user
            targets, call.selection_reason = self._plan(chat.model)
            if not targets:
                raise GatewayError(errors.MODEL_NOT_FOUND, f"model '{chat.model}' does not exist")
            call.target = targets[0]
            call.policies.append("key-scopes")
            targets = self._allowed_targets(key, chat, targets)
            call.target = targets[0]
            call.policies.append("rate-limit")
            self._check_rate(key, chat)
            reserve_nanousd = self._reservation_nanousd(chat, targets)
            chat = await self._run_policies(call, key, chat, reserve_nanousd)
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
            if chat.stream:
                return _linked(call, await self._stream(request, call, chat, targets))
            return _linked(call, await self._complete(call, chat, targets))
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
            secret = bearer_token(authorization_header(request.headers))
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

    def _allowed_targets(self, key: Key, chat: ChatRequest, targets: list[Target]) -> list[Target]:
        """The targets the key's scopes and the tenant's regions allow, in order; refuses
        the call, naming the primary's reason, when none is left."""
        tenant_regions = self.tenant_regions.get(key.tenant_id)
        resident = in_regions(targets, self.target_regions, self.region, tenant_regions)
        allowed = [
            t
            for t in resident
            if key.allows(model=chat.model, provider=t.provider, region=self._region_of(t)) is None
        ]
        if allowed:
            return allowed
        primary = targets[0]
        refused = key.allows(
            model=chat.model, provider=primary.provider, region=self._region_of(primary)
        )
        if refused == "model":
            raise GatewayError(errors.MODEL_NOT_ALLOWED, f"key may not call model '{chat.model}'")
        if refused == "provider":
            raise GatewayError(
                errors.PROVIDER_NOT_ALLOWED, f"key may not use provider '{primary.provider}'"
            )
        raise GatewayError(
            errors.REGION_NOT_ALLOWED,
            f"no target for '{chat.model}' in a region this key and tenant may use",
        )

    def _region_of(self, target: Target) -> str:
        return self.target_regions.get(target.model, self.region)

    def _check_rate(self, key: Key, chat: ChatRequest) -> None:
        """The team's limits, then the key's: a call needs room in both."""
        tokens = estimate_prompt_tokens(chat.messages) + (chat.max_tokens or 0) * chat.choices
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

    def _reservation_nanousd(self, chat: ChatRequest, targets: list[Target]) -> int:
        # Each of `n` choices may run to max_tokens.
        completion_tokens = (chat.max_tokens or DEFAULT_RESERVED_COMPLETION_TOKENS) * chat.choices
        prompt_tokens = estimate_prompt_tokens(chat.messages)
        # A fallback may cost more than the primary: hold enough for the dearest.
        return max(t.cost_nanousd(prompt_tokens, completion_tokens) for t in targets)

    async def _run_policies(
        self, call: CallRecord, key: Key, chat: ChatRequest, reserve_nanousd: int
    ) -> ChatRequest:
        """Run the org baseline's steps and the key's policy pack; the request as the
        provider may see it (redacted)."""
        pack_name = key.policy_pack or DEFAULT_PACK
        published = self.views.packs.get((key.tenant_id, pack_name))
        if published is None and key.policy_pack:  # a pack the key names must exist
            raise GatewayError(
                errors.POLICY_UNAVAILABLE, f"policy pack '{pack_name}' is not published"
            )
        chain = effective_pack(
            self.views.baseline.baseline, published.pack if published is not None else None
        )
        now = now_ms()
        facts = CallFacts(
            team_id=key.team_id,
            role=key.role,
            user_id=chat.user,
            messages=(scanned := chat.policy_messages()),
            team_month_spent_nanousd=self.views.team_month_spent_nanousd(
                key.tenant_id, key.team_id, now
            )
            + self.budget.committed_nanousd(call.wallet_id),
            estimated_cost_nanousd=reserve_nanousd,
        )
        verdict = evaluate(chain, facts)
        call.policies.extend(verdict.applied)
        call.guardrails.extend(verdict.triggered)
        if verdict.refusal is not None:
            raise GatewayError(REFUSALS[verdict.refusal.reason], verdict.refusal.message)
        if verdict.review is not None:
            await self._review(call, key, pack_name, verdict.review)
        return chat.after_policy(scanned, verdict.messages)

    async def _review(self, call: CallRecord, key: Key, pack_name: str, review: Review) -> None:
        """Open an escalation; refuse the call with its reference, or hold it for a decision."""
        policy = review.policy
        escalation_id = f"esc_{uuid7().replace('-', '')}"
        opened = EscalationOpened(
            event_id=uuid7(),
            event_type=EscalationOpened.event_type_name,
            occurred_at=now_ms(),
            tenant_id=key.tenant_id,
            escalation_id=escalation_id,
            trace_id=call.trace_id,
            team_id=key.team_id,
            key_id=key.key_id,
            policy_pack=pack_name,
            category=policy.category,
            priority=policy.priority,
            mode=policy.mode,
            reason=review.reason,
            model_requested=call.model_requested,
            request_sha256=call.request_sha256,
        )
        await self.lineage.publish(ESCALATIONS.name, key.tenant_id, opened)
        reference = {"X-Govledger-Escalation": escalation_id}
        if policy.mode == "refuse":
            raise GatewayError(
                errors.REVIEW_REQUIRED,
                f"this call needs human review; reference {escalation_id}",
                headers=reference,
            )
        decision = await self._decision(escalation_id, policy.hold_timeout_s)
        if decision == "approve":
            return
        if decision == "reject":
            raise GatewayError(
                errors.REVIEW_REJECTED,
                f"a reviewer rejected this call; reference {escalation_id}",
                headers=reference,
            )
        raise GatewayError(
            errors.REVIEW_REQUIRED,
            f"no review decision within {policy.hold_timeout_s:g}s; reference {escalation_id}",
            headers=reference,
        )

    async def _decision(self, escalation_id: str, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while (decision := self.views.escalation_decisions.get(escalation_id)) is None:
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(DECISION_POLL_S)
        return decision

    def _release(self, call: CallRecord) -> None:
        if call.reserved_nanousd:
            self.budget.release(call.wallet_id, call.reserved_nanousd)

    def _upstream_call(self, chat: ChatRequest, target: Target) -> tuple[Provider, ChatCall]:
        provider = self.providers[target.provider]
        return provider, chat.upstream_call(target.upstream_model)

    def _settle_usage(
        self, call: CallRecord, usage: Usage | None, text: str, chat: ChatRequest
    ) -> Usage:
        if usage is not None:
            call.usage_source = "reported"
            resolved = usage
        else:
            call.usage_source = "estimated"
            resolved = Usage(estimate_prompt_tokens(chat.messages), estimate_text_tokens(text))
        call.prompt_tokens, call.completion_tokens = (
            resolved.prompt_tokens,
            resolved.completion_tokens,
        )
        call.response_sha256 = hashlib.sha256(text.encode()).hexdigest()
        return resolved

    async def _try_targets(
        self, call: CallRecord, targets: list[Target], run: Callable[[Target], Awaitable[R]]
    ) -> tuple[R, Target, float]:
        """Run on each target in turn, retrying retryable failures with backoff; return the
        first success, its target and when its attempt started. Failed attempts are
        recorded; the last failure is raised when every target failed."""
        retries = self.settings.upstream_retries
        failure: UpstreamError | None = None
        for index, target in enumerate(targets):
            for retry in range(retries + 1):
                if not self.breakers.admit(target, now_ms()):
                    self._attempt(call, target, time.perf_counter(), 0, "breaker_open")
                    break
                started = time.perf_counter()
                try:
                    result = await run(target)
                except UpstreamError as exc:
                    self._attempt(call, target, started, exc.status, exc.error_class)
                    self.breakers.record(target, exc.status, exc.error_class, now_ms())
                    failure = exc
                    if exc.error_class not in RETRYABLE:
                        raise
                    if retry < retries:
                        await asyncio.sleep(self._backoff_s(retry, exc.retry_after_s))
                    continue
                self.breakers.record(target, 200, None, now_ms())
                call.target = target
                if index > 0:
                    # Stable words for SQL: a failure moved it on, or only open breakers did.
                    call.selection_reason = "fallback" if failure is not None else "breaker_open"
                return result, target, started
        if failure is None:
            raise GatewayError(
                errors.CIRCUIT_OPEN,
                f"every target for '{call.model_requested}' has an open circuit breaker",
                headers={
                    "Retry-After": str(max(1, round(self.breakers.config.reset_timeout_ms / 1000)))
                },
            )
        raise failure

    def _backoff_s(self, retry: int, retry_after_s: float | None) -> float:
        return backoff_s(
            retry,
            base_s=self.settings.retry_backoff_ms / 1000,
            cap_s=self.settings.retry_max_wait_ms / 1000,
            retry_after_s=retry_after_s,
            jitter=self._jitter.uniform(0.5, 1.0),
        )

    async def _complete(
        self, call: CallRecord, chat: ChatRequest, targets: list[Target]
    ) -> web.Response:
        async def complete(target: Target) -> Completion:
            provider, upstream = self._upstream_call(chat, target)
            return await provider.complete(upstream)

        try:
            completion, target, started = await self._try_targets(call, targets, complete)
        except UpstreamError as exc:
            failure = replies.upstream_failure(exc)
            await self._record(call, failure.kind.status, failure.kind.code, "failed")
            return refusal_response(failure)
        self._attempt(call, target, started, 200, None)
        usage = self._settle_usage(call, completion.usage, completion.content, chat)
        body = reply_body(completion, completion_id(call.event_id), chat.model, usage)
        await self._record(call, 200, None, "allowed")
        return web.Response(body=body, content_type="application/json")

    async def _stream(
        self, request: web.Request, call: CallRecord, chat: ChatRequest, targets: list[Target]
    ) -> web.StreamResponse:
        async def open_stream(target: Target) -> tuple[AsyncGenerator[Delta, None], Delta | None]:
            # Retries and fallbacks happen only before the first delta reaches the caller.
            provider, upstream = self._upstream_call(chat, target)
            opened = provider.stream(upstream)
            try:
                return opened, await anext(opened)
            except StopAsyncIteration:
                return opened, None
            except UpstreamError:
                await opened.aclose()
                raise

        try:
            (deltas, first), target, attempt_started = await self._try_targets(
                call, targets, open_stream
            )
        except UpstreamError as exc:
            failure = replies.upstream_failure(exc)
            await self._record(call, failure.kind.status, failure.kind.code, "failed")
            return refusal_response(failure)
        relay = ChunkRelay(completion_id(call.event_id), chat.model, chat.include_usage)
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
            self._attempt(call, target, attempt_started, exc.status, exc.error_class)
            if parts:  # the upstream produced (and bills) part of an answer: charge it
                self._settle_usage(call, None, "".join(parts), chat)
            await self._record(call, 502, errors.UPSTREAM_ERROR.code, "failed")
            if response is None:
                return error_response(errors.UPSTREAM_ERROR, f"upstream failed: {exc}")
            error_event = errors.error_body(errors.UPSTREAM_ERROR, str(exc))
            await self._write_or_drop(response, b"data: " + error_event + b"\n\n")
            return response
        except ConnectionResetError:
            # The caller went away mid-stream. The upstream still produced (and billed)
            # what was generated so far: charge that, estimated, and record why it ended.
            await deltas.aclose()
            self._attempt(call, target, attempt_started, 200, None)
            self._settle_usage(call, None, "".join(parts), chat)
            await self._record(call, 499, errors.CLIENT_CLOSED.code, "allowed")
            return response or web.StreamResponse()
        self._attempt(call, target, attempt_started, 200, None)
        resolved = self._settle_usage(call, usage, "".join(parts), chat)
        await self._record(call, 200, None, "allowed")
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

    def _attempt(
        self, call: CallRecord, target: Target, started: float, status: int, error: str | None
    ) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        call.attempts.append(
            Attempt(target.provider, target.upstream_model, status, latency_ms, error)
        )

    async def _record(
        self, call: CallRecord, http_status: int, error_code: str | None, decision: str
    ) -> None:
        latency_ms = (time.perf_counter() - call.started) * 1000
        target = call.target
        cost = 0
        if target is not None and call.usage_source != "none":
            # Whatever the outcome, tokens an upstream produced are paid for.
            cost = target.cost_nanousd(call.prompt_tokens, call.completion_tokens)
        record = LineageRecord(
            event_id=call.event_id,
            event_type=LineageRecord.event_type_name,
            occurred_at=now_ms(),
            tenant_id=call.tenant_id,
            trace_id=call.trace_id,
            span_id=call.span_id,
            parent_span_id=call.parent_span_id,
            team_id=call.team_id,
            user_id=call.user_id,
            key_id=call.key_id,
            wallet_id=call.wallet_id,
            region=self.region,
            model_requested=call.model_requested,
            model_selected=target.upstream_model if target is not None else "",
            provider=target.provider if target is not None else "",
            selection_reason=call.selection_reason,
            attempts=tuple(call.attempts),
            policies_applied=tuple(call.policies),
            guardrails_triggered=tuple(call.guardrails),
            decision=decision,  # type: ignore[arg-type]
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            usage_source=call.usage_source,
            cost_nanousd=cost,
            reserved_nanousd=call.reserved_nanousd,
            latency_ms=latency_ms,
            ttft_ms=call.ttft_ms,
            gateway_overhead_ms=max(latency_ms - call.upstream_ms(), 0.0),
            http_status=http_status,
            error_code=error_code,
            stream=call.stream,
            request_sha256=call.request_sha256,
            response_sha256=call.response_sha256,
        )
        sealed = await self.lineage.publish(LINEAGE.name, record.tenant_id, record)
        self.budget.settled(call.wallet_id, sealed.seq, cost)


def _linked(call: CallRecord, response: web.StreamResponse) -> web.StreamResponse:
    """The response with the headers that name its lineage record (replies.link_headers);
    one already under way has them."""
    if not response.prepared:
        response.headers.update(link_headers(call.event_id, call.trace_id, call.span_id))
    return response
