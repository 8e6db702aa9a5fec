"""Durable asynchronous jobs: SiliconFlow's videos, followed to the end whatever a process does.

A video is submitted to SiliconFlow once, recorded in the database with the client key that owns
it, and followed by exactly one poller across all instances until it completes (the MP4 and its
poster frame are in the store, and the client is charged) or fails (what the client had reserved
is given back). Every entry point (the Videos API, chat, MCP) goes through one `VideoService`.

This module holds the shapes the entry points and the service share; the service, its table and
its poller live beside it in this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from ..auth import Client
    from ..corridor import Endpoint
    from ..observability import RequestNote
    from ..store import StoredImage

# The label of the client an admin key (ADMIN_KEYS) is on `/v1/videos…`: it sees every job. No
# client key's label can be this (they are `key-…`, `ck_…`, `ip-…` or "anonymous").
ADMIN_LABEL = "admin"

# The video object's `status`, as OpenAI's SDKs type it.
VideoStatus = Literal["queued", "in_progress", "completed", "failed"]
FINISHED: frozenset[VideoStatus] = frozenset({"completed", "failed"})
# `GET /v1/videos/{id}/content?variant=`: the MP4, or the poster frame as an image.
Variant = Literal["video", "thumbnail"]
Order = Literal["asc", "desc"]


@dataclass(frozen=True, slots=True)
class VideoRequest:
    """A client's video, checked and fitted to the model (`video_request.py`): what is sent."""

    model: str  # the SiliconFlow model id
    requested_model: str | None  # as the client spelled it (None: the default was used)
    prompt: str
    size: str  # "1280x720": one of the model's sizes
    seconds: str  # as the video object reports it: "5"
    image: str | None = None  # image-to-video: a data URI or an http(s) URL
    negative_prompt: str | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class JobError:
    """Why a job failed, as the video object's `error` shows it."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class VideoJob:
    """One job as its owner sees it: the video object's fields, and where its files are."""

    id: str  # "video_…"
    owner: str  # the label of the client that submitted it (ck_…, key-…, ip-…)
    model: str
    status: VideoStatus
    progress: int  # 0..100
    created_at: int  # Unix seconds
    completed_at: int | None
    size: str
    seconds: str
    prompt: str
    error: JobError | None = None
    video: str | None = None  # the store's name of the MP4, once completed
    poster: str | None = None  # the store's name of the poster frame, once completed
    expires_at: int | None = None  # set only when retention removes the files
    poll_at: float | None = None  # Unix seconds of its next status poll, while unfinished

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class VideoService(Protocol):
    """What every entry point asks of the jobs; `NotFoundError` for a job the client may not see
    (only its owner and admin keys see a job)."""

    async def submit(
        self, client: Client, request: VideoRequest, note: RequestNote, *, endpoint: Endpoint
    ) -> VideoJob:
        """Reserve the video's price and the client's limits, submit it to SiliconFlow once,
        record the job; the poller takes it from there."""
        ...

    async def get(self, client: Client, video_id: str) -> VideoJob: ...

    async def page(
        self, client: Client, *, after: str | None, limit: int, order: Order
    ) -> tuple[list[VideoJob], bool]:
        """The client's jobs by creation time, and whether more follow."""
        ...

    async def delete(self, client: Client, video_id: str) -> VideoJob: ...

    async def content(self, client: Client, video_id: str, variant: Variant) -> StoredImage: ...

    def poll_after_ms(self, job: VideoJob) -> int:
        """The `openai-poll-after-ms` hint for a job not yet finished."""
        ...

    async def wait(self, client: Client, video_id: str, *, timeout: float) -> VideoJob:
        """The job once its status or progress changed, or as it is after `timeout` seconds:
        what chat and MCP stream progress from."""
        ...
