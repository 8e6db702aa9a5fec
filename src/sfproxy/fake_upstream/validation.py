"""Checking a generation request the way SiliconFlow does, per model."""

from __future__ import annotations

import binascii
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from .config import ModelRule
from .images import ImageFormat

UNKNOWN_MODEL_CODE = 20012
INVALID_PARAMETER_CODE = 20015
MAX_SEED = 9_999_999_999
INPUT_IMAGE_FIELDS = ("image", "image2", "image3")
_SIZE = re.compile(r"(\d+)x(\d+)")
_DATA_URI = re.compile(r"data:image/[\w.+-]+;base64,", re.IGNORECASE)
_MIN_SIDE, _MAX_SIDE = 64, 4096
# SiliconFlow's fallback when an edit model cannot size from the input (a URL it fetches itself).
_FALLBACK_EDIT_SIZE = (1024, 1024)


class InvalidRequest(Exception):
    def __init__(self, message: str, code: int = INVALID_PARAMETER_CODE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True)
class Generation:
    """A request that passed the checks: what to draw."""

    model: str
    prompt: str
    seed: int | None
    count: int
    width: int
    height: int
    # What the request asked the model to make (None: the fake's configured format).
    image_format: ImageFormat | None = None


def check_generation(body: Any, models: Mapping[str, ModelRule]) -> Generation:
    if not isinstance(body, dict):
        raise InvalidRequest("Invalid request body: expected a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Invalid parameter model: model is required")
    rule = models.get(model)
    if rule is None:
        raise InvalidRequest(
            "Model does not exist. Please check it carefully.", code=UNKNOWN_MODEL_CODE
        )
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("Invalid parameter prompt: prompt is required and must not be empty")
    negative_prompt = body.get("negative_prompt")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise InvalidRequest("Invalid parameter negative_prompt: must be a string")

    batch_size = _integer(body, "batch_size", 1, 4)
    seed = _integer(body, "seed", 0, MAX_SEED)
    _integer(body, "num_inference_steps", 1, 100)
    _number(body, "guidance_scale", 0, 20)
    _number(body, "cfg", 0.1, 20)

    first_input_size = _check_input_images(body, rule)
    if rule.sizes_from_input:
        if body.get("image_size") is not None:
            raise InvalidRequest(
                f"Invalid parameter image_size: {model} sizes its output from the input image"
            )
        width, height = first_input_size or _FALLBACK_EDIT_SIZE
    else:
        width, height = _image_size(body) or rule.default_size
        if rule.sizes and (width, height) not in rule.sizes:
            allowed = ", ".join(f"{w}x{h}" for w, h in rule.sizes)
            raise InvalidRequest(f"Invalid parameter image_size: must be one of {allowed}")
    _prompt_enhancement(body, rule)

    count = (batch_size or 1) if rule.honours_batch_size else 1
    return Generation(model, prompt, seed, count, width, height, _output_format(body, rule))


def _output_format(body: Mapping[str, Any], rule: ModelRule) -> ImageFormat | None:
    value = body.get("output_format")
    if value is None:
        return None
    if not rule.output_formats:
        raise InvalidRequest("Invalid parameter output_format: this model does not take it")
    for image_format in rule.output_formats:
        if value == image_format:
            return image_format
    raise InvalidRequest(
        f"Invalid parameter output_format: must be one of {', '.join(rule.output_formats)}"
    )


def _prompt_enhancement(body: Mapping[str, Any], rule: ModelRule) -> None:
    value = body.get("prompt_enhancement")
    if value is None:
        return
    if not rule.takes_prompt_enhancement:
        raise InvalidRequest("Invalid parameter prompt_enhancement: this model does not take it")
    if not isinstance(value, bool):
        raise InvalidRequest("Invalid parameter prompt_enhancement: must be a boolean")


def _integer(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"Invalid parameter {name}: must be an integer in [{low}, {high}]")
    return value


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"Invalid parameter {name}: must be a number in [{low}, {high}]")
    return float(value)


def _image_size(body: Mapping[str, Any]) -> tuple[int, int] | None:
    value = body.get("image_size")
    if value is None:
        return None
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidRequest('Invalid parameter image_size: must look like "1024x1024"')
    width, height = int(match[1]), int(match[2])
    if not (_MIN_SIDE <= width <= _MAX_SIDE and _MIN_SIDE <= height <= _MAX_SIDE):
        raise InvalidRequest(
            f"Invalid parameter image_size: each side must be in [{_MIN_SIDE}, {_MAX_SIDE}]"
        )
    return width, height


def _check_input_images(body: Mapping[str, Any], rule: ModelRule) -> tuple[int, int] | None:
    """Check `image`, `image2`, `image3`; return the first data URI's pixel size, if any."""
    given = [name for name in INPUT_IMAGE_FIELDS if body.get(name) is not None]
    for name in given:
        if name not in rule.image_fields:
            raise InvalidRequest(f"Invalid parameter {name}: this model does not take {name}")
    if len(given) < rule.min_images or (rule.min_images and "image" not in given):
        raise InvalidRequest("Invalid parameter image: this model requires an input image")
    first_size = None
    for name in given:
        size = _input_image_size(name, body[name])
        if name == "image":
            first_size = size
    return first_size


def _input_image_size(name: str, value: Any) -> tuple[int, int] | None:
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid parameter {name}: must be a data URI or an http(s) URL")
    if value.startswith(("http://", "https://")):
        return None
    prefix = _DATA_URI.match(value)
    if prefix is None:
        raise InvalidRequest(
            f"Invalid parameter {name}: must be a data:image/...;base64, URI or an http(s) URL"
        )
    try:
        raw = binascii.a2b_base64(value[prefix.end() :], strict_mode=True)
        with Image.open(io.BytesIO(raw)) as picture:
            return picture.size
    except (binascii.Error, ValueError, OSError, Image.DecompressionBombError):
        raise InvalidRequest(
            f"Invalid parameter {name}: the data URI is not a valid image"
        ) from None
