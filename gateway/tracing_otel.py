"""The gateway's traces with the OpenTelemetry SDK (imported only when tracing is on;
gateway.tracing decides). One SERVER span per call, named `{operation} {model}`, with a
child span for the policy chain and a CLIENT span per upstream attempt (retries and
fallbacks each their own), following the GenAI semantic conventions:

- by default their v1.36.0 attributes (`gen_ai.system`), as the conventions ask of an
  instrumentation until the user opts in;
- with OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental, the latest release
  (semantic-conventions-genai v0.1.0, after semantic-conventions v1.41.0):
  `gen_ai.provider.name`, `gen_ai.request.stream`, cache and reasoning token counts and
  the stream's time to first chunk.

The call span's trace and span ids are the lineage record's trace_id and span_id (and the
reply's traceparent); a caller's valid traceparent (and tracestate) is its parent. No
prompt, completion, stop sequence or secret is ever an attribute: only the model,
numbers, enumerations and ids (content capture is not offered)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from gateway.anthropic_shape import MESSAGES_API, message_id
from gateway.catalogue import Target
from gateway.policy.chain import CallFacts, Verdict, evaluate
from gateway.policy.pack import PolicyPack
from gateway.replies import completion_id
from gateway.text_completions import COMPLETION_ID_PREFIX, COMPLETIONS_API
from schemas.records import LineageRecord

if TYPE_CHECKING:
    from aiohttp import web

E = TypeVar("E")
CHAT_API = "chat.completions"  # gateway.call_record's (importing it would make a circle)
INSTRUMENTATION = "govledger.gateway"

# gen_ai.operation.name of each API the gateway serves (its lineage `api`).
OPERATIONS = {
    CHAT_API: "chat",
    MESSAGES_API: "chat",
    "responses": "chat",
    "embeddings": "embeddings",
    COMPLETIONS_API: "text_completion",
}
# gen_ai.provider.name (latest) and gen_ai.system (v1.36.0) of the gateway's providers:
# the conventions' well-known value where there is one, else our own name.
PROVIDERS = {"azure": "azure.ai.openai", "mistral": "mistral_ai", "sim": "govledger.sim"}
SYSTEMS_V1_36 = {**PROVIDERS, "azure": "az.ai.openai"}
# The reply id the caller gets, made from the lineage event id, by API (the Responses
# API's id is the upstream's and an embeddings list has none: not recorded).
REPLY_IDS = {
    CHAT_API: completion_id,
    COMPLETIONS_API: lambda event_id: COMPLETION_ID_PREFIX + event_id,
    MESSAGES_API: message_id,
}
# Request parameters recorded, by body field: numbers only (a hostile body's other types
# are left out). max_tokens has three spellings across the APIs.
FLOAT_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
}
INT_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
    "dimensions": "gen_ai.embeddings.dimension.count",
}
ENCODING_FORMATS = frozenset({"float", "base64"})
# A W3C tracestate list member (key=value); at most 32 of them, kept to 512 characters.
TRACESTATE_MEMBER = re.compile(
    r"([a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)
MAX_TRACESTATE_MEMBERS = 32
MAX_TRACESTATE_CHARS = 512


class Traced(Protocol):
    """gateway.tracing.Traced (not imported: gateway.tracing imports this module)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    api: str
    event_id: str


def otlp_tracing(*, service_name: str, latest: bool) -> OtelTracing:
    """Spans batched (OTEL_BSP_*) to the OTLP/HTTP exporter, which reads the
    OTEL_EXPORTER_OTLP_* variables itself (endpoint, headers, timeout, compression, TLS)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OtelTracing.exporting(
        OTLPSpanExporter(), service_name=service_name, latest=latest, batched=True
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _body_of(endpoint: Any) -> Mapping[str, Any]:
    """The caller's body an endpoint adapter keeps (`body`, or its chat request's: the
    Messages adapter wraps a chat endpoint, which wraps the chat request)."""
    for _ in range(3):
        body = getattr(endpoint, "body", None)
        if isinstance(body, Mapping):
            return body
        endpoint = getattr(endpoint, "chat", None)
    return {}


def trace_state(headers: list[str]) -> TraceState:
    """The caller's tracestate when it is W3C's form, else none: parsed here, because the
    SDK's parser logs each bad member with the caller's text (one hostile header, many
    log lines)."""
    joined = ",".join(headers)
    if len(joined) > MAX_TRACESTATE_CHARS:
        return TraceState()
    members = [m.strip(" \t") for m in joined.split(",") if m.strip(" \t")]
    matches = [TRACESTATE_MEMBER.fullmatch(m) for m in members]
    pairs = [(m.group(1), m.group(2)) for m in matches if m is not None]
    keys = {key for key, _ in pairs}
    if len(pairs) != len(members) or len(keys) != len(pairs) or len(pairs) > MAX_TRACESTATE_MEMBERS:
        return TraceState()
    return TraceState(pairs)


def request_attributes(body: Mapping[str, Any], latest: bool) -> dict[str, Any]:
    """The request's parameters as gen_ai.request.* attributes: numbers and enumerations
    only, never text."""
    attributes: dict[str, Any] = {}
    for field, name in FLOAT_PARAMS.items():
        if (number := _number(body.get(field))) is not None:
            attributes[name] = number
    for field, name in INT_PARAMS.items():
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            attributes[name] = value
    top_k = body.get("top_k")
    if isinstance(top_k, int) and not isinstance(top_k, bool):
        attributes["gen_ai.request.top_k"] = top_k if latest else float(top_k)
    choices = body.get("n")
    if isinstance(choices, int) and not isinstance(choices, bool) and choices != 1:
        attributes["gen_ai.request.choice.count"] = choices
    if (encoding := body.get("encoding_format")) in ENCODING_FORMATS:
        attributes["gen_ai.request.encoding_formats"] = (encoding,)
    return attributes


class OtelTracing:
    """Tracing on: spans from one tracer provider of this process (not the global one,
    so that each gateway in a process, as in tests, has its own)."""

    def __init__(self, provider: TracerProvider, *, latest: bool) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(INSTRUMENTATION)
        self.latest = latest
        self.provider_key = "gen_ai.provider.name" if latest else "gen_ai.system"
        self.providers = PROVIDERS if latest else SYSTEMS_V1_36

    @classmethod
    def exporting(
        cls, exporter: SpanExporter, *, service_name: str, latest: bool, batched: bool
    ) -> OtelTracing:
        """Spans to `exporter`: batched off the event loop, or each as it ends (tests)."""
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        processor = BatchSpanProcessor(exporter) if batched else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        return cls(provider, latest=latest)

    def call(self, call: Traced, request: web.Request) -> OtelCallTrace:
        parent = None
        if call.parent_span_id is not None:  # the caller's traceparent, already validated
            flags = request.headers.get("traceparent", "").strip(" \t")[-2:]
            remote = SpanContext(
                int(call.trace_id, 16),
                int(call.parent_span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(int(flags, 16) & TraceFlags.SAMPLED),
                trace_state=trace_state(request.headers.getall("tracestate", [])),
            )
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
        operation = OPERATIONS.get(call.api, call.api)
        span = self.tracer.start_span(
            operation,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "gen_ai.operation.name": operation,
                "http.request.method": request.method,
                "http.route": request.path,
            },
        )
        ids = span.get_span_context()
        # The span's ids are the call's: the lineage record and the reply name this span.
        call.trace_id, call.span_id = format(ids.trace_id, "032x"), format(ids.span_id, "016x")
        return OtelCallTrace(self, span, operation)

    def shutdown(self) -> None:
        self.provider.shutdown()


class OtelCallTrace:
    """The spans of one call."""

    __slots__ = (
        "_answered_attempt",
        "_attempt",
        "_context",
        "finish_reason",
        "operation",
        "span",
        "tracing",
    )

    def __init__(self, tracing: OtelTracing, span: Span, operation: str) -> None:
        self.tracing = tracing
        self.span = span
        self.operation = operation
        self.finish_reason: str | None = None
        self._context = trace.set_span_in_context(span)
        self._attempt: Span | None = None
        # The successful attempt, ended when the record gives its usage (and its end time).
        self._answered_attempt: tuple[Span, int] | None = None

    def requested(self, endpoint: E) -> E:
        if not self.span.is_recording():  # not sampled: nothing it is told is kept
            return endpoint
        body = _body_of(endpoint)
        self.span.set_attributes(request_attributes(body, self.tracing.latest))
        if self.tracing.latest and isinstance(stream := getattr(endpoint, "stream", None), bool):
            self.span.set_attribute("gen_ai.request.stream", stream)
        return endpoint

    def policy_chain(self, pack: PolicyPack, facts: CallFacts) -> Verdict:
        span = self.tracing.tracer.start_span("policy chain", context=self._context)
        try:
            verdict = evaluate(pack, facts)
            span.set_attributes(
                {
                    "govledger.policy.steps": verdict.applied,
                    "govledger.policy.guardrails": tuple(
                        f"{g.name}:{g.action}" for g in verdict.triggered
                    ),
                }
            )
            if verdict.refusal is not None:
                span.set_attribute("error.type", verdict.refusal.reason)
            elif verdict.review is not None:
                span.set_attribute("govledger.policy.review", True)
            return verdict
        finally:
            span.end()

    def _attempt_span(self, target: Target) -> Span:
        return self.tracing.tracer.start_span(
            f"{self.operation} {target.upstream_model}",
            context=self._context,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": self.operation,
                self.tracing.provider_key: self.tracing.providers.get(
                    target.provider, target.provider
                ),
                "gen_ai.request.model": target.upstream_model,
                "govledger.model": target.model,
            },
        )

    def attempt_started(self, target: Target) -> None:
        self._attempt = self._attempt_span(target)

    def attempt_ended(self, target: Target, status: int, error_class: str | None) -> None:
        # No attempt began when the target's breaker was open: a span of no length says so.
        span = self._attempt or self._attempt_span(target)
        self._attempt = None
        if status:
            span.set_attribute("http.response.status_code", status)
        if error_class is None:
            span.set_attribute("gen_ai.response.model", target.upstream_model)
            self._answered_attempt = (span, time.time_ns())
            return
        span.set_attribute("error.type", error_class)
        span.set_status(Status(StatusCode.ERROR))
        span.end()

    def answered(self, finish_reason: str) -> None:
        self.finish_reason = finish_reason

    def finished(self, record: LineageRecord) -> None:
        span = self.span
        if not span.is_recording():  # not sampled (its attempts and chain span neither)
            span.end()
            return
        model = record.model_requested
        span.update_name(f"{self.operation} {model}" if model else self.operation)
        attributes = self._outcome(record)
        if self._answered_attempt is not None:
            attempt, ended_ns = self._answered_attempt
            attempt.set_attributes(self._usage(record))
            attempt.end(end_time=ended_ns)
            self._answered_attempt = None
        if self._attempt is not None:  # programmer error upstream: never left open
            self._attempt.end()
        span.set_attributes(attributes)
        if record.http_status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def _outcome(self, record: LineageRecord) -> dict[str, Any]:
        tracing = self.tracing
        attributes: dict[str, Any] = {
            "http.response.status_code": record.http_status,
            "govledger.event_id": record.event_id,
            "govledger.tenant_id": record.tenant_id,
            "govledger.team_id": record.team_id,
            "govledger.decision": record.decision,
            "govledger.cost_nanousd": record.cost_nanousd,
            "govledger.attempts": len(record.attempts),
        }
        if record.model_requested:
            attributes["gen_ai.request.model"] = record.model_requested
        if record.provider:
            attributes[tracing.provider_key] = tracing.providers.get(
                record.provider, record.provider
            )
            attributes["govledger.selection_reason"] = record.selection_reason
        if record.error_code is not None:
            attributes["error.type"] = record.error_code
        if self.finish_reason is not None:
            attributes["gen_ai.response.model"] = record.model_selected
            if self.operation != "embeddings":  # an embedding has no finish reason
                attributes["gen_ai.response.finish_reasons"] = (self.finish_reason,)
            make_id = REPLY_IDS.get(record.api or CHAT_API)
            if make_id is not None:
                attributes["gen_ai.response.id"] = make_id(record.event_id)
            if tracing.latest and record.stream and record.ttft_ms is not None:
                attributes["gen_ai.response.time_to_first_chunk"] = record.ttft_ms / 1000
        attributes.update(self._usage(record))
        return attributes

    def _usage(self, record: LineageRecord) -> dict[str, Any]:
        if record.usage_source == "none":
            return {}
        usage: dict[str, Any] = {
            "gen_ai.usage.input_tokens": record.prompt_tokens,
            "gen_ai.usage.output_tokens": record.completion_tokens,
            "govledger.usage_source": record.usage_source,
        }
        if self.tracing.latest:
            extra: Sequence[tuple[str, int | None]] = (
                ("gen_ai.usage.cache_read.input_tokens", record.cached_prompt_tokens),
                ("gen_ai.usage.cache_write.input_tokens", record.cache_write_tokens),
                ("gen_ai.usage.reasoning.output_tokens", record.reasoning_tokens),
            )
            usage.update((name, count) for name, count in extra if count)
        return usage
