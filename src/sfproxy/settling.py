"""Settling a whole answer once it has been sent, and noticing a client that left before.

The corridor (corridor.py) hands a non-streamed answer to `SettlingResponse`, which sends it
and then settles its ticket: the client is charged for what reached it. `ClientWatch` cancels
the request when its client disconnects first.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .errors import ProxyError

if TYPE_CHECKING:
    from .corridor import Ticket

# The status recorded for a request whose client left before its answer was sent.
CLIENT_LEFT = 499
# Seconds into a non-streamed request after which a client's disconnect is watched for.
WATCH_AFTER = 0.2


class ClientWatch:
    """Cancels the request's task when its client disconnects before the answer is sent.

    Uvicorn does not stop a handler whose client has gone; this reads the request's channel,
    which says `http.disconnect` when the connection closes (the body was already read).
    Watching starts `WATCH_AFTER` seconds into the request: most answers are sent sooner, and
    a timer costs them less than a task would (at concurrency 1 the task showed in the
    benchmark's CPU per request). A client that leaves earlier is noticed then.
    """

    def __init__(self, request: Request) -> None:
        self.left = False
        self.finishing = False
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._receive = request.receive
        self._watcher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            WATCH_AFTER, self._start
        )

    def _start(self) -> None:
        self._timer = None
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
        if not self.finishing:
            self.left = True
            self._task.cancel()

    def absorb_cancellation(self) -> None:
        self._task.uncancel()
        self.stop()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None


class SettlingResponse(Response):
    """Sends a response, then settles its ticket: what reached the client is what it pays."""

    def __init__(
        self, inner: Response, ticket: Ticket, watch: ClientWatch | None, images: int
    ) -> None:
        self.inner = inner
        self.ticket = ticket
        self.watch = watch
        self.images = images
        self.status_code = inner.status_code
        self.background = None
        self.raw_headers = inner.raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = self.watch

        async def sending(message: Message) -> None:
            if watch is not None and message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    watch.finishing = True
            await send(message)

        self.inner.background = self.background
        status = self.status_code
        try:
            await self.inner(scope, receive, sending)
            if watch is not None and not watch.left:
                self.ticket.deliver(self.images)
            elif watch is not None:
                status = CLIENT_LEFT
        except asyncio.CancelledError:
            status = CLIENT_LEFT
            if watch is None or not watch.left:
                raise
            watch.absorb_cancellation()
        except BaseException as exc:
            status = status_of(exc)
            raise
        finally:
            if watch is not None:
                watch.stop()
            await self.ticket.close(status)


def status_of(exc: BaseException) -> int:
    """The HTTP status the error handler answers an exception with (499: the client left)."""
    if isinstance(exc, ProxyError):
        return exc.status_code
    return CLIENT_LEFT if isinstance(exc, asyncio.CancelledError) else 500
