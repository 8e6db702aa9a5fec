"""`POST /v1/images/generations`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..bodies import openapi_request_body, read_json_request
from ..plan import ImageJob
from ..protocol import ImageGenerationRequest
from ..protocol_responses import ImagesResponse
from ..render.image_stream import stream_images
from ..render.images import images_renderer
from .common import ERROR_RESPONSES, ClientDep, ServicesDep, url_maker

router = APIRouter(prefix="/v1", tags=["images"])


@router.post(
    "/images/generations",
    response_model=ImagesResponse,
    responses={
        **ERROR_RESPONSES,
        200: {
            "description": "The images, or with stream=true Server-Sent Events "
            "(image_generation.completed)",
            "content": {"text/event-stream": {}},
        },
    },
    summary="Generate images",
    openapi_extra={"requestBody": openapi_request_body(ImageGenerationRequest)},
)
async def create_images(request: Request, services: ServicesDep, client: ClientDep) -> Response:
    body = await read_json_request(
        request, ImageGenerationRequest, max_string=services.settings.max_body_bytes
    )
    job = ImageJob.from_params(
        body,
        prompt=body.prompt,
        catalogue=services.catalogue,
        default_response_format=services.settings.images_default_format,
        images=body.input_images(),
    )
    plan = await services.inputs.read_plan_images(services.corridor.prepare(job))
    if body.stream:
        return await stream_images(
            request,
            services.corridor,
            client,
            plan,
            event_type="image_generation.completed",
            endpoint="images",
            keepalive=services.settings.stream_keepalive_seconds,
        )
    url_for = url_maker(request, services)
    return await services.corridor.answer(
        request, client, plan, images_renderer(job.response_format, url_for), endpoint="images"
    )
