"""The shed path's record and reply (gateway/shed.py): made from a template for speed, yet
the same record as the general refusal path makes for a call refused before its key is
known, and a reply that names it."""

from __future__ import annotations

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.call_record import CallRecord
from gateway.replies import EVENT_ID_HEADER
from gateway.shed import ShedReply
from schemas.records import replaced

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


def headers(*traceparents: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict([("traceparent", t) for t in traceparents]))


def test_a_shed_record_is_the_refusal_record_the_general_path_makes() -> None:
    shed = ShedReply("eu-west", retry_after_s=2).record(
        "embeddings", headers(f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
    )
    call = CallRecord(0.0, "", TRACE_ID, PARENT_SPAN_ID)
    call.api = "embeddings"
    general = call.lineage(
        region="eu-west",
        latency_ms=shed.latency_ms,
        http_status=503,
        error_code="overloaded",
        decision="rejected",
    )
    # Only the per-call ids and the clock differ; every other field is the same.
    assert shed == replaced(
        general, event_id=shed.event_id, span_id=shed.span_id, occurred_at=shed.occurred_at
    )
    assert shed.event_id != call.event_id and len(shed.span_id) == 16


def test_a_missing_or_malformed_traceparent_starts_a_new_trace() -> None:
    reply = ShedReply("eu-west", retry_after_s=1)
    valid = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
    for sent in (headers(), headers("garbage"), headers(valid, valid)):
        record = reply.record("chat.completions", sent)
        assert record.trace_id != TRACE_ID and len(record.trace_id) == 32
        assert record.parent_span_id is None
    first, second = (reply.record("chat.completions", headers()) for _ in range(2))
    assert first.event_id != second.event_id and first.trace_id != second.trace_id


def test_the_reply_is_503_overloaded_with_retry_after_naming_its_record() -> None:
    reply = ShedReply("eu-west", retry_after_s=3)
    record = reply.record("chat.completions", headers())
    response = reply.response(record)
    assert response.status == 503
    assert response.headers["Retry-After"] == "3"
    assert response.headers[EVENT_ID_HEADER] == record.event_id
    assert response.headers["traceparent"] == f"00-{record.trace_id}-{record.span_id}-01"
    assert response.content_type == "application/json"
    assert response.body is not None
    error = orjson.loads(bytes(response.body))["error"]  # type: ignore[arg-type]
    assert (error["code"], error["type"]) == ("overloaded", "server_error")
