"""Video in a chat: the video a conversation asks a video model for, and following its job.

The prompt is the latest `user` message less its `--option value` parts, as for images
(`chat.py`); the options a video takes are `--size`/`--ar`, `--seconds`, `--seed`, `--neg` and
`--model`. An image-to-video model works on the image attached to that message, or on the
conversation's latest image, found as an edit finds it. The job goes through the one
`VideoService` (`jobs/`); the answer is rendered by `render/chat_video.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .chat import inline_options, inline_pattern, latest_user_turn, previous_image
from .errors import DatabaseUnavailableError, InvalidRequestError
from .jobs import VideoJob, VideoRequest
from .protocol import ChatCompletionRequest
from .validation import invalid_request
from .video_models import VideoModels, is_openai_name

if TYPE_CHECKING:
    from .auth import Client
    from .inputs import InputImages
    from .jobs import VideoService

logger = logging.getLogger(__name__)

# Options typed into a video prompt, by the field each sets.
VIDEO_OPTIONS = {
    "ar": "aspect_ratio",
    "size": "size",
    "seconds": "seconds",
    "seed": "seed",
    "neg": "negative_prompt",
    "model": "model",
}
# Image options that mean nothing to a video: recognised, so they are refused by name rather
# than sent to SiliconFlow as part of the prompt.
_IMAGE_ONLY = ("n", "steps", "cfg", "guidance")
_PATTERN = inline_pattern([*VIDEO_OPTIONS, *_IMAGE_ONLY])
_EXAMPLES = {
    "ar": "--ar 16:9",
    "size": "--size 1280x720",
    "seconds": "--seconds 5",
    "seed": "--seed 42",
    "neg": '--neg "blurry, low quality"',
    "model": "--model Wan-AI/Wan2.2-T2V-A14B",
    "n": "--n 1",
    "steps": "--steps 30",
    "cfg": "--cfg 4",
    "guidance": "--guidance 7.5",
}
# How long a follower waits before it reads the job again after the database did not answer.
_DATABASE_PAUSE = 1.0


class _VideoOptions(BaseModel):
    """What a video chat may set, from the body or typed into the prompt."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    model: str | None = Field(default=None, max_length=256)
    size: str | None = Field(default=None, max_length=64)
    aspect_ratio: str | None = Field(default=None, max_length=64)
    seconds: str | int | None = None
    seed: int | None = Field(default=None, ge=0, le=9_999_999_999)
    negative_prompt: str | None = Field(default=None, max_length=10_000)


def is_video_chat(body: ChatCompletionRequest, videos: VideoModels) -> bool:
    """Whether the chat names a video model (or one of OpenAI's video names)."""
    name = (body.model or "").strip()
    return bool(name) and (videos.is_video(name) or is_openai_name(name))


async def video_chat_request(
    body: ChatCompletionRequest, *, videos: VideoModels, inputs: InputImages
) -> VideoRequest:
    """The video a chat asks for, checked and fitted before anything is reserved or sent."""
    if body.json_answer is not None:
        # A client's background task that asked for JSON was answered before this.
        raise InvalidRequestError(
            f"Model {body.model} makes videos and cannot answer in JSON (response_format "
            f'{body.json_answer.type}). Send no response_format or {{"type": "text"}}.',
            param="response_format",
        )
    if body.n != 1:
        raise InvalidRequestError(
            f"A video model makes one video per request, not n={body.n}.", param="n"
        )
    turn = latest_user_turn(body.messages)
    prompt, typed = inline_options(turn.text, pattern=_PATTERN, examples=_EXAMPLES)
    refused = next((name for name in _IMAGE_ONLY if name in typed), None)
    if refused is not None:
        raise InvalidRequestError(
            f"Inline option --{refused} is for images; a video takes --size or --ar, "
            "--seconds, --seed, --neg and --model.",
            param="messages",
        )
    if not prompt:
        raise InvalidRequestError(
            "The latest user message has no text to use as the video prompt.", param="messages"
        )
    options = _options(body, typed)
    name = options.model
    reference = turn.images[0] if turn.images else None
    if reference is None and name and videos.is_video(name) and videos.spec(name).requires_image:
        # "Now make it move": the conversation's latest image (linear search, but it may read
        # megabytes: a thread keeps the event loop answering).
        reference = await asyncio.to_thread(previous_image, body.messages)
    spec = videos.resolve(name, has_image=reference is not None, image_param="messages")
    size, seconds = videos.fit(
        spec, size=options.size or options.aspect_ratio, seconds=options.seconds
    )
    image = None
    if reference is not None:
        # Read and checked as an edit's image is: hosted images from the store, data URIs
        # decoded under the size limits, other URLs passed to SiliconFlow as they are.
        image = await inputs.from_reference(reference, param="messages")
    return VideoRequest(
        model=spec.id,
        requested_model=name,
        prompt=prompt,
        size=size,
        seconds=seconds,
        image=image,
        negative_prompt=options.negative_prompt,
        seed=options.seed,
    )


def _options(body: ChatCompletionRequest, typed: dict[str, str]) -> _VideoOptions:
    """The body's video fields, overridden by what was typed into the prompt."""
    extra = body.model_extra or {}
    values: dict[str, object] = {
        "model": body.model,
        # SiliconFlow's own name for the size wins in the body, as it does for images.
        "size": body.image_size or body.size,
        "aspect_ratio": body.aspect_ratio,
        "seconds": extra.get("seconds"),
        "seed": body.seed,
        "negative_prompt": body.negative_prompt,
    }
    try:
        asked = _VideoOptions.model_validate(values)
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from None
    if not typed:
        return asked
    raw = {VIDEO_OPTIONS[name]: value for name, value in typed.items()}
    try:
        parsed = _VideoOptions.model_validate(raw)
    except ValidationError as exc:
        raise invalid_request(
            exc.errors(),
            spell=_typed_spelling,
            reported_as="messages",
            hint=lambda option: f"Example: {_EXAMPLES.get(option.removeprefix('--'), '')}",
        ) from None
    typed_fields = parsed.model_fields_set
    update = {field: getattr(parsed, field) for field in typed_fields}
    # A size typed in the prompt is the latest word on size, whatever the body said.
    if "aspect_ratio" in typed_fields and "size" not in typed_fields:
        update["size"] = None
    if "size" in typed_fields and "aspect_ratio" not in typed_fields:
        update["aspect_ratio"] = None
    return asked.model_copy(update=update)


_OPTION_BY_FIELD = {field: name for name, field in VIDEO_OPTIONS.items()}


def _typed_spelling(location: tuple[str | int, ...]) -> str:
    field = str(location[0]) if location else ""
    return f"--{_OPTION_BY_FIELD.get(field, field)}"


def progress_line(job: VideoJob) -> str:
    """One line of what the job is doing, as a stream's progress shows it."""
    if job.status == "queued":
        return "queued at SiliconFlow…"
    if job.status == "in_progress":
        return f"in progress: {job.progress} %"
    if job.status == "completed":
        return "completed"
    return f"failed: {job.error.message if job.error else 'no reason given'}"


async def follow(
    videos: VideoService,
    client: Client,
    job: VideoJob,
    *,
    limit: float,
    report: Callable[[str], None] | None = None,
) -> VideoJob:
    """The job once it has finished, or as it is after `limit` seconds; `report` is told each
    change of status or progress as a line."""
    deadline = time.monotonic() + limit
    shown: str | None = None
    while True:
        line = progress_line(job)
        if report is not None and line != shown:
            report(line)
            shown = line
        remaining = deadline - time.monotonic()
        if job.finished or remaining <= 0:
            return job
        try:
            job = await videos.wait(client, job.id, timeout=remaining)
        except DatabaseUnavailableError as exc:
            # The job goes on whatever the database does now: read it again shortly.
            logger.warning("following video %s: %s", job.id, exc.message)
            await asyncio.sleep(min(_DATABASE_PAUSE, max(remaining, 0)))
