"""Fitting a client's size, aspect ratio or `auto` to what a model makes, and batching."""

from __future__ import annotations

import math
import re

from ..validation import problem
from .spec import ModelSpec

MIN_SIDE = 64
MAX_SIDE = 4096
_SIZE = re.compile(r"^\s*(\d{1,6})\s*[xX×*]\s*(\d{1,6})\s*$")
_RATIO = re.compile(r"^\s*(\d{1,4}(?:\.\d{1,3})?)\s*:\s*(\d{1,4}(?:\.\d{1,3})?)\s*$")
# Area of the sizes invented for models without a size table (about one megapixel).
_PASSTHROUGH_AREA = 1024 * 1024


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
