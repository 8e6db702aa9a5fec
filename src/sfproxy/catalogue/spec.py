"""One model's entry: what it accepts, as far as SiliconFlow's documentation tells."""

from __future__ import annotations

import zlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The SiliconFlow site an account belongs to: its keys, models and prices differ.
Site = Literal["cn", "com"]
SITE_HOSTS: dict[Site, str] = {"cn": "siliconflow.cn", "com": "siliconflow.com"}
# Where a listed model came from, as `/v1/models` shows it.
Source = Literal["discovered", "configured", "built-in"]

# Tuning parameters, by their SiliconFlow names.
TUNING_PARAMS = frozenset(
    {
        "seed",
        "num_inference_steps",
        "guidance_scale",
        "cfg",
        "negative_prompt",
        "prompt_enhancement",
    }
)
SizeText = Annotated[str, Field(pattern=r"^\d{2,5}x\d{2,5}$")]
# The `output_format` names (protocol.OutputFormat, which imports this package).
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
    # False: SiliconFlow documents nothing of the model's parameters, so the entry sends only
    # what every image model takes (see builtin.py, `CONSERVATIVE_PARAMS`).
    verified: bool = True

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
        if not self.verified:
            shown["verified"] = False
        return shown


def derived_created(model_id: str) -> int:
    """A stable `created` for a model nobody dated: a second of 2024 chosen by the id's CRC-32.

    The same id gives the same value in every process and release (unlike `hash()`).
    """
    return _YEAR_2024 + zlib.crc32(model_id.encode()) % _SECONDS_IN_2024


_YEAR_2024 = 1_704_067_200
_SECONDS_IN_2024 = 366 * 86_400
