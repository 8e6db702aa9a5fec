"""The images API's streamed answer (`stream: true`), as OpenAI's gpt-image models send it.

Each image is one `data:` line, `{"type": "image_generation.completed", "b64_json": ...}` (edits:
`image_edit.completed`), sent once the generation is done; `: keepalive` comments go out while
SiliconFlow works. SiliconFlow makes no partial images, so `partial_images` adds no events.

There are no `event:` lines and no `data: [DONE]`: openai-node hands a named event to its caller
as `{event, data}` instead of the event itself, and OpenAI's image streams end without one. An
error after the stream began is a `data: {"error": {...}}` line, which openai-python and
openai-node both raise as `APIError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..auth import Client
from ..corridor import Corridor, Endpoint
from ..errors import ServerShuttingDownError, UpstreamBadResponseError
from ..generate import GeneratedImage, Generation
from ..images import b64_json_fragment
from ..observability import note_of
from ..plan import ImageJob, Plan
from .sse import (
    KEEPALIVE,
    SSE_HEADERS,
    Closing,
    data_line,
    encoded_data_line,
    error_line,
    failure_of,
    while_working,
)

EventType = Literal["image_generation.completed", "image_edit.completed"]

# The values the SDKs' event types declare; anything else a client sent is reported as "auto".
QUALITIES = frozenset({"low", "medium", "high", "xhigh", "max", "auto"})
BACKGROUNDS = frozenset({"transparent", "opaque", "auto"})
OUTPUT_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
# SiliconFlow reports no tokens; the SDKs' types require the object all the same.
USAGE = {
    "input_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 0,
}


async def stream_images(
    request: Request,
    corridor: Corridor,
    client: Client,
    plan: Plan,
    *,
    event_type: EventType,
    endpoint: Endpoint,
    keepalive: float,
) -> Response:
    """Reserve (errors there are ordinary JSON answers), then stream the plan's images."""
    # The events are base64, whatever response_format says, so the bytes are always downloaded.
    plan = plan.with_response_format("b64_json")
    ticket = await corridor.open(plan, client, note_of(request), endpoint=endpoint)
    stream = ImageStream(event_type, plan.job)
    events = stream.events(
        ticket.generation,
        keepalive=keepalive,
        delivered=ticket.deliver,
        closing=request.app.state.drain.closing,
    )
    response = StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return corridor.stream(ticket, response)


class ImageStream:
    """Writes one streamed images answer as Server-Sent Events."""

    def __init__(self, event_type: EventType, job: ImageJob) -> None:
        self.event_type = event_type
        self.job = job
        self.quality = job.quality if job.quality in QUALITIES else "auto"
        self.background = job.background if job.background in BACKGROUNDS else "auto"

    def event(self, image: GeneratedImage, data: bytes, size: str | None) -> bytes:
        event: dict[str, Any] = {
            "type": self.event_type,
            "b64_json": b64_json_fragment(data),
            "created_at": int(time.time()),
            "size": image.size or size or "auto",
            "quality": self.quality,
            "background": self.background,
            "output_format": OUTPUT_FORMATS.get(
                image.media_type or "", self.job.output_format or "png"
            ),
            "usage": USAGE,
        }
        return encoded_data_line(orjson.dumps(event))

    async def events(
        self,
        work: Callable[[], Awaitable[Generation]],
        *,
        keepalive: float,
        delivered: Callable[[int], None],
        closing: asyncio.Event | None = None,
    ) -> AsyncIterator[bytes]:
        """The stream; `delivered` is told of each image once its line was sent."""
        task = asyncio.ensure_future(work())
        try:
            async for line in while_working(task, keepalive=keepalive, closing=closing):
                if isinstance(line, Closing):
                    # Nothing was delivered: the ticket gives the images back as it closes.
                    yield error_line(ServerShuttingDownError())
                    return
                yield KEEPALIVE
            failure = failure_of(task)
            if failure is not None:
                yield error_line(failure)
                return
            generation = task.result()
            for image in generation.images:
                if image.data is None:
                    # Not for a job from `stream_images`, which always has the bytes downloaded.
                    yield error_line(
                        UpstreamBadResponseError("An image arrived without its bytes.")
                    )
                    return
                yield self.event(image, image.data, generation.size)
                # Resumed only once the line above was handed to the connection.
                delivered(1)
            if generation.failures:
                yield data_line(_shortfall(generation))
        finally:
            if not task.done():
                task.cancel()


def _shortfall(generation: Generation) -> dict[str, Any]:
    """The error that ends a stream some of whose upstream calls failed, after its images.

    A JSON answer says so in headers; a stream's headers are long gone, and a stream that just
    ended early would pass for a whole answer.
    """
    first = generation.failures[0]
    envelope = first.envelope()
    envelope["error"]["message"] = (
        f"{generation.failed_calls} of {generation.calls} image requests failed, and "
        f"{len(generation.images)} of {generation.requested} images were sent: {first.message}"
    )
    return envelope
