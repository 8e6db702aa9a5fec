"""OpenAI's Videos API over SiliconFlow's video jobs (`jobs/`): create, follow, list, download.

Creating a video reserves its price and submits it; the job service follows it from there, so the
reads here cost nothing upstream and are not held to the requests-per-minute limit (the SDKs'
`create_and_poll` asks every second, or as `openai-poll-after-ms` says). A job is seen only by
the key that made it, and by admin keys.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ..bodies import openapi_request_body
from ..errors import InvalidRequestError
from ..jobs import Variant, VideoJob
from ..observability import note_of
from ..protocol_responses import ErrorResponse
from ..render.videos import VideoDeleted, VideoList, VideoObject, video_list, video_object
from ..services import Services
from ..video_request import VideoCreateRequest
from ..video_request import read_video_request as read_request
from .common import ERROR_RESPONSES, ClientDep, ReaderDep, ServicesDep, json_response

router = APIRouter(prefix="/v1", tags=["videos"])

POLL_AFTER_HEADER = "openai-poll-after-ms"
VARIANTS: dict[str, Variant] = {"video": "video", "thumbnail": "thumbnail"}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such video for this key"}
}

_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": {"type": "string", "minLength": 1},
        "model": {"type": "string"},
        "size": {"type": "string", "description": "Fitted to the model's sizes."},
        "seconds": {"type": "string", "description": "What the model makes (Wan2.2: 5)."},
        "input_reference": {
            "type": "string",
            "format": "binary",
            "description": "The first frame, for image-to-video.",
        },
        "negative_prompt": {"type": "string"},
        "seed": {"type": "integer", "minimum": 0},
    },
}
_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": _FORM_SCHEMA},
        # Inlined: the body is read by the bounded JSON reader, not by FastAPI.
        "application/json": openapi_request_body(VideoCreateRequest)["content"]["application/json"],
    },
}


@router.post(
    "/videos",
    response_model=VideoObject,
    responses=ERROR_RESPONSES,
    summary="Create a video (Wan text-to-video, image-to-video)",
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def create_video(request: Request, services: ServicesDep, client: ClientDep) -> Response:
    video = await read_request(request, services.inputs, services.settings.video_models)
    job = await services.videos.submit(client, video, note_of(request), endpoint="videos")
    return json_response(video_object(job), headers=_poll_hint(services, job))


@router.get(
    "/videos",
    response_model=VideoList,
    # An `after` that names no video of this key is a 400 (invalid_cursor).
    responses=ERROR_RESPONSES,
    summary="List this key's videos",
)
async def list_videos(
    services: ServicesDep,
    client: ReaderDep,
    after: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    jobs, has_more = await services.videos.page(client, after=after, limit=limit, order=order)
    return json_response(video_list(jobs, has_more))


@router.get(
    "/videos/{video_id}",
    response_model=VideoObject,
    responses={**ERROR_RESPONSES, **NOT_FOUND},
    summary="A video's state",
)
async def get_video(video_id: str, services: ServicesDep, client: ReaderDep) -> Response:
    job = await services.videos.get(client, video_id)
    return json_response(video_object(job), headers=_poll_hint(services, job))


@router.delete(
    "/videos/{video_id}",
    response_model=VideoDeleted,
    responses={**ERROR_RESPONSES, **NOT_FOUND, 409: {"model": ErrorResponse}},
    summary="Delete a finished video and its files",
)
async def delete_video(video_id: str, services: ServicesDep, client: ReaderDep) -> Response:
    job = await services.videos.delete(client, video_id)
    return json_response(VideoDeleted(id=job.id))


@router.get(
    "/videos/{video_id}/content",
    responses={
        **ERROR_RESPONSES,
        **NOT_FOUND,
        200: {
            "description": "The MP4, or the poster frame with variant=thumbnail",
            "content": {"video/mp4": {}, "image/png": {}, "image/jpeg": {}},
        },
    },
    summary="Download a video (or its poster frame)",
)
async def video_content(
    video_id: str,
    services: ServicesDep,
    client: ReaderDep,
    variant: str = Query(default="video", max_length=32),
) -> Response:
    chosen = VARIANTS.get(variant)
    if chosen is None:
        raise InvalidRequestError(
            f"variant must be 'video' or 'thumbnail' (SiliconFlow makes no "
            f"{'spritesheet' if variant == 'spritesheet' else 'such variant'}).",
            param="variant",
        )
    stored = await services.videos.content(client, video_id, chosen)
    extension = "mp4" if chosen == "video" else stored.media_type.rpartition("/")[2]
    return Response(
        stored.data,
        media_type=stored.media_type,
        headers={
            "content-disposition": f'inline; filename="{job_file(video_id)}.{extension}"',
            "cache-control": "private, max-age=3600",
        },
    )


@router.post(
    "/videos/{video_id}/remix",
    responses=ERROR_RESPONSES,
    summary="Remix a video: not supported by SiliconFlow (400)",
)
async def remix_video(video_id: str, _client: ReaderDep) -> Response:
    raise InvalidRequestError(
        "Remixing is not supported: SiliconFlow's video models make new videos only. "
        "Create a new video with POST /v1/videos (input_reference takes a first frame).",
        code="remix_not_supported",
    )


# The SDKs' other video calls, each a clear 400 rather than a 405 from the `{video_id}` route.
UNSUPPORTED = {
    "edits": "Editing videos",
    "extensions": "Extending videos",
    "characters": "Characters",
}


def _unsupported(operation: str, what: str) -> None:
    async def refuse(_client: ReaderDep) -> Response:
        raise InvalidRequestError(
            f"{what} is not supported: SiliconFlow's video models make new videos only. "
            "Create a new video with POST /v1/videos.",
            code=f"{operation.rstrip('s')}_not_supported",
        )

    router.add_api_route(
        f"/videos/{operation}",
        refuse,
        methods=["POST"],
        responses=ERROR_RESPONSES,
        summary=f"{what}: not supported by SiliconFlow (400)",
        name=f"video_{operation}",
    )


for _operation, _what in UNSUPPORTED.items():
    _unsupported(_operation, _what)


def _poll_hint(services: Services, job: VideoJob) -> dict[str, str] | None:
    if job.finished:
        return None
    return {POLL_AFTER_HEADER: str(services.videos.poll_after_ms(job))}


def job_file(video_id: str) -> str:
    """The id as a file name: only the characters ids are made of."""
    kept = "".join(c for c in video_id[:64] if c.isalnum() or c in "_-")
    return kept or "video"
