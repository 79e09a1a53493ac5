"""OpenTelemetry traces of gateway calls, behind an interface the call pipeline calls
unconditionally: `Tracing.call` starts the trace of one call and hands back its
`CallTrace`, which the pipeline tells what happens (the request parsed, the policy
chain, each upstream attempt, the answer, the lineage record).

Tracing is on when the standard OTLP variables name where spans go
(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; the other
OTEL_EXPORTER_OTLP_*, OTEL_BSP_*, OTEL_TRACES_SAMPLER, OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES variables are the SDK's to read) and OTEL_SDK_DISABLED is not
true. Off, nothing of OpenTelemetry is imported: `NO_TRACING` hands every call the same
`NO_TRACE`, whose methods do nothing, so no tracer provider and no span object exists.
On, gateway.tracing_otel builds the spans (the GenAI semantic conventions; see
docs/observability.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, TypeVar

from gateway.policy.chain import CallFacts, Verdict, evaluate
from gateway.policy.pack import PolicyPack

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.catalogue import Target
    from schemas.records import LineageRecord

E = TypeVar("E")

DEFAULT_SERVICE_NAME = "govledger-gateway"
# The only OTLP protocol whose exporter is installed (opentelemetry-exporter-otlp-proto-http).
OTLP_PROTOCOL = "http/protobuf"


class Traced(Protocol):
    """What a call's trace reads and sets on its CallRecord (gateway.call_record): the
    trace and span ids the lineage record and the reply's traceparent carry."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    api: str
    event_id: str


class CallTrace(Protocol):
    """The trace of one call, as the pipeline tells it what happens."""

    def requested(self, endpoint: E) -> E:
        """The request as parsed (its model and parameters); `endpoint` handed back."""
        ...

    def policy_chain(self, pack: PolicyPack, facts: CallFacts) -> Verdict:
        """The policy chain's verdict on the call (gateway.policy.chain.evaluate)."""
        ...

    def attempt_started(self, target: Target) -> None:
        """An upstream attempt on `target` begins."""
        ...

    def attempt_ended(self, target: Target, status: int, error_class: str | None) -> None:
        """The attempt on `target` ended (status 0: no answer; error_class None: success)."""
        ...

    def answered(self, finish_reason: str) -> None:
        """The upstream's answer ended, for this reason."""
        ...

    def finished(self, record: LineageRecord) -> None:
        """The call's lineage record: what the call's span says of its outcome."""
        ...


class Tracing(Protocol):
    """Where calls' traces begin."""

    def call(self, call: Traced, request: web.Request) -> CallTrace:
        """The trace of a call (its ids set on `call` when a span is made)."""
        ...

    def shutdown(self) -> None:
        """Send what is pending and stop (blocks: run it off the event loop)."""
        ...


class NoTrace:
    """The trace of every call when tracing is off: each method does only what the
    pipeline needs done (the chain evaluated, the endpoint handed back)."""

    __slots__ = ()

    def requested(self, endpoint: E) -> E:
        return endpoint

    def policy_chain(self, pack: PolicyPack, facts: CallFacts) -> Verdict:
        return evaluate(pack, facts)

    def attempt_started(self, target: Target) -> None:
        return None

    def attempt_ended(self, target: Target, status: int, error_class: str | None) -> None:
        return None

    def answered(self, finish_reason: str) -> None:
        return None

    def finished(self, record: LineageRecord) -> None:
        return None


NO_TRACE = NoTrace()


class NoTracing:
    """Tracing off: every call gets NO_TRACE and its ids stay the gateway's own."""

    __slots__ = ()

    def call(self, call: Traced, request: web.Request) -> CallTrace:
        return NO_TRACE

    def shutdown(self) -> None:
        return None


NO_TRACING = NoTracing()


def otlp_configured(environ: Mapping[str, str]) -> bool:
    """Whether the OTLP variables ask for traces: an endpoint for them is set, the SDK is
    not disabled and the traces exporter is not `none`."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    endpoints = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    return any(environ.get(name, "").strip() for name in endpoints)


def latest_conventions(environ: Mapping[str, str]) -> bool:
    """Whether OTEL_SEMCONV_STABILITY_OPT_IN asks for the latest experimental GenAI
    conventions (`gen_ai_latest_experimental`, one of a comma-separated list)."""
    opted = environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    return "gen_ai_latest_experimental" in {v.strip() for v in opted.split(",")}


def tracing_from_env(environ: Mapping[str, str] | None = None) -> Tracing:
    """The process's tracing: OTLP over HTTP when the variables ask for it, else off.
    A protocol other than http/protobuf is refused (ValueError): its exporter is not
    installed, and silently sending nothing is worse than not starting."""
    env = os.environ if environ is None else environ
    if not otlp_configured(env):
        return NO_TRACING
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name, "").strip()
        if protocol and protocol != OTLP_PROTOCOL:
            raise ValueError(f"{name}={protocol!r} is not supported: use {OTLP_PROTOCOL}")
        if protocol:
            break
    from gateway.tracing_otel import otlp_tracing  # only when on: off imports no SDK

    return otlp_tracing(
        service_name=env.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME,
        latest=latest_conventions(env),
    )
