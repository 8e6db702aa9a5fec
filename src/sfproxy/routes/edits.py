"""`POST /v1/images/edits`: OpenAI's multipart form (or JSON), for edit and image-to-image models.

The openai SDKs send one file as `image` and several as repeated `image[]`; Cherry Studio repeats
`image`. All three forms are read, in order. Number fields arrive as strings ("2").
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from ..bodies import read_json_request
from ..errors import InvalidRequestError
from ..inputs import InputImages
from ..plan import ImageJob
from ..protocol import ImageEditJSONRequest, ImageGenerationRequest, ImageParams
from ..protocol_responses import ImagesResponse
from ..render.image_stream import stream_images
from ..render.images import images_renderer
from ..validation import validated
from .common import ERROR_RESPONSES, ClientDep, ServicesDep, url_maker

router = APIRouter(prefix="/v1", tags=["images"])

IMAGE_FIELDS = ("image", "image[]")
MAX_INPUT_FILES = 3
MASK_UNSUPPORTED = (
    "mask is not supported: SiliconFlow's edit models change the image as the prompt says, "
    "without masks. Send the image and describe the change in the prompt."
)

_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["image", "prompt"],
    "properties": {
        "image": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "The image(s) to edit: repeat `image` (or use `image[]`), 1 to 3.",
        },
        "prompt": {"type": "string", "minLength": 1},
        "model": {"type": "string"},
        "n": {"type": "integer", "minimum": 1, "maximum": 10},
        "size": {"type": "string"},
        "response_format": {"type": "string", "enum": ["url", "b64_json"]},
        "output_format": {"type": "string", "enum": ["png", "jpeg", "webp"]},
        "output_compression": {"type": "integer", "minimum": 0, "maximum": 100},
        "quality": {"type": "string", "maxLength": 32},
        "background": {"type": "string", "maxLength": 32},
        "stream": {
            "type": "boolean",
            "description": "Answer with Server-Sent Events (image_edit.completed).",
        },
        "partial_images": {
            "type": "integer",
            "minimum": 0,
            "maximum": 3,
            "description": "Accepted; SiliconFlow makes no partial images, so none are sent.",
        },
        "mask": {
            "type": "string",
            "format": "binary",
            "description": "Not supported by SiliconFlow: answered with 400.",
        },
    },
}
_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": _FORM_SCHEMA},
        "application/json": {"schema": ImageEditJSONRequest.model_json_schema()},
    },
}


@router.post(
    "/images/edits",
    response_model=ImagesResponse,
    responses={
        **ERROR_RESPONSES,
        200: {
            "description": "The images, or with stream=true Server-Sent Events "
            "(image_edit.completed)",
            "content": {"text/event-stream": {}},
        },
    },
    summary="Edit images (Qwen-Image-Edit, Kolors image-to-image)",
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def edit_images(request: Request, services: ServicesDep, client: ClientDep) -> Response:
    params, prompt, references = await read_edit_request(request, services.inputs)
    job = ImageJob.from_params(
        params,
        prompt=prompt,
        catalogue=services.catalogue,
        default_response_format=services.settings.images_default_format,
        images=tuple(references),
        edit=True,
    )
    if not references:
        raise InvalidRequestError(
            "Missing required parameter: 'image'.", param="image", code="missing_required_parameter"
        )
    plan = services.corridor.prepare(job)
    if params.stream:
        return await stream_images(
            request,
            services.corridor,
            client,
            plan,
            event_type="image_edit.completed",
            endpoint="edits",
            keepalive=services.settings.stream_keepalive_seconds,
        )
    url_for = url_maker(request, services)
    return await services.corridor.answer(
        request,
        client,
        plan,
        images_renderer(job.response_format, url_for),
        endpoint="edits",
    )


async def read_edit_request(
    request: Request, inputs: InputImages
) -> tuple[ImageParams, str, list[str]]:
    """The edit's parameters, prompt and input images (as data URIs or pass-through URLs)."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        return await _read_form(request, inputs)
    if content_type.startswith("application/json") or not content_type:
        return await _read_json(request, inputs)
    raise InvalidRequestError(
        "Send the edit as multipart/form-data (image files) or as JSON (image URLs or data URIs)."
    )


async def _read_form(request: Request, inputs: InputImages) -> tuple[ImageParams, str, list[str]]:
    # Text parts may carry data URIs, so they may be as large as an image.
    form = await request.form(
        max_files=MAX_INPUT_FILES + 2, max_fields=200, max_part_size=inputs.max_bytes * 2
    )
    try:
        if "mask" in form:
            raise InvalidRequestError(MASK_UNSUPPORTED, param="mask")
        # An empty field is an unset one, as an HTML form sends what the user left blank.
        fields = {
            key: value
            for key, value in form.multi_items()
            if isinstance(value, str) and value != "" and key not in IMAGE_FIELDS
        }
        params = validated(ImageGenerationRequest, fields)
        parts = [value for key, value in form.multi_items() if key in IMAGE_FIELDS]
        if len(parts) > MAX_INPUT_FILES:
            raise InvalidRequestError(
                f"At most {MAX_INPUT_FILES} images can be edited together; {len(parts)} were sent.",
                param="image",
            )
        references = []
        for index, part in enumerate(parts):
            param = "image" if len(parts) == 1 else f"image[{index}]"
            if isinstance(part, UploadFile):
                if part.size is not None and part.size > inputs.max_bytes:
                    raise InvalidRequestError(
                        f"{param} is larger than the {inputs.max_bytes / (1024 * 1024):g} MB "
                        "limit (MAX_IMAGE_MB).",
                        param=param,
                    )
                references.append(await inputs.from_upload(await part.read(), param=param))
            else:
                references.append(await inputs.from_reference(part, param=param))
    finally:
        await form.close()
    return params, params.prompt, references


async def _read_json(request: Request, inputs: InputImages) -> tuple[ImageParams, str, list[str]]:
    # Data URIs make these bodies large: read in bounded steps, like a chat's.
    params = await read_json_request(request, ImageEditJSONRequest, max_string=inputs.max_bytes * 2)
    if params.mask is not None:
        raise InvalidRequestError(MASK_UNSUPPORTED, param="mask")
    images = [params.image] if isinstance(params.image, str) else params.image
    if len(images) > MAX_INPUT_FILES:
        raise InvalidRequestError(
            f"At most {MAX_INPUT_FILES} images can be edited together; {len(images)} were sent.",
            param="image",
        )
    references = [
        await inputs.from_reference(image, param="image" if len(images) == 1 else f"image[{i}]")
        for i, image in enumerate(images)
    ]
    return params, params.prompt, references
