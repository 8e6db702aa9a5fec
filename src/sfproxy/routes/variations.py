"""`POST /v1/images/variations` (the SDKs' `images.create_variation`): answered with a 400.

SiliconFlow has no variations endpoint. An edit with an empty prompt would come closest, but
SiliconFlow's edit models need a prompt, and a paid image made from none would surprise; so the
answer names the edits endpoint and its models instead. The upload is never read or decoded.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..errors import InvalidRequestError
from ..protocol_responses import ErrorResponse
from .common import ERROR_RESPONSES, ClientDep, ServicesDep

router = APIRouter(prefix="/v1", tags=["images"])

_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "image": {"type": "string", "format": "binary"},
        "model": {"type": "string"},
        "n": {"type": "integer"},
        "size": {"type": "string"},
        "response_format": {"type": "string"},
    },
}


@router.post(
    "/images/variations",
    # Its one answer is the 400, so that is what the document says it answers (not a 200).
    status_code=400,
    response_model=ErrorResponse,
    response_description="Always: SiliconFlow has no variations",
    responses={status: ERROR_RESPONSES[status] for status in (401, 413, 429)},
    summary="Not supported by SiliconFlow: answered with 400 naming POST /v1/images/edits",
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": _FORM_SCHEMA}}}},
)
async def create_variation(services: ServicesDep, client: ClientDep) -> None:
    catalogue = services.catalogue
    editors = [spec.id for spec in catalogue.listed if spec.requires_images]
    models = ", ".join(editors or catalogue.image_models()) or "none are listed"
    raise InvalidRequestError(
        "Image variations are not supported: SiliconFlow has no variations endpoint. "
        "Send the image to POST /v1/images/edits with a prompt such as "
        f"'the same picture, in a different style'. Edit models: {models}.",
        param="image",
        code="variations_not_supported",
    )
