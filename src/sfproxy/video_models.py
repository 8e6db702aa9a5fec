"""SiliconFlow's video models, what each makes, and fitting a client's video request to one.

Every entry point (the Videos API, chat, MCP) resolves a model name and fits `size` and
`seconds` here, so a name, a size or a duration means the same wherever it is sent. Sizes are
fitted by aspect ratio as images' are (`catalogue.fit_size`): OpenAI's portrait and landscape
sizes land on SiliconFlow's, a square on its square. SiliconFlow's video models are not
discovered from the account (discovery reads the image models): the table below is the list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic_core import PydanticCustomError

from .catalogue import ModelSpec, Site, fit_size
from .errors import InvalidRequestError
from .validation import invalid_param, problem

# The endpoint type new-api gives video models in `supported_endpoint_types` (its constant
# `EndpointTypeOpenAIVideo`): relays built on it route such a model to `/v1/videos`.
VIDEO_ENDPOINT_TYPE = "openai-video"
# OpenAI's own video model names, which its SDKs offer and clients hard-code (with dated ids
# such as sora-2-2025-10-06): aliases of the default model.
OPENAI_VIDEO_MODELS = ("sora-2", "sora-2-pro")
# Longest `size` and `seconds` read from a client: anything longer is refused
# before it is parsed (a size is "1280x720", a duration "5").
_MAX_SIZE_CHARS = 32
_MAX_SECONDS_CHARS = 8
# The date OpenAI appends to a dated model id: "-2025-10-06".
_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}")
_WAN_SIZES = ("1280x720", "720x1280", "960x960")


@dataclass(frozen=True, slots=True)
class VideoSpec:
    """One video model. A model that does not require an input image refuses one."""

    id: str
    sizes: tuple[str, ...]  # SiliconFlow's `image_size` values
    default_size: str
    seconds: tuple[str, ...]  # the durations it makes, as the video object spells them
    default_seconds: str
    requires_image: bool  # image-to-video; text-to-video models refuse an image
    sites: frozenset[Site]
    created: int  # Unix time of the release
    owned_by: str = "siliconflow"
    # A text-to-video model's image-to-video sibling: where a request with an image goes.
    image_variant: str | None = None

    def public_fields(self) -> dict[str, Any]:
        """What `/v1/models` shows of the model, besides the card's own fields."""
        return {
            "sf_sizes": list(self.sizes),
            "sf_default_size": self.default_size,
            "sf_seconds": list(self.seconds),
            "sf_default_seconds": self.default_seconds,
            "sf_requires_image": self.requires_image,
        }


_WAN22_RELEASE = 1_753_660_800  # 2025-07-28
WAN22_I2V = VideoSpec(
    id="Wan-AI/Wan2.2-I2V-A14B",
    sizes=_WAN_SIZES,
    default_size="1280x720",
    # SiliconFlow's Wan2.2 makes clips of about five seconds, and takes no duration.
    seconds=("5",),
    default_seconds="5",
    requires_image=True,
    sites=frozenset({"cn", "com"}),
    created=_WAN22_RELEASE,
)
WAN22_T2V = VideoSpec(
    id="Wan-AI/Wan2.2-T2V-A14B",
    sizes=_WAN_SIZES,
    default_size="1280x720",
    seconds=("5",),
    default_seconds="5",
    requires_image=False,
    sites=frozenset({"cn", "com"}),
    created=_WAN22_RELEASE,
    image_variant=WAN22_I2V.id,
)
# In `/v1/models` order: text-to-video first, as the image models put generation before edits.
# siliconflow.com also serves Wan2.1 text-to-video models; the documentation we follow gives no
# ids for them, so they are not described here.
VIDEO_MODELS: tuple[VideoSpec, ...] = (WAN22_T2V, WAN22_I2V)


def is_openai_name(name: str) -> bool:
    """sora-2, sora-2-pro, and either with a date (sora-2-2025-10-06): no regex over the whole
    name, only a fixed-length date checked once the known prefix is off."""
    for base in sorted(OPENAI_VIDEO_MODELS, key=len, reverse=True):
        if name.startswith(base):
            rest = name[len(base) :]
            return rest == "" or (len(rest) == 11 and _DATED.fullmatch(rest) is not None)
    return False


class VideoModels:
    """The site's video models, the default ones, and what a request's name and sizes mean.

    `default_model` (VIDEO_MODEL) is the text-to-video model a request naming none (or an
    OpenAI name) gets; one with an image gets the site's image-to-video model. Raises
    `ValueError` for a default that is not one of the site's text-to-video models.
    """

    def __init__(
        self,
        site: Site = "cn",
        default_model: str | None = None,
        *,
        models: Iterable[VideoSpec] = VIDEO_MODELS,
    ) -> None:
        self.site: Site = site
        self._specs = {spec.id: spec for spec in models if site in spec.sites}
        text = [spec.id for spec in self._specs.values() if not spec.requires_image]
        image = [spec.id for spec in self._specs.values() if spec.requires_image]
        chosen = default_model.strip() if default_model else text[0]
        if chosen not in text:
            raise ValueError(
                f"VIDEO_MODEL: '{chosen[:64]}' is not a text-to-video model on "
                f"siliconflow.{site} (text-to-video models: {', '.join(text)})"
            )
        self.default_model = chosen
        # The default text-to-video model's own sibling, else the site's first.
        variant = self._specs[chosen].image_variant
        self.default_image_model = variant if variant in self._specs else image[0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def specs(self) -> tuple[VideoSpec, ...]:
        return tuple(self._specs.values())

    def is_video(self, model_id: str) -> bool:
        return model_id in self._specs

    def spec(self, model_id: str) -> VideoSpec:
        """The model's entry; `KeyError` for a model that is not a video model (`is_video`)."""
        return self._specs[model_id]

    def aliases(self) -> tuple[str, ...]:
        """The OpenAI names `/v1/models` can list (the dated ids are answered, not listed)."""
        return OPENAI_VIDEO_MODELS

    def resolve(
        self, name: str | None, *, has_image: bool, image_param: str = "input_reference"
    ) -> VideoSpec:
        """The model a request gets for the name it sent (or none).

        `has_image`: the request carries an input image (`image_param` names where, for the
        error a model that needs one gives without it).
        """
        name = name.strip() if name else ""
        if not name or is_openai_name(name):
            return self._specs[self.default_image_model if has_image else self.default_model]
        spec = self._specs.get(name)
        if spec is None:
            shown = name if len(name) <= 64 else name[:64] + "…"
            raise InvalidRequestError(
                f"The model '{shown}' is not a video model of this proxy. "
                f"Video models: {', '.join(self._specs)}.",
                param="model",
                code="model_not_found",
            )
        if has_image and not spec.requires_image:
            variant = spec.image_variant
            if variant is not None and variant in self._specs:
                return self._specs[variant]
            raise InvalidRequestError(
                f"The model {spec.id} makes video from text only and takes no image; "
                f"for video from an image use {self.default_image_model}.",
                param="model",
                code="image_not_supported",
            )
        if spec.requires_image and not has_image:
            raise InvalidRequestError(
                f"The model {spec.id} makes video from an image: send one in "
                f"'{image_param}', or use {self.default_model} for video from text.",
                param=image_param,
                code="image_required",
            )
        return spec

    def fit(
        self, spec: VideoSpec, *, size: str | None, seconds: str | int | None
    ) -> tuple[str, str]:
        """The `image_size` to send and the `seconds` to report, for what the client asked.

        A size is fitted as images' are: the model's size with the nearest aspect ratio (ties:
        the nearest pixel count), `auto` or nothing its default. `seconds` must be a duration
        the model makes; nothing gives its own.
        """
        return self._fit_size(spec, size), _check_seconds(spec, seconds)

    def _fit_size(self, spec: VideoSpec, size: str | None) -> str:
        if size is None or not size.strip():
            return spec.default_size
        try:
            if len(size) > _MAX_SIZE_CHARS:
                raise problem(
                    "invalid_size",
                    "'{value}' is not WIDTHxHEIGHT such as 1280x720, or an aspect ratio "
                    "such as 16:9",
                    value=size[:_MAX_SIZE_CHARS] + "…",
                )
            fitted = fit_size(_as_image_model(spec), size)
        except PydanticCustomError as error:
            raise invalid_param("size", error) from None
        return fitted or spec.default_size


@cache
def _as_image_model(spec: VideoSpec) -> ModelSpec:
    """The video model as the image catalogue sees it, for `fit_size`."""
    return ModelSpec(id=spec.id, sizes=spec.sizes, default_size=spec.default_size)


def _check_seconds(spec: VideoSpec, seconds: str | int | None) -> str:
    """`seconds` as the model makes it; an omitted or blank one gives the model's own."""
    if seconds is None:
        return spec.default_seconds
    shown: str | None
    # bool is an int to Python, never a duration to a client; a huge int is not turned into
    # text (Python refuses past 4,300 digits, and no duration has more than a few).
    if isinstance(seconds, bool):
        shown = str(seconds).lower()
    elif isinstance(seconds, int):
        shown = str(seconds) if abs(seconds) < 10**_MAX_SECONDS_CHARS else None
    elif len(seconds) > _MAX_SECONDS_CHARS:
        shown = None
    else:
        shown = seconds.strip()
        if not shown:
            return spec.default_seconds
    if shown in spec.seconds:
        return shown
    allowed = " or ".join(f"'{value}'" for value in spec.seconds)
    given = f"'{shown}'" if shown is not None else "a value that long"
    raise InvalidRequestError(
        f"Invalid 'seconds': {spec.id} makes videos of {allowed} seconds, not {given}; "
        f"send {allowed} or leave it out.",
        param="seconds",
        code="invalid_seconds",
    )
