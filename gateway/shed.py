"""A call shed by the admission limit (gateway/admission.py): refused at the cheapest cost
that still records it like any refusal.

Under 5x its capacity a gateway refuses about four calls for each it serves, so what a
refusal costs comes off the goodput. The shed path does no per-call setup it can skip: no
body read, no key lookup, no tracing span, no CallRecord; it reads one header (the
caller's traceparent, which the record keeps); its lineage record is a copy of one built
at start with the per-call fields set (the same fields filled as any refusal before the
key is known), and its reply body is bytes made once.
"""

from __future__ import annotations

import time
from http import HTTPStatus

import orjson
from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDictProxy

from gateway import anthropic_errors, errors
from gateway.anthropic_shape import MESSAGES_API
from gateway.call_record import CHAT_API
from gateway.chat import parse_traceparent
from gateway.errors import error_body
from gateway.replies import link_headers
from schemas.ids import new_span_id, new_trace_id, now_ms, uuid7
from schemas.records import LineageRecord, replaced

SHED_MESSAGE = "gateway overloaded: its event loop is behind; retry shortly"


class ShedReply:
    """What every shed call shares (its error body, its headers' fixed part, its record's
    fixed fields), made once; `record` and `response` fill in the call's own."""

    def __init__(self, region: str, retry_after_s: int) -> None:
        kind = errors.OVERLOADED
        self.body = error_body(kind, SHED_MESSAGE)
        # What anthropic_errors.as_anthropic makes of `body` for the Messages API.
        self.anthropic_body = orjson.dumps(
            anthropic_errors.error_object(kind.status, SHED_MESSAGE, kind.code)
        )
        self.retry_after = str(retry_after_s)
        self._status_line = f"HTTP/1.1 {kind.status} {HTTPStatus(kind.status).phrase}\r\n"
        self.template = LineageRecord(
            event_id="",
            event_type=LineageRecord.event_type_name,
            occurred_at=0,
            tenant_id="unknown",  # as any refusal before the key is known
            trace_id="",
            span_id="",
            team_id="",
            key_id="",
            wallet_id="",
            region=region,
            model_requested="",
            model_selected="",
            provider="",
            selection_reason="",
            decision="rejected",
            prompt_tokens=0,
            completion_tokens=0,
            usage_source="none",
            cost_nanousd=0,
            reserved_nanousd=0,
            latency_ms=0.0,
            gateway_overhead_ms=0.0,
            http_status=kind.status,
            error_code=kind.code,
            stream=False,
            request_sha256="",  # the body is not read
            api=CHAT_API,
        )

    def record(self, api: str, headers: CIMultiDictProxy[str]) -> LineageRecord:
        """The lineage record of one shed call (its latency: until its record is made, as
        any call's). A malformed traceparent (refused after authentication when a call is
        admitted) starts a new trace, as there; two join into a value not W3C's form."""
        started = time.perf_counter()
        traced = parse_traceparent(",".join(headers.getall("traceparent", ())) or None)
        trace_id, parent_span_id = traced or (new_trace_id(), None)
        return replaced(
            self.template,
            event_id=uuid7(),
            occurred_at=now_ms(),
            trace_id=trace_id,
            span_id=new_span_id(),
            parent_span_id=parent_span_id,
            api=api,
            latency_ms=(latency_ms := (time.perf_counter() - started) * 1000),
            gateway_overhead_ms=latency_ms,  # no upstream attempt
        )

    def response(self, record: LineageRecord) -> web.Response:
        """503 overloaded with Retry-After, naming its record (replies.link_headers)."""
        headers = {
            "Content-Type": "application/json",
            "Retry-After": self.retry_after,
            **link_headers(record.event_id, record.trace_id, record.span_id),
        }
        return web.Response(status=errors.OVERLOADED.status, body=self.body, headers=headers)

    def wire(self, record: LineageRecord, *, keep_alive: bool) -> bytes:
        """The whole HTTP/1.1 reply of a call shed before its request reached a handler
        (gateway/shed_protocol.py): what `response` makes (and aiohttp adds: its length,
        Date and Server), as bytes; in Anthropic's shape for the Messages API."""
        body = self.anthropic_body if record.api == MESSAGES_API else self.body
        linked = link_headers(record.event_id, record.trace_id, record.span_id)
        head = "".join(
            (
                self._status_line,
                "Content-Type: application/json\r\n",
                f"Retry-After: {self.retry_after}\r\n",
                *(f"{name}: {value}\r\n" for name, value in linked.items()),
                f"Content-Length: {len(body)}\r\n",
                f"Date: {rfc822_formatted_time()}\r\n",
                f"Server: {SERVER_SOFTWARE}\r\n",
                "" if keep_alive else "Connection: close\r\n",
                "\r\n",
            )
        )
        return head.encode("latin-1") + body
