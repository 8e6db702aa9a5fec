"""Chat answers: one `![image](URL)` per image, as a `chat.completion` or as a stream.

A client's background task (`tasks.py`) is answered in the same shapes, with its text.

The Markdown images are separated by blank lines, with the same images in `message.images` for
clients that read OpenRouter's field. Streaming answers are Server-Sent Events: the role chunk
at once, `: keepalive` comments (or progress in `reasoning_content`) while SiliconFlow works,
then the Markdown, the stop chunk, optional usage, and `data: [DONE]`. No `event:` lines.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pydantic_core

from ..errors import ServerShuttingDownError, UpstreamBadResponseError
from ..generate import Generation
from ..images import DEFAULT_MAX_PIXELS, ImageError, convert_to_png, to_data_uri
from ..protocol import ResponseFormat
from ..protocol_responses import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    ChunkDelta,
    ImageRef,
    Usage,
)
from .images import UrlFor
from .sse import DONE, KEEPALIVE, Closing, error_line, failure_of, while_working

# Chat clients render only these data URIs inline (Cherry Studio drops the rest).
MARKDOWN_DATA_TYPES = ("image/png", "image/jpeg")


def new_completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    content: str
    images: list[ImageRef]


async def answer_for(
    generation: Generation, response_format: ResponseFormat, url_for: UrlFor
) -> ChatAnswer:
    """The Markdown (and image list) for a finished generation."""
    links = [
        await markdown_data_uri(image.data, image.media_type)
        if response_format == "b64_json" and image.data is not None
        else url_for(image)
        for image in generation.images
    ]
    content = "\n\n".join(f"![image]({link})" for link in links)
    if generation.failures:
        content += (
            f"\n\n> {generation.failed_calls} of {generation.calls} image requests failed: "
            f"{generation.failures[0].message}"
        )
    images = [ImageRef(image_url={"url": link}) for link in links]
    return ChatAnswer(content=content, images=images)


async def markdown_data_uri(
    data: bytes, media_type: str | None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> str:
    """A data URI chat clients render: PNG or JPEG as they are, anything else as PNG."""
    if media_type not in MARKDOWN_DATA_TYPES:
        # The image came from SiliconFlow, but is decoded under the same bound as a client's.
        try:
            data = await asyncio.to_thread(convert_to_png, data, max_pixels=max_pixels)
        except ImageError as exc:
            raise UpstreamBadResponseError(
                f"SiliconFlow sent an image that cannot be converted to PNG: {exc}."
            ) from None
        media_type = "image/png"
    return to_data_uri(data, media_type)


def completion(
    answer: ChatAnswer, *, completion_id: str, created: int, model: str, provider: str
) -> ChatCompletion:
    return ChatCompletion(
        id=completion_id,
        created=created,
        model=model,
        provider=provider,
        choices=[
            ChatChoice(message=AssistantMessage(content=answer.content, images=answer.images))
        ],
        usage=Usage(),
    )


def text_completion(content: str, *, model: str, provider: str) -> ChatCompletion:
    """A `chat.completion` whose answer is text only (a client's background task)."""
    return ChatCompletion(
        id=new_completion_id(),
        created=int(time.time()),
        model=model,
        provider=provider,
        choices=[ChatChoice(message=AssistantMessage(content=content))],
        usage=Usage(),
    )


class ChatStream:
    """Writes one streamed chat answer as Server-Sent Events."""

    def __init__(
        self, *, completion_id: str, model: str, provider: str, include_usage: bool
    ) -> None:
        self.completion_id = completion_id
        self.created = int(time.time())
        self.model = model
        self.provider = provider
        self.include_usage = include_usage

    def chunk(
        self,
        delta: ChunkDelta | None = None,
        *,
        finish: bool = False,
        usage: Usage | None = None,
    ) -> bytes:
        choices = (
            []
            if delta is None
            else [ChunkChoice(delta=delta, finish_reason="stop" if finish else None)]
        )
        chunk = ChatCompletionChunk(
            id=self.completion_id,
            created=self.created,
            model=self.model,
            provider=self.provider,
            choices=choices,
            usage=usage,
        )
        exclude = None if self.include_usage else {"usage"}
        return b"data: " + pydantic_core.to_json(chunk, exclude=exclude) + b"\n\n"

    def end(self) -> list[bytes]:
        """The stop chunk, the usage chunk if asked for, and `[DONE]`, each its own write."""
        tail = [self.chunk(ChunkDelta(), finish=True)]
        if self.include_usage:
            tail.append(self.chunk(usage=Usage()))
        return [*tail, DONE]

    async def text_events(self, content: str) -> AsyncIterator[bytes]:
        """A whole answer known at once (a client's background task): no images, no wait."""
        yield self.chunk(ChunkDelta(role="assistant", content=""))
        yield self.chunk(ChunkDelta(content=content))
        for part in self.end():
            yield part

    async def events(
        self,
        work: Coroutine[Any, Any, ChatAnswer],
        *,
        keepalive: float,
        delivered: Callable[[int], None],
        progress: asyncio.Queue[str] | None = None,
        closing: asyncio.Event | None = None,
    ) -> AsyncIterator[bytes]:
        """The stream; `delivered` is told how many images were sent, once they were."""
        # The role chunk goes out before any work, so clients see the answer has started.
        yield self.chunk(ChunkDelta(role="assistant", content=""))
        task = asyncio.ensure_future(work)
        try:
            lines = while_working(task, keepalive=keepalive, progress=progress, closing=closing)
            async for line in lines:
                if line is None:
                    yield KEEPALIVE
                elif isinstance(line, Closing):
                    # Nothing was delivered: the ticket gives the images back as it closes.
                    yield error_line(ServerShuttingDownError())
                    yield DONE
                    return
                else:
                    yield self.chunk(ChunkDelta(reasoning_content=line + "\n"))
            failure = failure_of(task)
            if failure is not None:
                yield error_line(failure)
                yield DONE
                return
            answer = task.result()
            yield self.chunk(ChunkDelta(content=answer.content, images=answer.images))
            # Resumed only once the chunk above was handed to the connection.
            delivered(len(answer.images))
            for part in self.end():
                yield part
        finally:
            if not task.done():
                task.cancel()
