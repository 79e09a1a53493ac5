"""The gateway's HTTP server, deciding admission as it parses calls (gateway/early_shed.py).

aiohttp's connection handler parses what arrives (`data_received`) and queues the
requests for its request loop, which runs each through a task, the application's
middlewares and a handler. Here, on a connection whose request loop is waiting for a
request, the calls at the head of the queue are decided as they are parsed: each one the
admission limit refuses is taken off the queue and answered from bytes once its record is
kept; the first one it admits is admitted here, for its handler. So the calls parsed in
one turn of the event loop are judged against each other, not all against the calls in
flight before any of them reached a handler, and a refusal costs no task, request object
or middleware.

Only a whole call is decided here: HTTP/1.1, a POST to a call's path, its body arrived
with it (nothing is left unread on the connection), and never one behind a request the
loop is serving (replies on a connection keep its requests' order). While a shed reply
waits for its record, the connection's later requests wait too. Everything else goes on
as usual, and the handler admits or sheds it (gateway.pipeline.Gateway.serve).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http import HttpVersion11, RawRequestMessage

from gateway.early_shed import EarlyShed
from schemas.http_errors import JsonErrorAppRunner, JsonErrorRequestHandler, JsonErrorServer

EARLY_SHED = web.AppKey("early_shed", EarlyShed)


class SheddingRequestHandler(JsonErrorRequestHandler):
    """aiohttp's connection handler, shedding as it parses (see the module)."""

    def __init__(self, manager: web.Server, early: EarlyShed, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._early = early
        self._replies_due = 0  # shed replies whose records are not kept yet
        self._admitted = 0  # calls admitted as they were parsed, not yet taken by a handler

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():  # the request loop is busy: as usual
            super().data_received(data)
            return
        # The request loop waits for a request: parse without waking it, so that the
        # first requests may be shed here; wake it for what is left.
        self._waiter = None
        try:
            super().data_received(data)
        finally:
            self._waiter = waiter
        if not self._replies_due:
            self._shed_leading()
        # aiohttp paused reading when the queue filled (a pipelining client); the loop
        # resumes it as it takes requests, but it does not see the ones shed here. The
        # resume parses what the parser holds through here again (`data_received(b"")`):
        # only new bytes resume, or a short queue would resume for ever.
        resumable = len(self._messages) <= self._msg_queue_resume_size
        if data and self._buffer_paused and resumable:
            self._resume_reading_if_drained()
        self._wake_for_queued()

    def _shed_leading(self) -> None:
        """Decide the calls at the head of the queue: shed each the limit refuses (taken
        off the queue), up to the first one it admits (admitted now, for its handler:
        `take_admitted`) or the first request that is not a whole call."""
        if self._admitted:
            return  # the head was admitted already, for its handler
        admission = self._early.admission
        while self._messages:
            message, payload = self._messages[0]
            api = self._api_of(message, payload)
            if api is None:
                return
            if admission.admit():
                self._admitted += 1
                return
            self._messages.popleft()
            if self._parser is not None:
                self._parser.message_consumed()
            assert isinstance(message, RawRequestMessage)
            keep_alive = not message.should_close
            self._replies_due += 1
            self._early.shed(api, message.headers, keep_alive=keep_alive, reply=self._reply)
            if not keep_alive:
                return  # nothing after it is answered

    def _api_of(self, message: Any, payload: Any) -> str | None:
        """The API of a request that is a whole call (None: the request loop has it)."""
        if not isinstance(message, RawRequestMessage):
            return None  # a parse error: the request loop answers it
        if (
            message.method != "POST"
            or message.version != HttpVersion11
            or message.upgrade
            or not payload.is_eof()  # its body is not all here
        ):
            return None
        # As the router matches it (percent-decoded, but for an encoded slash).
        return self._early.apis_by_path.get(message.url.path_safe)

    def take_admitted(self) -> bool:
        """For the handler of the call at the head of the queue (gateway.pipeline): whether
        it was admitted here, as it was parsed; then it is the handler's to release."""
        if not self._admitted:
            return False
        self._admitted -= 1
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        # A call admitted here whose handler never runs must not hold the limit.
        while self._admitted:
            self._admitted -= 1
            self._early.admission.release()
        super().connection_lost(exc)

    def _reply(self, wire: bytes, keep_alive: bool) -> None:
        """A shed call's record is kept: its reply goes out, then the requests after it."""
        self._replies_due -= 1
        assert self._replies_due >= 0, "a reply given twice"
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # the caller went away
        transport.write(wire)
        if self._manager is not None:
            self._manager.requests_count += 1
        if not keep_alive:
            self.force_close()  # after what was written
            return
        self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        if not self._replies_due:
            self._wake_for_queued()

    def _wake_for_queued(self) -> None:
        waiter = self._waiter
        if self._messages and not self._replies_due and waiter is not None and not waiter.done():
            waiter.set_result(None)


class SheddingServer(JsonErrorServer):
    """The low-level server, making `SheddingRequestHandler` connections."""

    def __init__(self, early: EarlyShed, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.early = early

    def __call__(self) -> web_protocol.RequestHandler:
        return SheddingRequestHandler(self, self.early, loop=self._loop, **self._kwargs)


class SheddingAppRunner(JsonErrorAppRunner):
    """The gateway's runner: JSON parse errors, and shedding as it parses."""

    def __init__(self, app: web.Application, early: EarlyShed, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._early = early

    def _new_server(self, *args: Any, **kwargs: Any) -> JsonErrorServer:
        return SheddingServer(self._early, *args, **kwargs)


def _check_aiohttp() -> None:
    # The handler reads and sets these of aiohttp's connection handler (private, slots):
    # fail at import, not on the first call shed.
    for name in (
        "_waiter",
        "_messages",
        "_parser",
        "_manager",
        "_loop",
        "_buffer_paused",
        "_msg_queue_resume_size",
        "_resume_reading_if_drained",
        "_next_keepalive_close_time",
        "_keepalive_timeout",
    ):
        if not hasattr(web_protocol.RequestHandler, name):
            raise RuntimeError(f"aiohttp changed: RequestHandler.{name} is gone")


_check_aiohttp()
