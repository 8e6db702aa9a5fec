"""MCP video tools: `generate_video` submits a job and returns it, `get_video` reads it.

A video takes minutes, longer than agents wait for one tool call: `generate_video` does not
wait, and the agent calls `get_video` until the job is completed. Both go through the one
`VideoService` (`jobs/`), so a job made here is the same job `GET /v1/videos/{id}` shows, for the
same key, charged when it completes and refunded when it fails. `mcp_server.py` declares the
tools and turns every error into a tool error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import mcp_types as types
from pydantic import BaseModel, ConfigDict, Field

from .errors import NotFoundError
from .generate import GeneratedImage
from .jobs import VideoJob, VideoRequest
from .protocol import MAX_PROMPT_CHARS
from .render.videos import video_object
from .validation import validated

if TYPE_CHECKING:
    from .mcp_server import Caller
    from .services import Services

# An image block for an image (the poster frame), as MCP_IMAGE_CONTENT says: None for none.
ImageBlock = Callable[[GeneratedImage], Awaitable[types.ImageContent | None]]


class GenerateVideoArguments(BaseModel):
    # Agents add fields of their own; what we do not use is ignored, as request bodies are.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    prompt: str = Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="What the video should show, in any language: subject, motion, camera, "
        "style, lighting.",
    )
    model: str | None = Field(
        default=None,
        max_length=256,
        description="A video model id from list_models (video_models). Omit it for the "
        "default: text to video, or image to video when an image is given.",
    )
    size: str | None = Field(
        default=None,
        max_length=64,
        description="WIDTHxHEIGHT or an aspect ratio (16:9, 9:16, 1:1); fitted to the "
        "nearest size the model makes (1280x720, 720x1280 or 960x960).",
    )
    seconds: str | int | None = Field(
        default=None, description="The clip's length; the models make 5-second clips."
    )
    image: str | None = Field(
        default=None,
        description="The first frame, for image to video: a URL this server returned, an "
        "http(s) URL SiliconFlow can reach, or a data:image/...;base64 URI.",
    )
    negative_prompt: str | None = Field(
        default=None, max_length=10_000, description="What the video should not show."
    )
    seed: int | None = Field(
        default=None, ge=0, le=9_999_999_999, description="Makes the result repeatable."
    )


class GetVideoArguments(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    video_id: str = Field(
        min_length=1, max_length=128, description="The id generate_video returned (video_…)."
    )


class VideoTools:
    """The video tools, run for a caller against the running services."""

    def __init__(self, services: Services, *, image_block: ImageBlock) -> None:
        self.services = services
        self.image_block = image_block

    async def generate(self, arguments: dict[str, Any], caller: Caller) -> types.CallToolResult:
        args = validated(GenerateVideoArguments, arguments)
        videos = self.services.settings.video_models
        spec = videos.resolve(args.model, has_image=args.image is not None, image_param="image")
        size, seconds = videos.fit(spec, size=args.size, seconds=args.seconds)
        image = None
        if args.image is not None:
            # Checked as edit_image's images are, after the model and sizes were.
            image = await self.services.inputs.from_reference(args.image, param="image")
        request = VideoRequest(
            model=spec.id,
            requested_model=args.model,
            prompt=args.prompt,
            size=size,
            seconds=seconds,
            image=image,
            negative_prompt=args.negative_prompt,
            seed=args.seed,
        )
        job = await self.services.videos.submit(caller.client, request, caller.note, endpoint="mcp")
        text = (
            f"Video {job.id} {_state(job)} ({job.model}, {job.size}, {job.seconds} s). "
            f"It takes a few minutes: call get_video with video_id {job.id} to follow it."
        )
        return _result(text, job)

    async def get(self, arguments: dict[str, Any], caller: Caller) -> types.CallToolResult:
        args = validated(GetVideoArguments, arguments)
        videos = self.services.videos
        job = await videos.get(caller.client, args.video_id)
        heading = f"Video {job.id} {_state(job)} ({job.model}, {job.size}, {job.seconds} s)."
        if job.status == "failed":
            reason = job.error.message if job.error else "no reason given"
            return _result(f"{heading} {reason}", job)
        if job.status != "completed":
            later = max(1, round(videos.poll_after_ms(job) / 1000))
            return _result(f"{heading} Call get_video again in about {later} s.", job)
        paragraphs = [heading]
        content: list[types.ContentBlock] = []
        if job.video is not None:
            paragraphs.append(f"[Download the video (MP4)]({caller.link_for(_named(job.video))})")
        if job.poster is not None:
            paragraphs.append(f"![poster]({caller.link_for(_named(job.poster))})")
            try:
                poster = await videos.content(caller.client, job.id, "thumbnail")
            except NotFoundError:
                # Removed since (IMAGE_RETENTION_DAYS): the answer is the job and its links.
                poster = None
            if poster is not None:
                image = GeneratedImage(
                    seed=None, media_type=poster.media_type, data=poster.data, name=poster.name
                )
                block = await self.image_block(image)
                if block is not None:
                    content.append(block)
        return _result("\n\n".join(paragraphs), job, content)


def _named(name: str) -> GeneratedImage:
    """A stored file as the links know one."""
    return GeneratedImage(seed=None, name=name)


def _state(job: VideoJob) -> str:
    if job.status == "in_progress":
        return f"is in progress ({job.progress} %)"
    return "failed" if job.status == "failed" else f"is {job.status}"


def _result(
    text: str, job: VideoJob, blocks: list[types.ContentBlock] | None = None
) -> types.CallToolResult:
    content: list[types.ContentBlock] = [types.TextContent(text=text), *(blocks or [])]
    # The Videos API's object (`GET /v1/videos/{id}`), so one job reads the same everywhere.
    structured = video_object(job).model_dump(mode="json")
    return types.CallToolResult(content=content, structured_content=structured)
