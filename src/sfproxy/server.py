"""The HTTP server's guard against slow clients, and its connection limit.

uvicorn closes idle kept-alive connections, but never one whose request is still arriving: a
client that sends half a request line and then nothing (Slowloris) holds its socket for good,
and a few thousand of them exhaust the open-file limit, after which no request is served.
`GuardedHttpToolsProtocol` is uvicorn's httptools protocol with one read deadline per request:

- the headers must be complete HEADER_TIMEOUT_SECONDS after the connection opens, or on a
  kept-alive connection after the first byte of the next request (until that byte, the
  connection is idle and uvicorn closes it after HTTP_KEEPALIVE_SECONDS);
- a body then gets the same allowance again, extended by one second for every
  BODY_MIN_BYTES_PER_SECOND bytes received: a slow upload passes, a trickle does not.

A request past its deadline is answered 408 (if any of it arrived) and its connection closed.
Beyond MAX_CONNECTIONS open connections a request is answered 503 without reaching the app.
Both are counted in metrics and logged once per interval, never once per connection.

The protocol reaches its settings through the app's lifespan state (`GUARD_STATE_KEY`), the
one channel uvicorn gives from an app to its server, so `--workers N` needs nothing more: each
worker's app builds its own guard from the same environment.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from typing import Any, Literal

import pydantic_core
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from .errors import RequestTimeoutError, ServerBusyError
from .lifecycle import DRAIN_STATE_KEY, Drain
from .metrics import Metrics
from .middleware import error_response

logger = logging.getLogger(__name__)

GUARD_STATE_KEY = "sfproxy.connection_guard"
# Set in a request's scope state when the guard cut its body off: the app then logs and counts
# it as the 408 the client was sent, not as a client that went away.
TIMED_OUT_STATE_KEY = "sfproxy.timed_out"
# Slow connections and refusals are logged as totals, at most this often.
LOG_INTERVAL_SECONDS = 10.0

Phase = Literal["headers", "body"]


def connection_limit(configured: int) -> int:
    """MAX_CONNECTIONS, or with 0 a third of the open-file limit: a generation in flight holds
    its client's socket and upstream ones (calls, image downloads), and a process that runs
    out of file descriptors fails every request, not only the newest."""
    if configured:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(64, soft // 3)


class _Digest:
    """Counts events and logs their totals: each kind's first at once, then at most once per
    interval while they go on."""

    def __init__(self, messages: dict[str, str], interval: float) -> None:
        self.messages = messages
        self.interval = interval
        self.pending: Counter[str] = Counter()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def note(self, event: str) -> None:
        self.pending[event] += 1
        if event not in self._timers:
            self._flush(event)

    def _flush(self, event: str) -> None:
        count = self.pending.pop(event, 0)
        if not count:
            del self._timers[event]
            return
        logger.warning(self.messages[event], count)
        loop = asyncio.get_running_loop()
        self._timers[event] = loop.call_later(self.interval, self._flush, event)


class ConnectionGuard:
    """One process's limits on slow and surplus connections, and their bookkeeping."""

    def __init__(
        self,
        *,
        header_timeout: float,
        body_min_rate: float,
        max_connections: int,
        metrics: Metrics,
        log_interval: float = LOG_INTERVAL_SECONDS,
    ) -> None:
        self.header_timeout = header_timeout
        self.body_min_rate = body_min_rate
        self.max_connections = max_connections
        self.metrics = metrics
        timeout = RequestTimeoutError(
            f"The request did not arrive in time: its headers must be complete within "
            f"{header_timeout:g} s, and a body must arrive at {body_min_rate:g} bytes/s or more."
        )
        body = pydantic_core.to_json(timeout.envelope())
        self.timeout_response = (
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self._digest = _Digest(
            {
                "headers": f"slow clients: closed %d connection(s) that did not complete "
                f"their request headers within {header_timeout:g} s (HEADER_TIMEOUT_SECONDS)",
                "body": f"slow clients: closed %d connection(s) that sent their request body "
                f"slower than {body_min_rate:g} bytes/s (BODY_MIN_BYTES_PER_SECOND)",
                "refused": f"connection limit: answered %d request(s) with 503 while "
                f"{max_connections} connections were open (MAX_CONNECTIONS)",
            },
            log_interval,
        )

    def timed_out(self, phase: Phase) -> None:
        self.metrics.slow_connections.labels(phase).inc()
        self._digest.note(phase)

    def over_limit(self, connections: int, tasks: int) -> bool:
        # `connections` includes the one asking; `tasks` are the requests already running.
        if connections <= self.max_connections and tasks < self.max_connections:
            return False
        self.metrics.connections_refused.inc()
        self._digest.note("refused")
        return True

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app that answers a request over the limit, in OpenAI's error envelope."""
        response = error_response(
            ServerBusyError(
                "The server has too many open connections; retry shortly.", retry_after=1
            )
        )
        # Closing frees a connection for someone else.
        response.headers["connection"] = "close"
        await response(scope, receive, send)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline for reading each request."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard: ConnectionGuard | None = app_state.get(GUARD_STATE_KEY)
        self.application = self.app
        # What is being read: nothing ("idle"), a request's headers, or its body.
        self.reading: Literal["idle", "headers", "body"] = "idle"
        self.request_begun = False
        self.read_deadline = 0.0
        self.read_timer: asyncio.TimerHandle | None = None

    def _read_by(self, deadline: float) -> None:
        self.read_deadline = deadline
        if self.read_timer is None:
            self.read_timer = self.loop.call_at(deadline, self._read_deadline_passed)

    def _stop_reading_clock(self) -> None:
        self.reading = "idle"
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.guard is not None:
            # A connection that never sends a byte is as slow as one that stops half-way.
            self.reading = "headers"
            self._read_by(self.loop.time() + self.guard.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_reading_clock()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.request_begun = True
        if self.guard is not None and self.reading == "idle":
            self.reading = "headers"
            self._read_by(self.loop.time() + self.guard.header_timeout)

    def on_headers_complete(self) -> None:
        guard = self.guard
        if guard is not None:
            # The timer stays armed; it re-arms itself for the later deadline when it fires.
            self.reading = "body"
            self.read_deadline = self.loop.time() + guard.header_timeout
            over = guard.over_limit(len(self.connections), len(self.tasks))
            # uvicorn's handler runs `self.app` for the request whose headers are complete.
            self.app = guard.refuse if over else self.application
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self.guard is not None and self.reading == "body":
            self.read_deadline += len(body) / self.guard.body_min_rate

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.request_begun = False
        self._stop_reading_clock()

    def handle_websocket_upgrade(self) -> None:
        # The connection is the WebSocket protocol's from here on.
        self._stop_reading_clock()
        super().handle_websocket_upgrade()

    def shutdown(self) -> None:
        drain: Drain | None = self.app_state.get(DRAIN_STATE_KEY)
        if drain is not None:
            drain.begin()
        super().shutdown()

    def _read_deadline_passed(self) -> None:
        self.read_timer = None
        guard = self.guard
        if guard is None or self.reading == "idle" or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:
            # The app is not reading yet (a pipelined request, a body it has not consumed):
            # the client cannot be slow while we are not listening.
            self._read_by(now + guard.header_timeout)
            return
        if now < self.read_deadline:
            self._read_by(self.read_deadline)
            return
        phase: Phase = "body" if self.reading == "body" else "headers"
        guard.timed_out(phase)
        cycle = self.cycle
        if phase == "headers":
            # A connection that never sent a byte gets no answer; and none may be written
            # while the previous response on this connection is still being sent.
            answer = self.request_begun and (cycle is None or cycle.response_complete)
        else:
            answer = cycle is not None and not cycle.response_started
            if cycle is not None:
                cycle.scope["state"][TIMED_OUT_STATE_KEY] = True
        if answer:
            self.transport.write(guard.timeout_response)
        self._stop_reading_clock()
        self.transport.close()
        if cycle is not None and not cycle.response_complete:
            # As `connection_lost` will on the next turn of the loop; until then the app could
            # still write to a closed transport, or wait on a body that is not coming.
            cycle.disconnected = True
            cycle.message_event.set()
