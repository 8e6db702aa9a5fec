"""Chat answers for a video: a Markdown link to the hosted MP4 and the poster frame as an image.

A streamed answer names the job at once (so a user who leaves can still find the video at
`GET /v1/videos/{id}`), says what the job does as it goes (progress lines in
`reasoning_content` with CHAT_PROGRESS=reasoning, `: keepalive` comments otherwise), then
gives the links. Videos are always linked, never inlined: `b64_json` does not apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from ..errors import UpstreamError
from ..jobs import VideoJob
from ..protocol_responses import ChunkDelta, ImageRef
from .chat import ChatAnswer, ChatStream
from .sse import DONE, KEEPALIVE, Closing, error_line, failure_of, while_working

# Where a store name is served: the store's CDN, or this service's `/v1/files/images/`.
LinkFor = Callable[[str], str]


def job_heading(job: VideoJob) -> str:
    """The answer's first paragraph: which video this is, and where it stays listed."""
    return (
        f"Video `{job.id}` ({job.model}, {job.size}, {job.seconds} s): kept for you at "
        f"`GET /v1/videos/{job.id}`."
    )


def video_links(job: VideoJob, link_for: LinkFor) -> ChatAnswer:
    """The finished job's links (the paragraphs after the heading), or its error raised."""
    if job.status == "failed":
        raise video_failed(job)
    if job.status != "completed":
        return ChatAnswer(
            content=(
                f"The video is still being made ({job.status.replace('_', ' ')}, "
                f"{job.progress} %). It is kept when it completes: `GET /v1/videos/{job.id}` "
                "shows it, and it is charged then."
            ),
            images=[],
        )
    if job.video is None:
        # Nothing kept here (IMAGE_STORE=off): the content route still answers the owner.
        return ChatAnswer(
            content=f"The video is at `GET /v1/videos/{job.id}/content` (with your key).",
            images=[],
        )
    paragraphs = [f"[Download the video (MP4)]({link_for(job.video)})"]
    images: list[ImageRef] = []
    if job.poster is not None:
        poster = link_for(job.poster)
        paragraphs.append(f"![poster]({poster})")
        images.append(ImageRef(image_url={"url": poster}))
    return ChatAnswer(content="\n\n".join(paragraphs), images=images)


def video_answer(job: VideoJob, link_for: LinkFor) -> ChatAnswer:
    """The whole answer of a non-streamed chat."""
    links = video_links(job, link_for)
    return ChatAnswer(content=f"{job_heading(job)}\n\n{links.content}", images=links.images)


def video_failed(job: VideoJob) -> UpstreamError:
    """A failed job's error, as a chat answers it (its reservation was given back)."""
    reason = job.error.message if job.error else "SiliconFlow gave no reason"
    error = UpstreamError(
        f"The video {job.id} failed: {reason}",
        code=job.error.code if job.error else "video_failed",
    )
    # A retry by the SDK would be a new video, made and paid for again: not automatic.
    error.retries_exhausted = True
    return error


async def video_events(
    stream: ChatStream,
    job: VideoJob,
    work: Coroutine[Any, Any, VideoJob],
    *,
    link_for: LinkFor,
    keepalive: float,
    progress: asyncio.Queue[str] | None,
    closing: asyncio.Event | None,
) -> AsyncIterator[bytes]:
    """The stream of one video chat: the heading, keepalives (or progress lines, the first
    naming the job) while `work` (which follows the job) runs, then the links, or the job's
    error."""
    yield stream.chunk(ChunkDelta(role="assistant", content=""))
    # Progress lines come before the answer's text, as clients show thinking first: the job's
    # id is then in the first of them, and the heading goes with the links.
    heading = job_heading(job) + "\n\n"
    if progress is None:
        yield stream.chunk(ChunkDelta(content=heading))
        heading = ""
    task = asyncio.ensure_future(work)
    try:
        lines = while_working(task, keepalive=keepalive, progress=progress, closing=closing)
        async for line in lines:
            if line is None:
                yield KEEPALIVE
            elif isinstance(line, Closing):
                # Not an error: a retry would be a second video. The job goes on without this
                # stream, and is charged when it completes.
                yield stream.chunk(
                    ChunkDelta(
                        content=f"{heading}The server is restarting while the video is being "
                        f"made; it is kept when it completes: `GET /v1/videos/{job.id}` "
                        "shows it."
                    )
                )
                for part in stream.end():
                    yield part
                return
            else:
                yield stream.chunk(ChunkDelta(reasoning_content=line + "\n"))
        failure = failure_of(task)
        if failure is None:
            try:
                answer = video_links(task.result(), link_for)
            except UpstreamError as failed:
                failure = failed
        if failure is not None:
            yield error_line(failure)
            yield DONE
            return
        yield stream.chunk(
            ChunkDelta(content=heading + answer.content, images=answer.images or None)
        )
        for part in stream.end():
            yield part
    finally:
        if not task.done():
            task.cancel()
