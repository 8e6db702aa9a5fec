"""What each SiliconFlow image model accepts, and fitting requested sizes to it.

The built-in table follows SiliconFlow's public documentation. `MODELS_JSON` entries may carry
the same fields to add a model or override one. A model nobody described is passed through
untouched: no size fitting, every parameter sent as given.

Clients written for OpenAI hard-code its model names; `Catalogue.resolve` maps those aliases
(and a request that names no model) to a listed model, in one place for every endpoint.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .aliases import BUILTIN_ALIASES, DEFAULT_TARGET
from .validation import problem

# Tuning parameters, by their SiliconFlow names.
TUNING_PARAMS = frozenset(
    {"seed", "num_inference_steps", "guidance_scale", "cfg", "negative_prompt"}
)
MIN_SIDE = 64
MAX_SIDE = 4096
_SIZE = re.compile(r"^\s*(\d{1,6})\s*[xX×*]\s*(\d{1,6})\s*$")
_RATIO = re.compile(r"^\s*(\d{1,4}(?:\.\d{1,3})?)\s*:\s*(\d{1,4}(?:\.\d{1,3})?)\s*$")
# Area of the sizes invented for models without a size table (about one megapixel).
_PASSTHROUGH_AREA = 1024 * 1024

SizeText = Annotated[str, Field(pattern=r"^\d{2,5}x\d{2,5}$")]
# The `output_format` names (protocol.OutputFormat, which imports this module).
ImageFormatName = Literal["png", "jpeg", "webp"]


class ModelSpec(BaseModel):
    """One image model. `None` means "not known": nothing is fitted or filtered for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    owned_by: str = "siliconflow"
    # Unix time of the model's release; unset: derived from the id (`created_at`).
    created: int | None = Field(default=None, ge=0)
    sizes: tuple[SizeText, ...] | None = None
    default_size: SizeText | None = None
    # False for the edit models: they size from the input image and refuse `image_size`.
    takes_image_size: bool = True
    max_batch_size: int | None = Field(default=None, ge=1, le=16)
    min_images: int = Field(default=0, ge=0, le=3)
    max_images: int | None = Field(default=None, ge=0, le=3)
    params: frozenset[str] | None = None
    # The formats the model makes itself when sent `output_format` (SiliconFlow's FLUX.2):
    # a request for one of them is passed through instead of converted here.
    output_formats: tuple[ImageFormatName, ...] | None = None

    @field_validator("params")
    @classmethod
    def _known_params(cls, value: frozenset[str] | None) -> frozenset[str] | None:
        if value is not None and (unknown := value - TUNING_PARAMS):
            raise ValueError(
                f"unknown parameter(s) {sorted(unknown)}; known: {sorted(TUNING_PARAMS)}"
            )
        return value

    @property
    def takes_images(self) -> bool:
        return self.max_images is None or self.max_images > 0

    @property
    def requires_images(self) -> bool:
        return self.min_images > 0

    @property
    def created_at(self) -> int:
        return self.created if self.created is not None else derived_created(self.id)

    def accepts(self, param: str) -> bool:
        return self.params is None or param in self.params

    def makes(self, image_format: str) -> bool:
        """Whether the model itself answers `output_format: image_format`."""
        return self.output_formats is not None and image_format in self.output_formats

    def public_fields(self) -> dict[str, Any]:
        """The capability fields `/v1/models` shows (unknown ones left out)."""
        shown: dict[str, Any] = {}
        if self.sizes is not None:
            shown["sizes"] = list(self.sizes)
        if self.default_size is not None:
            shown["default_size"] = self.default_size
        if self.max_batch_size is not None:
            shown["max_batch_size"] = self.max_batch_size
        if self.max_images is not None:
            shown["min_images"] = self.min_images
            shown["max_images"] = self.max_images
        shown["takes_image_size"] = self.takes_image_size
        if self.params is not None:
            shown["params"] = sorted(self.params)
        if self.output_formats is not None:
            shown["output_formats"] = list(self.output_formats)
        return shown


def derived_created(model_id: str) -> int:
    """A stable `created` for a model nobody dated: a second of 2024 chosen by the id's CRC-32.

    The same id gives the same value in every process and release (unlike `hash()`).
    """
    return _YEAR_2024 + zlib.crc32(model_id.encode()) % _SECONDS_IN_2024


_YEAR_2024 = 1_704_067_200
_SECONDS_IN_2024 = 366 * 86_400

_QWEN_PARAMS = frozenset({"seed", "num_inference_steps", "cfg", "negative_prompt"})

BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="Qwen/Qwen-Image",
        created=1_754_265_600,  # 2025-08-04
        sizes=(
            "1328x1328",
            "1664x928",
            "928x1664",
            "1472x1140",
            "1140x1472",
            "1584x1056",
            "1056x1584",
        ),
        default_size="1328x1328",
        max_batch_size=1,
        max_images=0,
        params=_QWEN_PARAMS,
    ),
    ModelSpec(
        id="Kwai-Kolors/Kolors",
        created=1_720_224_000,  # 2024-07-06, the open release
        sizes=("1024x1024", "960x1280", "768x1024", "720x1440", "720x1280"),
        default_size="1024x1024",
        max_batch_size=4,
        max_images=1,
        params=frozenset({"seed", "num_inference_steps", "guidance_scale", "negative_prompt"}),
    ),
    ModelSpec(
        id="Qwen/Qwen-Image-Edit",
        created=1_755_475_200,  # 2025-08-18
        takes_image_size=False,
        max_batch_size=1,
        min_images=1,
        max_images=1,
        params=_QWEN_PARAMS,
    ),
    ModelSpec(
        id="Qwen/Qwen-Image-Edit-2509",
        created=1_758_499_200,  # 2025-09-22
        takes_image_size=False,
        max_batch_size=1,
        min_images=1,
        max_images=3,
        params=_QWEN_PARAMS,
    ),
)


class Catalogue:
    """The models this service lists, in order, what it knows about any model, and aliases.

    `aliases` (from MODEL_ALIASES) add to or override the built-in ones; an alias mapped to
    `None` is switched off. Raises `ValueError` for an alias that points at an unlisted model.
    """

    def __init__(
        self,
        overrides: Iterable[ModelSpec | str] = (),
        aliases: Mapping[str, str | None] | None = None,
    ) -> None:
        self._builtin = {spec.id: spec for spec in BUILTIN_MODELS}
        self._known = dict(self._builtin)
        listed: list[ModelSpec] = []
        for entry in overrides:
            spec = self._merge(entry)
            self._known[spec.id] = spec
            listed.append(spec)
        self.listed: tuple[ModelSpec, ...] = tuple(listed) or BUILTIN_MODELS
        self.aliases: dict[str, str] = self._aliases(aliases or {})

    def _merge(self, entry: ModelSpec | str) -> ModelSpec:
        if isinstance(entry, str):
            return self._builtin.get(entry) or ModelSpec(id=entry)
        base = self._builtin.get(entry.id)
        if base is None:
            return entry
        return base.model_copy(update=entry.model_dump(exclude_unset=True))

    def _aliases(self, configured: Mapping[str, str | None]) -> dict[str, str]:
        listed = [spec.id for spec in self.listed]
        # A listed model named like a built-in alias is that model, not the alias.
        merged: dict[str, str | None] = {
            alias: DEFAULT_TARGET for alias in BUILTIN_ALIASES if alias not in listed
        }
        merged.update(configured)
        aliases: dict[str, str] = {}
        for alias, target in merged.items():
            if target is None:
                continue
            if alias in listed:
                raise ValueError(
                    f"MODEL_ALIASES: '{alias}' is a listed model's own name and cannot be an alias"
                )
            if target != DEFAULT_TARGET and target not in listed:
                raise ValueError(
                    f"MODEL_ALIASES: '{alias}' points at '{target}', which is not listed "
                    f"(listed: {', '.join(listed)}; or use '{DEFAULT_TARGET}')"
                )
            aliases[alias] = target
        return aliases

    @property
    def default_model(self) -> str:
        """What a generation (or chat) that names no model uses: the first listed model."""
        return self.listed[0].id

    @property
    def default_generation_model(self) -> str:
        """The default text-to-image model: the first listed one that needs no input image."""
        return next(
            (spec.id for spec in self.listed if not spec.requires_images), self.default_model
        )

    @property
    def default_edit_model(self) -> str:
        """The first listed model that requires input images, else the first that takes them."""
        takers = [spec for spec in self.listed if spec.takes_images]
        editor = next((spec for spec in takers if spec.requires_images), None)
        if editor is not None or takers:
            return (editor or takers[0]).id
        return self.default_model

    def resolve(self, name: str | None, *, edit: bool) -> str:
        """The model a request gets for the name it sent (or none): aliases followed.

        `edit`: the request works on input images. It then gets the default edit model for no
        name or for an alias of the endpoint's default.
        """
        if not name:
            return self.default_edit_model if edit else self.default_model
        target = self.aliases.get(name, name)
        if target == DEFAULT_TARGET:
            return self.default_edit_model if edit else self.default_generation_model
        return target

    def listed_spec(self, model_id: str) -> ModelSpec | None:
        return next((spec for spec in self.listed if spec.id == model_id), None)

    def spec(self, model_id: str) -> ModelSpec:
        return self._known.get(model_id) or ModelSpec(id=model_id)

    def image_models(self) -> list[str]:
        return [spec.id for spec in self.listed if spec.takes_images]


def parse_size(text: str) -> tuple[int, int]:
    match = _SIZE.match(text)
    if match is None:
        raise problem(
            "invalid_size",
            "'{value}' is not WIDTHxHEIGHT such as 1024x1024, an aspect ratio such as 16:9, "
            "or auto",
            value=text,
        )
    width, height = int(match[1]), int(match[2])
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise problem(
            "size_out_of_range",
            "'{value}': width and height must each be between {min} and {max} pixels",
            value=text,
            min=MIN_SIDE,
            max=MAX_SIDE,
        )
    return width, height


def parse_ratio(text: str) -> float:
    match = _RATIO.match(text)
    ratio = float(match[1]) / float(match[2]) if match and float(match[2]) else 0.0
    if not 0.1 <= ratio <= 10:
        raise problem(
            "invalid_aspect_ratio",
            "'{value}' is not an aspect ratio such as 16:9 or 3:4",
            value=text,
        )
    return ratio


def is_ratio(text: str) -> bool:
    return ":" in text


def validate_size(text: str | None) -> str | None:
    """Check a client's `size` early, so a bad one is a 400 before any upstream work.

    Raises a `PydanticCustomError` problem, which validators and the corridor report.
    """
    if text is None or text.strip().lower() == "auto":
        return None
    if is_ratio(text):
        parse_ratio(text)
    else:
        parse_size(text)
    return text.strip()


def fit_size(spec: ModelSpec, requested: str | None) -> str | None:
    """The `image_size` to send for a requested size, aspect ratio, `auto` or nothing.

    Known models get the supported size with the nearest aspect ratio (ties: nearest pixel
    count); `None` means send no `image_size` at all.
    """
    if not spec.takes_image_size:
        return None
    if requested is None or requested.strip().lower() == "auto":
        return spec.default_size
    if is_ratio(requested):
        ratio = parse_ratio(requested)
        area = _PASSTHROUGH_AREA
    else:
        width, height = parse_size(requested)
        ratio, area = width / height, width * height
        if not spec.sizes:
            return f"{width}x{height}"
    if not spec.sizes:
        width = round(math.sqrt(area * ratio) / 16) * 16
        height = round(math.sqrt(area / ratio) / 16) * 16
        return f"{width}x{height}"
    return min(spec.sizes, key=lambda size: _distance(size, ratio, area))


def _distance(size: str, ratio: float, area: int) -> tuple[float, float]:
    width, height = (int(side) for side in size.split("x"))
    # Log distance makes 2:1 and 1:2 equally far from 1:1.
    ratio_gap = abs(math.log((width / height) / ratio))
    return round(ratio_gap, 6), abs(width * height - area)


def plan_batches(spec: ModelSpec, n: int, batch_size: int | None) -> list[int]:
    """How many images each upstream call makes, in call order.

    The original's rule stands: `batch_size` with `n` 1 is one batched call for that many
    images. Otherwise the `n` images are split into as few calls as the model's batch limit
    (and the client's `batch_size`, if smaller) allows, balanced so that the calls, which run
    concurrently, finish together. A model that cannot batch gets one call per image.
    """
    limit = spec.max_batch_size
    if batch_size is not None and n == 1:
        if limit is None or batch_size <= limit:
            return [batch_size]
        n = batch_size
    per_call = min(batch_size or limit or 1, limit or batch_size or 1)
    calls = math.ceil(n / per_call)
    base, extra = divmod(n, calls)
    return [base + 1 if index < extra else base for index in range(calls)]
