"""What a request asks for (`ImageJob`), and how it will be made (`Plan`). No I/O here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from .catalogue import Catalogue, ModelSpec
from .protocol import ImageParams, OutputFormat, ResponseFormat

MAX_SEED = 9_999_999_999
INPUT_IMAGE_FIELDS = ("image", "image2", "image3")
# Fields only OpenAI's gpt-image models take: a client that sends one was written for them,
# and gpt-image models always answer with b64_json.
GPT_IMAGE_FIELDS = frozenset(
    {
        "output_format",
        "output_compression",
        "background",
        "moderation",
        "input_fidelity",
        "partial_images",
    }
)
# IMAGES_RESPONSE_FORMAT's "auto": the rule of `response_format_for`.
FormatSetting = ResponseFormat | Literal["auto"]


def response_format_for(
    params: ImageParams, *, edit: bool, requested_model: str | None, setting: FormatSetting
) -> ResponseFormat:
    """The answer's format: what the client asked for, else the setting, else the rule.

    The rule (README, "Response format"), as OpenAI's own models answer: an edit, a request
    for a gpt-image model, or one carrying a gpt-image-only field gets b64_json; any other
    generation gets url (dall-e-2 and dall-e-3 answer with URLs).
    """
    if params.response_format is not None:
        return params.response_format
    if setting != "auto":
        return setting
    gpt_image = (requested_model or "").startswith("gpt-image")
    if edit or gpt_image or not GPT_IMAGE_FIELDS.isdisjoint(params.model_fields_set):
        return "b64_json"
    return "url"


def model_for(catalogue: Catalogue, requested: str | None, *, edit: bool, has_images: bool) -> str:
    """The model a request is made with, for the name it sent (see `Catalogue.resolve`).

    An edit naming no model gets the default edit model. A chat or generation naming none
    keeps the first listed model unless it carries input images that model cannot take.
    """
    if requested or edit:
        return catalogue.resolve(requested, edit=edit or has_images)
    default = catalogue.default_model
    if has_images and not catalogue.spec(default).takes_images:
        return catalogue.default_edit_model
    return default


@dataclass(frozen=True, slots=True)
class ImageJob:
    """A validated request for images, whichever endpoint it came from."""

    model: str
    prompt: str
    # The model name the client sent (an alias, say), for the request log; None: it sent none.
    requested_model: str | None = None
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
    # SiliconFlow's prompt rewriting (.com), for the models whose entry accepts it.
    prompt_enhancement: bool | None = None
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
        default_response_format: FormatSetting,
        images: tuple[str, ...] = (),
        edit: bool = False,
        **overrides: Any,
    ) -> ImageJob:
        """`edit`: the request came to the edits endpoint (its images may still be unread)."""
        model = model_for(catalogue, params.model, edit=edit, has_images=bool(images))
        values: dict[str, Any] = {
            "model": model,
            "prompt": prompt,
            "requested_model": params.model,
            "n": params.n,
            "response_format": response_format_for(
                params, edit=edit, requested_model=params.model, setting=default_response_format
            ),
            "size": params.size or params.aspect_ratio,
            "image_size": params.image_size,
            "batch_size": params.batch_size,
            "seed": params.seed,
            "num_inference_steps": params.num_inference_steps,
            "guidance_scale": params.guidance_scale,
            "cfg": params.cfg,
            "negative_prompt": params.negative_prompt,
            "prompt_enhancement": params.prompt_enhancement,
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

    def with_response_format(self, response_format: ResponseFormat) -> Plan:
        return dataclasses.replace(
            self, job=dataclasses.replace(self.job, response_format=response_format)
        )

    def with_images(self, images: tuple[str, ...]) -> Plan:
        """The same plan with its input images made ready for SiliconFlow (data URIs)."""
        payload = {
            key: value for key, value in self.payload.items() if key not in INPUT_IMAGE_FIELDS
        }
        payload.update(zip(INPUT_IMAGE_FIELDS, images, strict=False))
        job = dataclasses.replace(self.job, images=images)
        return dataclasses.replace(self, job=job, payload=payload)
