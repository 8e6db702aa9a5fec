"""The images API's answer (`ImagesResponse`) for a generation."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import Response

from ..generate import GeneratedImage, Generation
from ..images import EXTENSIONS, b64_json_fragment
from ..protocol import ResponseFormat

UrlFor = Callable[[GeneratedImage], str]


def images_renderer(
    response_format: ResponseFormat, url_for: UrlFor
) -> Callable[[Generation], Awaitable[Response]]:
    async def render(generation: Generation) -> Response:
        return images_response(generation, response_format, url_for)

    return render


def images_response(
    generation: Generation, response_format: ResponseFormat, url_for: UrlFor
) -> Response:
    """The `ImagesResponse` for a generation, serialised by orjson straight from dicts.

    `ImagesResponse` documents the shape; base64 images do not fit through a pydantic model
    without being turned into megabyte-long Python strings, so the body is built here.
    """
    data: list[dict[str, Any]] = []
    urls = [url_for(image) for image in generation.images]
    for image, url in zip(generation.images, urls, strict=True):
        item: dict[str, Any] = (
            {"b64_json": b64_json_fragment(image.data)}
            if response_format == "b64_json" and image.data is not None
            else {"url": url}
        )
        if image.seed is not None:
            item["seed"] = image.seed
        data.append(item)
    body: dict[str, Any] = {"created": int(time.time()), "data": data}
    if generation.size is not None:
        body["size"] = generation.size
    formats = {image.media_type for image in generation.images}
    output_format = _output_format(formats.pop()) if len(formats) == 1 else None
    if output_format is not None:
        body["output_format"] = output_format
    body |= siliconflow_fields(generation, urls)
    return Response(
        orjson.dumps(body),
        media_type="application/json",
        headers=partial_failure_headers(generation),
    )


def siliconflow_fields(generation: Generation, urls: list[str]) -> dict[str, Any]:
    """SiliconFlow's own answer fields, for clients set up for SiliconFlow itself.

    Cherry Studio's SiliconFlow painting page (src/renderer/src/pages/paintings/providers/
    silicon/provider.ts) reads `data`, else `images`; LobeChat's SiliconCloud provider
    (packages/model-runtime/src/providers/siliconcloud/createImage.ts) reads only
    `images[0].url`. Both post SiliconFlow-shaped bodies (`image_size`, `batch_size`, `image`)
    to `{base}/images/generations`.
    """
    fields: dict[str, Any] = {
        "images": [{"url": url} for url in urls],
        "timings": {"inference": round(generation.upstream_seconds, 3)},
    }
    seed = next((image.seed for image in generation.images if image.seed is not None), None)
    if seed is not None:
        fields["seed"] = seed
    return fields


def _output_format(media_type: str | None) -> str | None:
    extension = EXTENSIONS.get(media_type or "")
    return "jpeg" if extension == "jpg" else extension


def partial_failure_headers(generation: Generation) -> dict[str, str]:
    """Say when only some upstream calls succeeded (the images that did are returned)."""
    if not generation.failures:
        return {}
    first = generation.failures[0]
    return {
        "X-Partial-Failure": (
            f"{generation.failed_calls} of {generation.calls} upstream calls failed "
            f"({first.code or first.error_type})"
        ),
        "X-Images-Requested": str(generation.requested),
        "X-Images-Returned": str(len(generation.images)),
    }
