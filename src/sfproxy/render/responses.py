"""The Responses API's answer: a `response` object, whole or as its stream of events.

Its `output` holds one `image_generation_call` item per image (`result` in base64), then an
assistant `message` whose `output_text` is the Markdown a chat answer gives (hosted URLs), for
clients that only show text. SiliconFlow reports no tokens: `usage` is all zeros.

A stream (`stream: true`) sends `response.created` and `response.in_progress` at once, then
announces each planned image (`output_item.added`, `image_generation_call.in_progress` and
`.generating`), says `: keepalive` while SiliconFlow works, and once the images are made sends
each one's `.completed` and `output_item.done` (its result), then the text item's events and
`response.completed`. Every event carries its `sequence_number`. There are no `event:` lines:
the SDKs read the type from the data, as they do on the other streams of this service.

An error once the stream began is an `error` event (our error object's message, code and param)
then `response.failed`. An image is delivered, and paid for, once its `output_item.done` went
out; an image planned but not made ends as a `failed` item.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import Response

from ..errors import ProxyError, ServerShuttingDownError, UpstreamBadResponseError
from ..generate import GeneratedImage, Generation
from ..images import b64_json_fragment
from ..plan import Plan
from .chat import answer_for
from .image_stream import BACKGROUNDS, OUTPUT_FORMATS, QUALITIES
from .images import UrlFor, partial_failure_headers
from .sse import KEEPALIVE, Closing, encoded_data_line, failure_of, while_working

USAGE = {
    "input_tokens": 0,
    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    "output_tokens": 0,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 0,
}
# OpenAI's `response.error.code` is one of a fixed list; ours is in the `error` event before it.
_FAILED_CODES = {400: "invalid_prompt", 429: "rate_limit_exceeded"}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


@dataclass(slots=True)
class ResponseShape:
    """What every form of one response shares: its id, model, and the request's echoes."""

    plan: Plan
    url_for: UrlFor
    instructions: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    has_tool: bool = False
    id: str = field(default_factory=lambda: _new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        *,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        finished = status in ("completed", "failed")
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": int(time.time()) if status == "completed" else None,
            "status": status,
            "error": error,
            "incomplete_details": None,
            "instructions": self.instructions,
            "metadata": self.metadata,
            "model": self.plan.job.model,
            "output": output,
            "parallel_tool_calls": True,
            "temperature": None,
            "tool_choice": "auto",
            "tools": [{"type": "image_generation"}] if self.has_tool else [],
            "top_p": None,
            "previous_response_id": None,
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "usage": USAGE if finished else None,
        }

    def image_item(
        self,
        item_id: str,
        image: GeneratedImage | None,
        generation: Generation | None,
        status: str,
    ) -> dict[str, Any]:
        """An `image_generation_call`; `image` None: announced, or planned but not made."""
        job = self.plan.job
        item: dict[str, Any] = {
            "id": item_id,
            "type": "image_generation_call",
            "status": status,
            "result": None,
            "action": "edit" if job.images else "generate",
            "background": job.background if job.background in BACKGROUNDS else "auto",
            "quality": job.quality if job.quality in QUALITIES else "auto",
            "output_format": job.output_format or "png",
        }
        if image is None and generation is not None and generation.failures:
            # Planned but not made: why, as the first failed call said.
            first = generation.failures[0].envelope()["error"]
            item["error"] = {key: first[key] for key in ("message", "type", "code", "param")}
        if image is not None and generation is not None:
            if image.data is None:
                # Not for a plan from `responses_plan`, which always has the bytes downloaded.
                raise UpstreamBadResponseError("An image arrived without its bytes.")
            item["result"] = b64_json_fragment(image.data)
            item["revised_prompt"] = job.prompt
            item["size"] = image.size or generation.size or "auto"
            item["output_format"] = OUTPUT_FORMATS.get(
                image.media_type or "", item["output_format"]
            )
        return item

    def message_item(self, item_id: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [self.text_part(text)]
        status = "in_progress" if text is None else "completed"
        return {
            "id": item_id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    @staticmethod
    def text_part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    async def markdown(self, generation: Generation) -> str:
        """The chat answer's Markdown: hosted URLs, whatever the images' base64 is."""
        return (await answer_for(generation, "url", self.url_for)).content


def responses_renderer(shape: ResponseShape) -> Callable[[Generation], Awaitable[Response]]:
    async def render(generation: Generation) -> Response:
        output = [
            shape.image_item(_new_id("ig"), image, generation, "completed")
            for image in generation.images
        ]
        output.append(shape.message_item(_new_id("msg"), await shape.markdown(generation)))
        return Response(
            orjson.dumps(shape.response("completed", output)),
            media_type="application/json",
            headers=partial_failure_headers(generation),
        )

    return render


class ResponseStream:
    """Writes one streamed response as Server-Sent Events."""

    def __init__(self, shape: ResponseShape) -> None:
        self.shape = shape
        self.sequence = 0

    def event(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return encoded_data_line(orjson.dumps(event))

    def failure(self, error: ProxyError, output: list[dict[str, Any]]) -> list[bytes]:
        body = error.envelope()["error"]
        failed = {
            "code": _FAILED_CODES.get(error.status_code, "server_error"),
            "message": body["message"],
        }
        return [
            self.event("error", code=body["code"], message=body["message"], param=body["param"]),
            self.event(
                "response.failed", response=self.shape.response("failed", output, error=failed)
            ),
        ]

    async def events(
        self,
        work: Callable[[], Awaitable[Generation]],
        *,
        keepalive: float,
        delivered: Callable[[int], None],
        closing: asyncio.Event | None = None,
    ) -> AsyncIterator[bytes]:
        """The stream; `delivered` is told of each image once its item was sent."""
        shape = self.shape
        # Started before the first event: SiliconFlow's minutes matter, these bytes do not.
        task = asyncio.ensure_future(work())
        try:
            yield self.event("response.created", response=shape.response("in_progress", []))
            yield self.event("response.in_progress", response=shape.response("in_progress", []))
            planned = [_new_id("ig") for _ in range(shape.plan.requested)]
            for index, item_id in enumerate(planned):
                item = shape.image_item(item_id, None, None, "in_progress")
                yield self.event("response.output_item.added", output_index=index, item=item)
                for step in ("in_progress", "generating"):
                    yield self.event(
                        f"response.image_generation_call.{step}",
                        output_index=index,
                        item_id=item_id,
                    )
            async for line in while_working(task, keepalive=keepalive, closing=closing):
                if isinstance(line, Closing):
                    # Nothing was delivered: the ticket gives the images back as it closes.
                    for event in self.failure(ServerShuttingDownError(), []):
                        yield event
                    return
                yield KEEPALIVE
            failure = failure_of(task)
            if failure is not None:
                for event in self.failure(failure, []):
                    yield event
                return
            async for event in self._finished(task.result(), planned, delivered):
                yield event
        finally:
            if not task.done():
                task.cancel()

    async def _finished(
        self, generation: Generation, planned: list[str], delivered: Callable[[int], None]
    ) -> AsyncIterator[bytes]:
        """The made images' items, the message, and `response.completed`."""
        shape = self.shape
        output: list[dict[str, Any]] = []
        for index, item_id in enumerate(planned):
            image = generation.images[index] if index < len(generation.images) else None
            try:
                item = shape.image_item(
                    item_id, image, generation, "completed" if image else "failed"
                )
            except ProxyError as exc:
                for event in self.failure(exc, output):
                    yield event
                return
            if image is not None:
                yield self.event(
                    "response.image_generation_call.completed", output_index=index, item_id=item_id
                )
            yield self.event("response.output_item.done", output_index=index, item=item)
            output.append(item)
            if image is not None:
                # Resumed only once the item above was handed to the connection.
                delivered(1)
        for event in self.text_events(len(planned), await shape.markdown(generation), output):
            yield event
        yield self.event("response.completed", response=shape.response("completed", output))

    def text_events(self, index: int, text: str, output: list[dict[str, Any]]) -> list[bytes]:
        """The assistant message's events; the finished item is added to `output`."""
        shape = self.shape
        item_id = _new_id("msg")
        where = {"output_index": index, "item_id": item_id, "content_index": 0}
        empty, part = shape.text_part(""), shape.text_part(text)
        item = shape.message_item(item_id, text)
        output.append(item)
        return [
            self.event(
                "response.output_item.added",
                output_index=index,
                item=shape.message_item(item_id, None),
            ),
            self.event("response.content_part.added", **where, part=empty),
            self.event("response.output_text.delta", **where, delta=text, logprobs=[]),
            self.event("response.output_text.done", **where, text=text, logprobs=[]),
            self.event("response.content_part.done", **where, part=part),
            self.event("response.output_item.done", output_index=index, item=item),
        ]
