"""Shutdown: what happens to requests still running when the grace period ends.

On SIGTERM uvicorn stops accepting, lets requests in flight run for SHUTDOWN_GRACE_SECONDS,
then cancels what is left: a client would see its connection cut mid-answer, and the log a
traceback per request. `Drain` ends them first, shortly before the grace period does:

- a stream writer waits on `Drain.closing` beside its work, and when it is set writes the
  error event and `data: [DONE]` (`ChatStream.events(..., closing=...)`);
- a request that has not started its answer is stopped by `DrainMiddleware` and answered 503
  (`ServerShuttingDownError`), so clients and load balancers know to retry elsewhere.

uvicorn tells every open connection when shutdown starts (`shutdown()` on the protocol, see
`server.py`), which is where `Drain.begin` is called: in a single process and in each of
`--workers N` alike, as each worker runs its own uvicorn server.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ServerShuttingDownError
from .middleware import error_response
from .observability import note_of

logger = logging.getLogger(__name__)

# The key under which the app's lifespan state carries the `Drain` to the server's protocol.
DRAIN_STATE_KEY = "sfproxy.drain"


class _Running:
    """One request that has not finished: whether its answer has started, and who stopped it."""

    __slots__ = ("send", "started", "stopped")

    def __init__(self, send: Send) -> None:
        self.started = False
        self.stopped = False

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        self.send = tracking_send


class Drain:
    """Set `closing` shortly before the shutdown grace period ends, and stop what is left."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.closing = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        # Requests in flight, by the task that runs them.
        self.requests: dict[asyncio.Task[object], _Running] = {}

    @property
    def lead_seconds(self) -> float:
        """How long before the end of the grace period requests are ended: enough to write an
        error and close the connection before uvicorn cancels the request's task."""
        return min(1.0, self.grace_seconds / 4)

    def begin(self) -> None:
        """Shutdown has started (called once per open connection; the first call counts)."""
        if self._timer is not None or self.closing.is_set():
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.grace_seconds - self.lead_seconds, self.close)

    def close(self) -> None:
        self.closing.set()
        waiting = [
            (task, running) for task, running in self.requests.items() if not running.started
        ]
        if self.requests:
            logger.warning(
                "the shutdown grace period (SHUTDOWN_GRACE_SECONDS=%g) is ending: %d requests "
                "not yet answered get 503; %d answers under way go on (streams of chats and "
                "images end with an error event)",
                self.grace_seconds,
                len(waiting),
                len(self.requests) - len(waiting),
            )
        for task, running in waiting:
            running.stopped = True
            task.cancel()


class DrainMiddleware:
    """Answer 503 to requests that are still waiting for their answer when the drain closes."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            await self.app(scope, receive, send)
            return
        if self.drain.closing.is_set():
            # Its headers came in after the drain had closed: too late to be started.
            await self._refuse(scope, receive, send)
            return
        running = _Running(send)
        self.drain.requests[task] = running
        try:
            await self.app(scope, receive, running.send)
        except asyncio.CancelledError:
            if not running.stopped:
                raise
            # The cancellation was ours: the request ends here, answered, not torn down.
            task.uncancel()
            await self._refuse(scope, receive, send)
        finally:
            del self.drain.requests[task]

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = ServerShuttingDownError()
        note_of(HTTPConnection(scope)).error = error.code
        await error_response(error)(scope, receive, send)
