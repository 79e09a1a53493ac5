"""OpenTelemetry traces of gateway calls (gateway.tracing), read from the SDK's in-memory
exporter: the call's SERVER span and its gen_ai.* attributes, the policy chain's span,
one CLIENT span per upstream attempt; the trace is the lineage record's and joins the
caller's traceparent; refusals carry error.type; no prompt or answer text anywhere. With
tracing off no span object is made."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from aiohttp.test_utils import TestServer
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bench.otlp_sink import OtlpSink
from gateway.tracing import NO_TRACING, latest_conventions, otlp_configured, tracing_from_env
from gateway.tracing_otel import OtelTracing, request_attributes
from schemas.records import LineageRecord
from tests.component.support import CAPTURE_MODEL, FLAKY_MODEL, Component, running_component

PROMPT = "tell the ledger about jane.doe@example.com"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Component]:
    async with running_component(
        tmp_path, fallbacks=f"{FLAKY_MODEL}=sim-small", retry_backoff_ms=1
    ) as running:
        yield running


def traced(stack: Component, *, latest: bool = False) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    stack.gateway.tracing = OtelTracing.exporting(
        exporter, service_name="govledger-test", latest=latest, batched=False
    )
    return exporter


def call_span(spans: tuple[ReadableSpan, ...]) -> ReadableSpan:
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    return server


def children(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    server = call_span(spans)
    found = [s for s in spans if s.kind == kind]
    assert all(s.parent is not None and s.parent.span_id == server.context.span_id for s in found)
    return found


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def assert_no_text(spans: tuple[ReadableSpan, ...], *texts: str) -> None:
    dumped = orjson.dumps([dict(s.attributes or {}) for s in spans]).decode()
    for text in texts:
        assert text not in dumped


def only_record(stack: Component) -> LineageRecord:
    (record,) = stack.lineage.lineage()
    return record


async def test_a_call_is_one_server_span_with_its_attempt_and_policy_spans(
    stack: Component,
) -> None:
    exporter = traced(stack)
    client = await stack.sdk_for("traced")
    raw = await client.chat.completions.with_raw_response.create(
        model=CAPTURE_MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        temperature=0.25,
        max_tokens=64,
        seed=7,
        stop=["SECRET-STOP"],
    )
    reply = raw.parse()
    spans = exporter.get_finished_spans()
    record = only_record(stack)
    server = call_span(spans)
    # The span is the lineage record's and the reply's traceparent names it.
    assert hex_ids(server) == (record.trace_id, record.span_id)
    assert raw.headers["traceparent"] == f"00-{record.trace_id}-{record.span_id}-01"
    assert server.parent is None
    assert server.name == f"chat {CAPTURE_MODEL}"
    attributes = dict(server.attributes or {})
    assert {
        k: attributes.get(k)
        for k in (
            "gen_ai.operation.name",
            "gen_ai.system",
            "gen_ai.request.model",
            "gen_ai.response.model",
            "gen_ai.response.id",
            "gen_ai.response.finish_reasons",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.request.temperature",
            "gen_ai.request.max_tokens",
            "gen_ai.request.seed",
            "http.response.status_code",
            "govledger.event_id",
        )
    } == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": CAPTURE_MODEL,
        "gen_ai.response.model": record.model_selected,
        "gen_ai.response.id": reply.id,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 1,
        "gen_ai.request.temperature": 0.25,
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.seed": 7,
        "http.response.status_code": 200,
        "govledger.event_id": record.event_id,
    }
    # v1.36.0 by default: no attribute of the later conventions.
    assert "gen_ai.provider.name" not in attributes and "gen_ai.request.stream" not in attributes
    assert "error.type" not in attributes and server.status.status_code == StatusCode.UNSET
    (attempt,) = children(spans, SpanKind.CLIENT)
    assert attempt.name == f"chat {record.model_selected}"
    assert attempt.attributes is not None
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 1
    (policy,) = children(spans, SpanKind.INTERNAL)
    assert policy.name == "policy chain" and policy.attributes is not None
    assert_no_text(spans, PROMPT, "jane.doe", "SECRET-STOP", client.api_key)


async def test_a_streamed_call_on_the_latest_conventions(stack: Component) -> None:
    exporter = traced(stack, latest=True)
    client = await stack.sdk_for("streamer")
    chunks = await client.chat.completions.create(
        model="sim-small",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
    assert text
    spans = exporter.get_finished_spans()
    record = only_record(stack)
    server = call_span(spans)
    assert hex_ids(server) == (record.trace_id, record.span_id)
    attributes = dict(server.attributes or {})
    assert attributes["gen_ai.provider.name"] == "govledger.sim"
    assert "gen_ai.system" not in attributes
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.usage.output_tokens"] == record.completion_tokens > 0
    assert attributes["gen_ai.usage.input_tokens"] == record.prompt_tokens > 0
    assert record.ttft_ms is not None
    assert attributes["gen_ai.response.time_to_first_chunk"] == record.ttft_ms / 1000
    (attempt,) = children(spans, SpanKind.CLIENT)
    assert attempt.attributes is not None and attempt.attributes["gen_ai.provider.name"] == (
        "govledger.sim"
    )
    assert_no_text(spans, PROMPT, text)


async def test_a_fallback_shows_each_attempt_and_joins_the_callers_trace(
    stack: Component,
) -> None:
    exporter = traced(stack)
    client = await stack.sdk_for("fallback")
    trace_id, parent_span_id = secrets.token_hex(16), secrets.token_hex(8)
    await client.chat.completions.create(
        model=FLAKY_MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        extra_headers={
            "traceparent": f"00-{trace_id}-{parent_span_id}-01",
            "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        },
    )
    spans = exporter.get_finished_spans()
    record = stack.lineage_of(trace_id)
    server = call_span(spans)
    assert hex_ids(server) == (trace_id, record.span_id)
    assert server.context.trace_state.to_header() == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    assert server.parent is not None and format(server.parent.span_id, "016x") == parent_span_id
    assert record.parent_span_id == parent_span_id
    assert server.attributes is not None
    assert server.attributes["govledger.selection_reason"] == "fallback"
    attempts = sorted(children(spans, SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    # One retry of the primary (the default of one), then the fallback answers.
    trail = [
        (
            dict(a.attributes or {}).get("gen_ai.request.model"),
            dict(a.attributes or {}).get("error.type"),
            a.status.status_code,
        )
        for a in attempts
    ]
    failed = (FLAKY_MODEL, "http_5xx", StatusCode.ERROR)
    assert trail == [failed, failed, ("sim-small", None, StatusCode.UNSET)]
    # The same trail as the lineage record's.
    assert [(a.model, a.error_class) for a in record.attempts] == [t[:2] for t in trail]


async def test_a_caller_that_does_not_sample_its_trace_gets_no_spans(
    stack: Component, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = traced(stack)
    client = await stack.sdk_for("unsampled")
    trace_id = secrets.token_hex(16)
    hostile_state = ",".join(["not a member", "k=v" * 50, "sk-leaked=" + "x" * 300] * 20)
    await client.chat.completions.create(
        model="sim-small",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={
            "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-00",
            "tracestate": hostile_state,
        },
    )
    assert exporter.get_finished_spans() == ()
    assert stack.lineage_of(trace_id).trace_id == trace_id  # the record still joins it
    # A tracestate not in W3C's form is dropped without a word: no log line echoes it.
    assert "sk-leaked" not in caplog.text and "not a member" not in caplog.text


async def test_refusals_mark_the_call_span_with_their_error_type(stack: Component) -> None:
    exporter = traced(stack)
    unfunded = stack.sdk((await stack.create_key("unfunded"))["key"])
    with pytest.raises(openai.APIStatusError):
        await unfunded.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "hi"}]
        )
    limited = await stack.sdk_for("limited", requests_per_minute=1)
    await limited.chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": "hi"}]
    )
    with pytest.raises(openai.RateLimitError):
        await limited.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "hi"}]
        )
    blocker = "name: blocker\npolicies:\n  chain:\n    - name: pii-detector\n"
    blocker += "      policy: {detect: [email], action: block}\n"
    pushed = await stack.admin(
        "POST", "/v1/admin/policies", json={"tenant": "default", "source_yaml": blocker}
    )
    assert pushed.status == 201, await pushed.text()
    blocked = await stack.sdk_for("blocked", policy_pack="blocker")
    with pytest.raises(openai.APIStatusError):
        await blocked.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": PROMPT}]
        )
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    outcomes = [dict(s.attributes or {}).get("error.type") for s in servers]
    assert outcomes == ["budget_exhausted", None, "rate_limited", "pii_blocked"]
    records = stack.lineage.lineage()
    assert [(r.trace_id, r.error_code) for r in records] == [
        (hex_ids(s)[0], o) for s, o in zip(servers, outcomes, strict=True)
    ]
    # A refusal is the caller's error (4xx): the span's status stays unset, as HTTP
    # servers' spans do; no upstream was tried.
    assert {s.status.status_code for s in servers} == {StatusCode.UNSET}
    refused_traces = {s.context.trace_id for s, o in zip(servers, outcomes, strict=True) if o}
    assert not [
        s for s in spans if s.kind == SpanKind.CLIENT and s.context.trace_id in refused_traces
    ]
    policy_spans = [s for s in spans if s.name == "policy chain"]
    assert dict(policy_spans[-1].attributes or {})["error.type"] == "pii_blocked"
    assert_no_text(spans, PROMPT, "jane.doe")


async def test_with_tracing_off_no_span_is_made(
    stack: Component, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk import trace as sdk_trace

    made: list[Any] = []
    for cls in (sdk_trace.Span, trace.NonRecordingSpan):
        original = cls.__init__

        def counting(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
            made.append(self)
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)
    assert stack.gateway.tracing is NO_TRACING
    client = await stack.sdk_for("dark")
    await client.chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": "hi"}]
    )
    chunks = await client.chat.completions.create(
        model=FLAKY_MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert [c async for c in chunks]
    assert len(stack.lineage.lineage()) == 2
    assert made == []


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_EXPORTER_OTLP_HEADERS": "a=b"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_tracing_is_on_only_when_an_otlp_endpoint_is_set(environ: dict[str, str], on: bool) -> None:
    assert otlp_configured(environ) is on
    if not on:
        assert tracing_from_env(environ) is NO_TRACING


def test_the_latest_conventions_are_opted_into_by_name_and_grpc_is_refused() -> None:
    assert latest_conventions({"OTEL_SEMCONV_STABILITY_OPT_IN": "http, gen_ai_latest_experimental"})
    assert not latest_conventions({"OTEL_SEMCONV_STABILITY_OPT_IN": "http"})
    assert not latest_conventions({})
    with pytest.raises(ValueError, match="grpc"):
        tracing_from_env(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        )


async def test_spans_reach_the_otlp_receiver_the_standard_variables_name(
    stack: Component, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = OtlpSink(keep=True)
    receiver = TestServer(sink.application())
    await receiver.start_server()
    try:
        for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-under-test")
        tracing = tracing_from_env()
        assert tracing is not NO_TRACING
        stack.gateway.tracing = tracing
        client = await stack.sdk_for("exported")
        await client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": PROMPT}]
        )
        await asyncio.to_thread(tracing.shutdown)  # sends the batch (OTLP/HTTP, protobuf)
    finally:
        await receiver.close()
    record = only_record(stack)
    kinds = sorted((span.kind, span.name) for span in sink.spans)
    assert kinds == [
        (ProtoSpan.SPAN_KIND_INTERNAL, "policy chain"),
        (ProtoSpan.SPAN_KIND_SERVER, "chat sim-small"),
        (ProtoSpan.SPAN_KIND_CLIENT, "chat sim-small"),
    ]
    (server,) = [span for span in sink.spans if span.kind == ProtoSpan.SPAN_KIND_SERVER]
    assert (server.trace_id.hex(), server.span_id.hex()) == (record.trace_id, record.span_id)
    attributes = {a.key: a.value for a in server.attributes}
    assert attributes["gen_ai.operation.name"].string_value == "chat"
    assert attributes["gen_ai.usage.output_tokens"].int_value == record.completion_tokens


def test_request_parameters_become_attributes_only_as_numbers_and_known_words() -> None:
    hostile = {
        "temperature": "0.5; drop table",
        "top_p": True,
        "max_tokens": 1.5,
        "max_output_tokens": 300,
        "seed": "7",
        "n": 3,
        "top_k": 40,
        "frequency_penalty": float("inf"),
        "presence_penalty": -0.5,
        "encoding_format": "base64 and more",
        "stop": ["the secret word"],
        "user": "jane.doe@example.com",
    }
    assert request_attributes(hostile, latest=True) == {
        "gen_ai.request.max_tokens": 300,
        "gen_ai.request.choice.count": 3,
        "gen_ai.request.top_k": 40,
        "gen_ai.request.presence_penalty": -0.5,
    }
    assert request_attributes({"top_k": 40, "encoding_format": "float"}, latest=False) == {
        "gen_ai.request.top_k": 40.0,
        "gen_ai.request.encoding_formats": ("float",),
    }
