"""What the gateway learns during one call, and the lineage record it becomes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.catalogue import Target, price_in_force
from gateway.tracing import NO_TRACE, CallTrace
from schemas import pricing
from schemas.ids import new_span_id, now_ms, uuid7
from schemas.pricing import PriceBook, Usage
from schemas.records import Attempt, Guardrail, LineageRecord, UsageSource

CHAT_API = "chat.completions"


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
    # The counts by token kind, as reported (or estimated); prompt/completion above too.
    usage: Usage | None = None
    # Prices by date (the gateway's views); None or no price there: the target's.
    prices: PriceBook | None = None
    reserved_nanousd: int = 0
    ttft_ms: float | None = None
    response_sha256: str | None = None
    # Made when the call starts, so the reply (its id and headers) can name its record.
    event_id: str = field(default_factory=uuid7)
    span_id: str = field(default_factory=new_span_id)
    api: str = CHAT_API
    # The call's spans (gateway.tracing); NO_TRACE, which does nothing, when tracing is off.
    trace: CallTrace = NO_TRACE

    def attempted(self, target: Target, started: float, status: int, error: str | None) -> None:
        """Note an attempt on a target that started at `started` (perf_counter)."""
        latency_ms = (time.perf_counter() - started) * 1000
        self.attempts.append(
            Attempt(target.provider, target.upstream_model, status, latency_ms, error)
        )
        self.trace.attempt_ended(target, status, error)

    def upstream_ms(self) -> float:
        """Time spent waiting on upstream attempts."""
        return sum(a.latency_ms for a in self.attempts)

    def cost_nanousd(self, at_ms: int) -> int:
        """What the call costs at the price in force at `at_ms` (its occurred_at):
        whatever the outcome, tokens an upstream produced are paid for."""
        target = self.target
        if target is None or self.usage_source == "none":
            return 0
        usage = self.usage or Usage(self.prompt_tokens, self.completion_tokens)
        return pricing.cost_nanousd(price_in_force(self.prices, target, at_ms), usage)

    def lineage(
        self,
        *,
        region: str,
        latency_ms: float,
        http_status: int,
        error_code: str | None,
        decision: str,
    ) -> LineageRecord:
        """The call's lineage record."""
        target = self.target
        occurred_at = now_ms()
        usage = self.usage or Usage(self.prompt_tokens, self.completion_tokens)
        return LineageRecord(
            event_id=self.event_id,
            event_type=LineageRecord.event_type_name,
            occurred_at=occurred_at,
            tenant_id=self.tenant_id,
            trace_id=self.trace_id,
            span_id=self.span_id,
            parent_span_id=self.parent_span_id,
            team_id=self.team_id,
            user_id=self.user_id,
            key_id=self.key_id,
            wallet_id=self.wallet_id,
            region=region,
            model_requested=self.model_requested,
            model_selected=target.upstream_model if target is not None else "",
            provider=target.provider if target is not None else "",
            selection_reason=self.selection_reason,
            attempts=tuple(self.attempts),
            policies_applied=tuple(self.policies),
            guardrails_triggered=tuple(self.guardrails),
            decision=decision,  # type: ignore[arg-type]
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            usage_source=self.usage_source,
            cost_nanousd=self.cost_nanousd(occurred_at),
            reserved_nanousd=self.reserved_nanousd,
            latency_ms=latency_ms,
            ttft_ms=self.ttft_ms,
            gateway_overhead_ms=max(latency_ms - self.upstream_ms(), 0.0),
            http_status=http_status,
            error_code=error_code,
            stream=self.stream,
            request_sha256=self.request_sha256,
            response_sha256=self.response_sha256,
            api=self.api,
            cached_prompt_tokens=usage.cached_prompt_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            audio_prompt_tokens=usage.audio_prompt_tokens,
            image_prompt_tokens=usage.image_prompt_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            audio_completion_tokens=usage.audio_completion_tokens,
        )
