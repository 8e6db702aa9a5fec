"""Image generation in a chat: the prompt from the conversation, the answer as Markdown.

The prompt is always the latest `user` message (a string, or its text parts joined). The answer
is one `![image](URL)` per image, separated by blank lines, with the same images in
`message.images` for clients that read OpenRouter's field. Streaming answers are Server-Sent
Events: the role chunk at once, `: keepalive` comments while SiliconFlow works, then the
Markdown, the stop chunk, optional usage, and `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import pydantic_core

from .errors import InvalidRequestError, ProxyError
from .generate import Generation, ImageGenerator
from .images import convert_to_png, to_data_uri
from .protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatMessage,
    ChunkChoice,
    ChunkDelta,
    ImagePart,
    ImageRef,
    ResponseFormat,
    TextPart,
    Usage,
)

logger = logging.getLogger(__name__)

# Chat clients render only these data URIs inline (Cherry Studio drops the rest).
MARKDOWN_DATA_TYPES = ("image/png", "image/jpeg")
DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keepalive\n\n"


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """The latest user message: its text and the images attached to it."""

    text: str
    images: tuple[str, ...]


def latest_user_turn(messages: list[ChatMessage]) -> ChatTurn:
    for message in reversed(messages):
        if message.role != "user":
            continue
        content = message.content
        if isinstance(content, str):
            return ChatTurn(text=content.strip(), images=())
        texts = [part.text for part in content or [] if isinstance(part, TextPart)]
        images = tuple(part.url for part in content or [] if isinstance(part, ImagePart))
        return ChatTurn(text="\n".join(texts).strip(), images=images)
    raise InvalidRequestError(
        "messages must contain a message with role 'user': its text is the image prompt.",
        param="messages",
    )


def new_completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    content: str
    images: list[ImageRef]


async def answer_for(
    generation: Generation,
    generator: ImageGenerator,
    response_format: ResponseFormat,
    base_url: str,
) -> ChatAnswer:
    """The Markdown (and image list) for a finished generation."""
    links = [
        await _data_uri(image.data, image.media_type)
        if response_format == "b64_json" and image.data is not None
        else generator.url_for(image, base_url)
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


async def _data_uri(data: bytes, media_type: str | None) -> str:
    if media_type not in MARKDOWN_DATA_TYPES:
        data = await asyncio.to_thread(convert_to_png, data)
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


class ChatStream:
    """Writes one streamed chat answer as Server-Sent Events (no `event:` lines)."""

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

    @staticmethod
    def error(exc: ProxyError) -> bytes:
        return b"data: " + pydantic_core.to_json(exc.envelope()) + b"\n\n"

    async def events(
        self,
        work: Coroutine[Any, Any, ChatAnswer],
        *,
        keepalive: float,
        progress: asyncio.Queue[str] | None = None,
    ) -> AsyncIterator[bytes]:
        # The role chunk goes out before any work, so clients see the answer has started.
        yield self.chunk(ChunkDelta(role="assistant", content=""))
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                waiting: set[asyncio.Future[Any]] = {task}
                next_line = asyncio.ensure_future(progress.get()) if progress else None
                if next_line is not None:
                    waiting.add(next_line)
                done, _ = await asyncio.wait(
                    waiting, timeout=keepalive, return_when=asyncio.FIRST_COMPLETED
                )
                if next_line is not None and next_line in done:
                    yield self.chunk(ChunkDelta(reasoning_content=next_line.result() + "\n"))
                elif next_line is not None:
                    next_line.cancel()
                if not done:
                    yield KEEPALIVE
            while progress is not None and not progress.empty():
                yield self.chunk(ChunkDelta(reasoning_content=progress.get_nowait() + "\n"))
            try:
                answer = task.result()
            except ProxyError as exc:
                yield self.error(exc)
                yield DONE
                return
            except Exception:
                logger.exception("streamed chat answer failed")
                yield self.error(ProxyError("The server had an error while generating images."))
                yield DONE
                return
            yield self.chunk(ChunkDelta(content=answer.content, images=answer.images))
            yield self.chunk(ChunkDelta(), finish=True)
            if self.include_usage:
                yield self.chunk(usage=Usage())
            yield DONE
        finally:
            if not task.done():
                task.cancel()
