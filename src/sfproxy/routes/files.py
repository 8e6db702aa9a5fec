"""`GET /v1/files/images/{name}`: images kept by the image store, for anyone with the link.

No key is needed (chat clients fetch images without credentials); names are 128 random bits,
so a link is as good as a capability and nothing can be listed or guessed.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..errors import NotFoundError
from ..store import is_valid_name
from .common import ServicesDep

router = APIRouter(prefix="/v1/files", tags=["files"])

CACHE_FOREVER = "public, max-age=31536000, immutable"


@router.api_route(
    "/images/{name}",
    methods=["GET", "HEAD"],
    summary="A stored image",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
        404: {"description": "No such image"},
    },
)
async def get_image(name: str, request: Request, services: ServicesDep) -> Response:
    image = await services.store.get(name) if is_valid_name(name) else None
    if image is None:
        raise NotFoundError("No image by that name.")
    headers = {"ETag": image.etag, "Cache-Control": CACHE_FOREVER}
    matches = _etags(request.headers.get("if-none-match"))
    if image.etag in matches or "*" in matches:
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else image.data
    headers["Content-Length"] = str(len(image.data))
    return Response(content=body, media_type=image.media_type, headers=headers)


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
