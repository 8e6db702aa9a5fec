"""Image generation in a chat: the prompt from the conversation, the answer as Markdown.

The prompt is always the latest `user` message (a string, or its text parts joined). The answer
is one `![image](URL)` per image, separated by blank lines, with the same images in
`message.images` for clients that read OpenRouter's field. Streaming answers are Server-Sent
Events: the role chunk at once, `: keepalive` comments while SiliconFlow works, then the
Markdown, the stop chunk, optional usage, and `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import pydantic_core
from pydantic import ValidationError

from .errors import InvalidRequestError, ProxyError, UpstreamBadResponseError
from .generate import Generation, ImageGenerator, ImageJob
from .images import DEFAULT_MAX_PIXELS, ImageError, convert_to_png, to_data_uri
from .inputs import InputImages
from .protocol import (
    MAX_PROMPT_CHARS,
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChunkChoice,
    ChunkDelta,
    ImageParams,
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
            return _checked_turn(content.strip(), ())
        texts = [part.text for part in content or [] if isinstance(part, TextPart)]
        images = tuple(part.url for part in content or [] if isinstance(part, ImagePart))
        return _checked_turn("\n".join(texts).strip(), images)
    raise InvalidRequestError(
        "messages must contain a message with role 'user': its text is the image prompt.",
        param="messages",
    )


def _checked_turn(text: str, images: tuple[str, ...]) -> ChatTurn:
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(
            f"The latest user message is {len(text):,} characters long; an image prompt may "
            f"have at most {MAX_PROMPT_CHARS:,}.",
            param="messages",
        )
    return ChatTurn(text=text, images=images)


# How many "![" a history may hold before the search for a previous image gives up: an answer
# of this service has one per image, and a hostile text could otherwise make millions.
_MAX_IMAGE_CANDIDATES = 10_000
# What follows "](" in a Markdown image: the target (no spaces, ")" or ">"), optionally in <>,
# then an optional "title" and ")". Possessive throughout and only ever anchored (match, not
# search), so each is linear and no character is read twice by it.
_LINK_TARGET = re.compile(r"\s*+(<?+)([^)\s>]*+)")
_LINK_TARGET_REST = re.compile(r"[^)\s>]*+")
_LINK_END = re.compile(r'>?+(?:\s++"[^"]*+")?+\s*+\)')
# A target (a data URI can be megabytes) is read this many characters per regex call, so a
# thread running the search lets the event loop's thread take the GIL in between.
_TARGET_WINDOW = 1 << 16


class _ImageSearch:
    """Finds the first Markdown image `![alt](url)` of texts, in linear time.

    A backtracking regex searched over a text such as "![a](![a](![a](..." costs time
    quadratic in its length; this reads each character a bounded number of times, and gives up
    after a bounded number of candidates.
    """

    def __init__(self) -> None:
        self.candidates = _MAX_IMAGE_CANDIDATES

    def first_image(self, text: str) -> str | None:
        position = 0
        # The end of the last link target read and found not to close: any "](" inside it has
        # the same target end and the same fate.
        refused_until = -1
        while self.candidates > 0:
            self.candidates -= 1
            start = text.find("![", position)
            if start < 0:
                return None
            close = text.find("]", start + 2)
            if close < 0:
                return None
            # Every "![" before `close` has the same "]": none of them needs a second look.
            position = close + 1
            if not text.startswith("(", position) or position + 1 < refused_until:
                continue
            target = _LINK_TARGET.match(text, position + 1, position + 1 + _TARGET_WINDOW)
            assert target is not None  # the pattern matches the empty string
            bracket, begin, end = target[1], target.start(2), target.end()
            while end == target.endpos and end < len(text):
                run = _LINK_TARGET_REST.match(text, end, end + _TARGET_WINDOW)
                assert run is not None
                target, end = run, run.end()
            # A lone "<" is the target itself, as in "![a](<)". Sliced only once it is known
            # to be one: copying megabytes of a refused target would hold the GIL for long.
            if (end > begin or bracket) and _LINK_END.match(text, end):
                return text[begin:end] or bracket
            refused_until = end
        return None


def previous_image(messages: list[ChatMessage]) -> str | None:
    """The image "now make it blue" refers to: the last answer's first image, else the user's.

    Searched from the newest message back: an assistant message's Markdown images (this
    service's own answers), or a user message's attached images.
    """
    search = _ImageSearch()
    for message in reversed(messages):
        content = message.content
        if message.role == "assistant":
            texts = (
                [content]
                if isinstance(content, str)
                else [part.text for part in content or [] if isinstance(part, TextPart)]
            )
            for text in texts:
                found = search.first_image(text)
                if found:
                    return found
            if isinstance(content, list):
                for part in content:
                    if isinstance(part, ImagePart):
                        return part.url
        elif message.role == "user" and isinstance(content, list):
            for part in content:
                if isinstance(part, ImagePart):
                    return part.url
    return None


# Options typed into the prompt, as image bots made familiar: `--ar 16:9 --n 2 --neg "blur"`.
INLINE_OPTIONS = {
    "ar": "sf_aspect_ratio",
    "size": "size",
    "n": "n",
    "seed": "sf_seed",
    "steps": "sf_num_steps",
    "cfg": "sf_cfg",
    "guidance": "sf_guidance_scale",
    "neg": "sf_negative_prompt",
    "model": "model",
}
# Possessive quantifiers: every part either takes its characters for good or fails at once,
# so a substitution over the prompt (at most MAX_PROMPT_CHARS) is linear in its length.
_INLINE = re.compile(
    r"(?:^|(?<=\s))--(?P<name>" + "|".join(INLINE_OPTIONS) + r")"
    r"(?:\s*+=\s*+|\s++|$)"
    r"(?P<value>\"[^\"]*+\"|'[^']*+'|“[^”]*+”|[^\s\"'“]\S*+)?+",
    re.IGNORECASE,
)


def inline_options(text: str) -> tuple[str, dict[str, str]]:
    """The prompt without its `--option value` parts, and those options by parameter name."""
    found: dict[str, str] = {}

    def take(match: re.Match[str]) -> str:
        name = match["name"].lower()
        value = match["value"]
        if value is None or value.startswith("--"):
            raise InvalidRequestError(
                f"Inline option --{name} needs a value, e.g. {_EXAMPLES[name]}.",
                param="messages",
            )
        if value[0] in "\"'“":
            value = value[1:-1]
        found[name] = value
        return ""

    cleaned = _INLINE.sub(take, text)
    if not found:
        return text, found
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip(), found


_EXAMPLES = {
    "ar": "--ar 16:9",
    "size": "--size 1024x768",
    "n": "--n 2",
    "seed": "--seed 42",
    "steps": "--steps 30",
    "cfg": "--cfg 4",
    "guidance": "--guidance 7.5",
    "neg": '--neg "blurry, low quality"',
    "model": "--model Kwai-Kolors/Kolors",
}


def with_inline_options(
    params: ChatCompletionRequest, options: dict[str, str]
) -> ChatCompletionRequest:
    """The request's parameters, overridden by the options typed into the prompt."""
    if not options:
        return params
    raw = {INLINE_OPTIONS[name]: value for name, value in options.items()}
    try:
        parsed = ImageParams.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        alias = str(error["loc"][0]) if error["loc"] else ""
        name = next((key for key, value in INLINE_OPTIONS.items() if value == alias), alias)
        reason = str(error["msg"]).removeprefix("Value error, ")
        raise InvalidRequestError(
            f"Invalid inline option --{name} {options.get(name, '')!r}: {reason}. "
            f"Example: {_EXAMPLES.get(name, '')}",
            param="messages",
        ) from None
    update: dict[str, Any] = {field: getattr(parsed, field) for field in parsed.model_fields_set}
    # A size typed in the prompt is the latest word on size, whatever the body said.
    if "aspect_ratio" in parsed.model_fields_set:
        update |= {"size": None, "image_size": None}
    if "size" in parsed.model_fields_set:
        update |= {"aspect_ratio": None, "image_size": None}
    return params.model_copy(update=update)


async def chat_job(
    body: ChatCompletionRequest,
    *,
    generator: ImageGenerator,
    inputs: InputImages,
    default_response_format: ResponseFormat,
) -> ImageJob:
    """The image job a chat request asks for, checked before any streaming starts."""
    turn = latest_user_turn(body.messages)
    prompt, options = inline_options(turn.text)
    params = with_inline_options(body, options)
    if not prompt:
        raise InvalidRequestError(
            "The latest user message has no text to use as the image prompt.", param="messages"
        )
    catalogue = generator.catalogue
    spec = catalogue.spec(params.model or catalogue.default_model)
    references = turn.images
    if not references and spec.requires_images:
        # "Now make it blue": an edit model works on the conversation's latest image. The
        # search is linear but may read megabytes: a thread keeps the event loop answering.
        previous = await asyncio.to_thread(previous_image, body.messages)
        references = (previous,) if previous else ()
    job = ImageJob.from_params(
        params,
        prompt=prompt,
        catalogue=catalogue,
        default_response_format=default_response_format,
        images=references,
    )
    generator.check(job)
    if not references:
        return job
    images = [await inputs.from_reference(ref, param="messages") for ref in references]
    return dataclasses.replace(job, images=tuple(images))


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


async def _data_uri(
    data: bytes, media_type: str | None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> str:
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
