"""Calls shed before their request reaches a handler: the gateway's side of
gateway/shed_protocol.py.

Under 5x its capacity a gateway refuses about four calls for each it serves, and what a
refusal costs comes off what it serves. Through aiohttp's request loop a refusal cost
about 0.45 ms of the gateway's CPU (a task, a request object, three middlewares, a
response object) before its record; the HTTP server now asks here as it parses a request
on an idle connection, and a call the admission limit refuses is answered from bytes
(`ShedReply.wire`).

Its record is kept before its reply is written, as any call's: the records of the calls
shed in one turn of the event loop are published together by one task (one turn of the
publisher's lock each, no task a call), then their replies written, then their access
lines and metrics made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import structlog
from multidict import CIMultiDictProxy

from gateway import errors
from gateway.admission import Admission
from gateway.call_log import log_call
from gateway.errors import error_body
from gateway.metrics import GatewayMetrics
from gateway.shed import ShedReply
from schemas.publisher import Publisher
from schemas.records import LineageRecord
from schemas.topics import LINEAGE

log = structlog.get_logger(__name__)

# Given the whole reply (bytes) once the call's record is kept, and whether the
# connection stays open after it.
Reply = Callable[[bytes, bool], None]

# The reply when the record could not be kept (the publisher failed): the caller must
# not take a refusal with no record for one that has it.
NOT_RECORDED = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
)


class EarlyShed:
    """Which requests the HTTP server may shed (`apis_by_path`: a `POST` to a call's path,
    the call's API), under which limit (`admission`), and how (`shed`)."""

    def __init__(
        self,
        apis_by_path: Mapping[str, str],
        admission: Admission,
        reply: ShedReply,
        lineage: Publisher,
        metrics: GatewayMetrics,
    ) -> None:
        self.apis_by_path = dict(apis_by_path)
        self.admission = admission
        self.reply = reply
        self.lineage = lineage
        self.metrics = metrics
        self._due: list[tuple[LineageRecord, bool, Reply]] = []
        self._flushing: asyncio.Task[None] | None = None
        body = error_body(errors.INTERNAL_ERROR, "the refusal could not be recorded")
        self._not_recorded = NOT_RECORDED % (len(body), body)

    def shed(
        self, api: str, headers: CIMultiDictProxy[str], *, keep_alive: bool, reply: Reply
    ) -> None:
        """Refuse one call: its record is made now, `reply` called once it is kept."""
        self._due.append((self.reply.record(api, headers), keep_alive, reply))
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._due:
                due, self._due = self._due, []
                await self._record_and_reply(due)
        finally:
            self._flushing = None

    async def _record_and_reply(self, due: list[tuple[LineageRecord, bool, Reply]]) -> None:
        emitting = time.perf_counter()
        kept = 0
        try:
            for record, _, _ in due:
                await self.lineage.publish(LINEAGE.name, record.tenant_id, record)
                kept += 1
        except Exception:  # the callers still get an answer: a 500, the connection closed
            log.exception("shed calls' records not kept", calls=len(due) - kept)
        emit_s = (time.perf_counter() - emitting) / max(1, kept)
        for index, (record, keep_alive, reply) in enumerate(due):
            if index >= kept:
                reply(self._not_recorded, False)
                continue
            reply(self.reply.wire(record, keep_alive=keep_alive), keep_alive)
            log_call(record, "")
            self.metrics.recorded(None, record, emit_s)
