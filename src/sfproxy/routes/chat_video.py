"""A chat with a video model (`routes/chat.py` hands it over): submit, follow, answer.

The job is submitted before the answer starts, so a refusal (a bad size, a budget, SiliconFlow
saying no) is an HTTP error as for images. Money is the job's (`jobs/`): it is charged when it
completes, whether or not the chat is still open, since the video is kept for its owner.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import Request
from starlette.responses import Response, StreamingResponse

from ..auth import Client
from ..chat_video import follow, video_chat_request
from ..generate import GeneratedImage
from ..jobs import VideoJob, VideoRequest
from ..observability import note_of
from ..protocol import ChatCompletionRequest
from ..render.chat import ChatStream, completion, new_completion_id
from ..render.chat_video import LinkFor, video_answer, video_events
from ..render.sse import SSE_HEADERS
from ..services import Services
from ..settling import CLIENT_LEFT, ClientWatch
from .common import json_response, url_maker


async def video_chat(
    request: Request, services: Services, client: Client, body: ChatCompletionRequest
) -> Response:
    settings = services.settings
    video = await video_chat_request(body, videos=settings.video_models, inputs=services.inputs)
    job = await _submitted(request, services, client, video)
    url_for = url_maker(request, services)

    def link_for(name: str) -> str:
        return url_for(GeneratedImage(seed=None, name=name))

    if not body.stream:
        return await _answered(request, services, client, job, link_for)
    stream = ChatStream(
        completion_id=new_completion_id(),
        model=job.model,
        provider=settings.provider_label,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )
    progress: asyncio.Queue[str] | None = None
    if settings.chat_progress == "reasoning":
        progress = asyncio.Queue()
        progress.put_nowait(f"video {job.id} submitted: {job.model}, {job.size}, {job.seconds} s")
    # As long as the job may take: the poller fails it after VIDEO_TIMEOUT_SECONDS.
    work = follow(
        services.videos,
        client,
        job,
        limit=settings.video_timeout_seconds,
        report=progress.put_nowait if progress is not None else None,
    )
    events = video_events(
        stream,
        job,
        work,
        link_for=link_for,
        keepalive=settings.stream_keepalive_seconds,
        progress=progress,
        closing=request.app.state.drain.closing,
    )
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


async def _submitted(
    request: Request, services: Services, client: Client, video: VideoRequest
) -> VideoJob:
    """The submitted job. Shielded: a client leaving mid-submit must not stop it between
    SiliconFlow accepting the video (and billing it once made) and the job's record. A shutdown
    that stops the request then still gets the job answered (not a 503, whose retry would be a
    second video)."""
    submitting = asyncio.ensure_future(
        services.videos.submit(client, video, note_of(request), endpoint="chat")
    )
    try:
        return await asyncio.shield(submitting)
    except asyncio.CancelledError:
        if not request.app.state.drain.closing.is_set():
            raise
        _absorb_shutdown()
        return await submitting


def _absorb_shutdown() -> None:
    """The drain stopped this request: it ends with an answer instead (DrainMiddleware then
    sends it as it is)."""
    task = asyncio.current_task()
    assert task is not None
    task.uncancel()


async def _answered(
    request: Request, services: Services, client: Client, job: VideoJob, link_for: LinkFor
) -> Response:
    """The non-streamed answer: the job once finished, or, after REQUEST_TIMEOUT_SECONDS (below
    the timeouts of proxies and client libraries, whose retry would make a second video), as
    it is then, with where to find it."""
    settings = services.settings
    watch = ClientWatch(request)
    try:
        job = await follow(services.videos, client, job, limit=settings.request_timeout_seconds)
    except asyncio.CancelledError:
        if watch.left:
            # Nobody reads this answer; the job goes on and is kept for its owner.
            watch.absorb_cancellation()
            return Response(status_code=CLIENT_LEFT)
        if not request.app.state.drain.closing.is_set():
            raise
        # The shutdown is ending: answered with the job as it was (not a 503, whose retry would
        # be a second video), since the job goes on after a restart.
        _absorb_shutdown()
    finally:
        watch.stop()
    result = completion(
        video_answer(job, link_for),
        completion_id=new_completion_id(),
        created=int(time.time()),
        model=job.model,
        provider=settings.provider_label,
    )
    return json_response(result)
