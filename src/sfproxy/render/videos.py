"""The Videos API's objects, as openai-python's `types/video.py` defines them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..jobs import VideoJob, VideoStatus


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VideoError(_Response):
    code: str
    message: str


class VideoObject(_Response):
    """A job's state. `expires_at` is null unless retention removes the files."""

    id: str
    object: Literal["video"] = "video"
    model: str
    status: VideoStatus
    progress: int
    created_at: int
    completed_at: int | None
    expires_at: int | None
    size: str
    seconds: str
    prompt: str | None
    error: VideoError | None
    # SiliconFlow has no remix, so no video is ever remixed from another.
    remixed_from_video_id: None = None


class VideoList(_Response):
    """`GET /v1/videos`: a cursor page, as the SDKs' `ConversationCursorPage` reads it."""

    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(_Response):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: Literal[True] = True


def video_object(job: VideoJob) -> VideoObject:
    error = job.error
    return VideoObject(
        id=job.id,
        model=job.model,
        status=job.status,
        progress=job.progress,
        created_at=job.created_at,
        completed_at=job.completed_at,
        expires_at=job.expires_at,
        size=job.size,
        seconds=job.seconds,
        prompt=job.prompt,
        error=VideoError(code=error.code, message=error.message) if error is not None else None,
    )


def video_list(jobs: list[VideoJob], has_more: bool) -> VideoList:
    return VideoList(
        data=[video_object(job) for job in jobs],
        first_id=jobs[0].id if jobs else None,
        last_id=jobs[-1].id if jobs else None,
        has_more=has_more,
    )
