"""Server-Sent Events: what every streamed answer shares.

While the work runs, the stream says something at least every `keepalive` seconds: a progress
line when there is one, else a comment line, which SDKs ignore and proxies count as traffic.
When the server's shutdown grace period is ending (`closing`, see `lifecycle.py`), the stream
stops waiting, so its writer can end it with an error event before the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pydantic_core

from ..errors import ProxyError

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keepalive\n\n"
SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx and similar proxies otherwise buffer the stream, holding back keepalives.
    "X-Accel-Buffering": "no",
}


def data_line(payload: Any) -> bytes:
    return b"data: " + pydantic_core.to_json(payload) + b"\n\n"


def encoded_data_line(encoded: bytes) -> bytes:
    """A data line for JSON encoded elsewhere (orjson copies base64 images in as they are)."""
    return b"data: " + encoded + b"\n\n"


def error_line(exc: ProxyError) -> bytes:
    return data_line(exc.envelope())


def failure_of(task: asyncio.Future[Any]) -> ProxyError | None:
    """What a stream tells its client when its finished work failed (None if it did not).

    An error of ours is sent as it is; anything else is logged and sent as a plain server error,
    so no internal detail reaches the client.
    """
    exc = task.exception()
    if exc is None or isinstance(exc, ProxyError):
        return exc
    logger.error("streamed answer failed", exc_info=exc)
    return ProxyError("The server had an error while generating images.")


class Closing:
    """What `while_working` yields when the server is about to close open streams."""


CLOSING = Closing()


async def while_working(
    task: asyncio.Future[Any],
    *,
    keepalive: float,
    progress: asyncio.Queue[str] | None = None,
    closing: asyncio.Event | None = None,
) -> AsyncIterator[str | Closing | None]:
    """Until `task` is done: each progress line as it comes, None when a keepalive is due, or
    `CLOSING` (and then nothing more) when `closing` is set first."""
    closed = asyncio.ensure_future(closing.wait()) if closing is not None else None
    try:
        while not task.done():
            waiting: set[asyncio.Future[Any]] = {task}
            if closed is not None:
                waiting.add(closed)
            next_line = asyncio.ensure_future(progress.get()) if progress else None
            if next_line is not None:
                waiting.add(next_line)
            try:
                done, _ = await asyncio.wait(
                    waiting, timeout=keepalive, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                if next_line is not None and not next_line.done():
                    next_line.cancel()
            if next_line is not None and next_line in done:
                yield next_line.result()
            elif closed is not None and closed in done and not task.done():
                yield CLOSING
                return
            elif not done:
                yield None
        while progress is not None and not progress.empty():
            yield progress.get_nowait()
    finally:
        if closed is not None:
            closed.cancel()
