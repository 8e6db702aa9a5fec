"""What a request asks for (`ImageJob`), and how it will be made (`Plan`). No I/O here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .catalogue import Catalogue, ModelSpec
from .protocol import ImageParams, OutputFormat, ResponseFormat

MAX_SEED = 9_999_999_999
INPUT_IMAGE_FIELDS = ("image", "image2", "image3")


@dataclass(frozen=True, slots=True)
class ImageJob:
    """A validated request for images, whichever endpoint it came from."""

    model: str
    prompt: str
    n: int = 1
    response_format: ResponseFormat = "url"
    size: str | None = None
    image_size: str | None = None
    batch_size: int | None = None
    seed: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    cfg: float | None = None
    negative_prompt: str | None = None
    # What the stored and answered images are converted to (None: as SiliconFlow made them).
    output_format: OutputFormat | None = None
    output_compression: int | None = None
    quality: str | None = None
    background: str | None = None
    # Input images for editing: data URIs or http(s) URLs, in order.
    images: tuple[str, ...] = ()

    @classmethod
    def from_params(
        cls,
        params: ImageParams,
        *,
        prompt: str,
        catalogue: Catalogue,
        default_response_format: ResponseFormat,
        images: tuple[str, ...] = (),
        **overrides: Any,
    ) -> ImageJob:
        values: dict[str, Any] = {
            "model": params.model or catalogue.default_model,
            "prompt": prompt,
            "n": params.n,
            "response_format": params.response_format or default_response_format,
            "size": params.size or params.aspect_ratio,
            "image_size": params.image_size,
            "batch_size": params.batch_size,
            "seed": params.seed,
            "num_inference_steps": params.num_inference_steps,
            "guidance_scale": params.guidance_scale,
            "cfg": params.cfg,
            "negative_prompt": params.negative_prompt,
            "output_format": params.output_format,
            "output_compression": params.output_compression,
            "quality": params.quality,
            "background": params.background,
            "images": images,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Plan:
    """A job checked against its model, and the upstream calls it takes: made once."""

    job: ImageJob
    spec: ModelSpec
    payload: dict[str, Any]
    size: str | None
    batches: tuple[int, ...]

    @property
    def requested(self) -> int:
        return sum(self.batches)

    def with_images(self, images: tuple[str, ...]) -> Plan:
        """The same plan with its input images made ready for SiliconFlow (data URIs)."""
        payload = {
            key: value for key, value in self.payload.items() if key not in INPUT_IMAGE_FIELDS
        }
        payload.update(zip(INPUT_IMAGE_FIELDS, images, strict=False))
        job = dataclasses.replace(self.job, images=images)
        return dataclasses.replace(self, job=job, payload=payload)
