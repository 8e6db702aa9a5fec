"""Drawing, encoding and padding the fake's images.

An image is kept as a tuple of byte parts rather than one `bytes`: the padding that makes files
reach `image_min_bytes` is zeros shared by every image, so a benchmark holding thousands of 2 MB
images in flight keeps each distinct picture once plus one 64 KiB filler, not gigabytes of copies.
"""

from __future__ import annotations

import io
import random
import struct
import textwrap
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from PIL import Image, ImageDraw, ImageFont

from .render_cache import RenderCache

ImageFormat = Literal["png", "jpeg", "webp"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = ("png", "jpeg", "webp")

CONTENT_TYPES: dict[ImageFormat, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
}
EXTENSIONS: dict[ImageFormat, str] = {"png": "png", "jpeg": "jpg", "webp": "webp"}

# A JPEG segment length is 16 bits and counts itself, so one COM segment carries at most this much.
_JPEG_COM_MAX_PAYLOAD = 0xFFFF - 2
_FILLER_BLOCK_PAYLOAD = _JPEG_COM_MAX_PAYLOAD
# Lower-case first two letters: ancillary and private, so every PNG decoder must skip it.
_PNG_FILLER_TYPE = b"paDd"
_WEBP_FILLER_TYPE = b"PADD"
# An XMP packet makes Pillow write the extended (VP8X) layout, the only one that allows unknown
# chunks such as the filler.
_WEBP_XMP = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>"
_FILLER_HEADER_BYTES: dict[ImageFormat, int] = {"png": 12, "jpeg": 4, "webp": 8}
_ZEROS = memoryview(bytes(_FILLER_BLOCK_PAYLOAD + 1))

# A file is sent as a sequence of parts; memoryviews share the zero filler across files.
Part = bytes | memoryview


@dataclass(frozen=True, slots=True)
class RenderedImage:
    parts: tuple[Part, ...]
    image_format: ImageFormat
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.image_format]

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)

    def to_bytes(self) -> bytes:
        return b"".join(self.parts)


def render_size(width: int, height: int, scale: float, max_side: int | None) -> tuple[int, int]:
    """The pixel size actually drawn for a requested size, after the benchmark's cost limits."""
    w, h = width * scale, height * scale
    if max_side is not None and max(w, h) > max_side:
        shrink = max_side / max(w, h)
        w, h = w * shrink, h * shrink
    return max(1, round(w)), max(1, round(h))


def render_image(
    width: int,
    height: int,
    prompt: str,
    seed: int,
    image_format: ImageFormat,
    min_bytes: int = 0,
) -> RenderedImage:
    """Draw a seed-coloured gradient captioned with the prompt, encoded and padded."""
    picture = _draw(width, height, prompt, seed)
    encoded = _encode(picture, image_format)
    return RenderedImage(_pad(encoded, image_format, min_bytes), image_format, width, height)


def _draw(width: int, height: int, prompt: str, seed: int) -> Image.Image:
    rng = random.Random(seed)
    start = tuple(rng.randrange(256) for _ in range(3))
    end = tuple(rng.randrange(256) for _ in range(3))
    shape = rng.choice(("vertical", "horizontal", "radial"))
    if shape == "radial":
        mask = Image.radial_gradient("L")
    else:
        mask = Image.linear_gradient("L")
        if shape == "horizontal":
            mask = mask.transpose(Image.Transpose.ROTATE_90)
    mask = mask.resize((width, height), Image.Resampling.BILINEAR)
    picture = Image.composite(
        Image.new("RGB", (width, height), end), Image.new("RGB", (width, height), start), mask
    )
    _caption(picture, f"{prompt}\n\nseed {seed} | {width}x{height}")
    return picture


def _caption(picture: Image.Image, text: str) -> None:
    width, height = picture.size
    if min(width, height) < 32:
        return
    font_size = max(8, min(width, height) // 24)
    font = _font(font_size)
    margin = max(2, width // 32)
    # Average glyph width of the default font is about half its size; good enough to wrap by.
    columns = max(1, int((width - 2 * margin) / (font_size * 0.55)))
    lines: list[str] = []
    for paragraph in text.splitlines():
        lines.extend(textwrap.wrap(paragraph, columns) or [""])
    line_height = font_size * 1.25
    max_lines = max(1, int((height - 2 * margin) / line_height))
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + ["..."]
    ImageDraw.Draw(picture).multiline_text(
        (margin, margin),
        "\n".join(lines),
        font=font,
        fill=(255, 255, 255),
        stroke_width=max(1, font_size // 12),
        stroke_fill=(0, 0, 0),
        spacing=int(font_size * 0.25),
    )


_fonts = threading.local()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # One font object per render thread: a FreeType face must not be shared between threads.
    if not hasattr(_fonts, "by_size"):
        _fonts.by_size = {}
    by_size: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = _fonts.by_size
    font = by_size.get(size)
    if font is None:
        font = by_size[size] = ImageFont.load_default(size)
    return font


def _encode(picture: Image.Image, image_format: ImageFormat) -> bytes:
    out = io.BytesIO()
    # Speed over size: the fake's bytes are thrown away after one download.
    if image_format == "png":
        picture.save(out, "PNG", compress_level=1)
    elif image_format == "jpeg":
        picture.save(out, "JPEG", quality=85)
    else:
        picture.save(out, "WEBP", quality=80, method=0, xmp=_WEBP_XMP)
    return out.getvalue()


def _pad(encoded: bytes, image_format: ImageFormat, min_bytes: int) -> tuple[Part, ...]:
    missing = min_bytes - len(encoded)
    if missing <= 0:
        return (encoded,)
    header_bytes = _FILLER_HEADER_BYTES[image_format]
    full_block = _full_filler_block(image_format)
    blocks, rest = divmod(missing, len(full_block))
    filler: list[Part] = [full_block] * blocks
    if rest:
        # A block holds at least one payload byte, so the file may overshoot by a block header.
        filler.extend(_filler_block(image_format, max(1, rest - header_bytes)))
    if image_format == "png":
        # Just before IEND, the last chunk.
        return (encoded[:-12], *filler, encoded[-12:])
    if image_format == "jpeg":
        # Just after SOI, the first two bytes.
        return (encoded[:2], *filler, encoded[2:])
    riff_size = len(encoded) - 8 + sum(len(part) for part in filler)
    return (encoded[:4] + struct.pack("<I", riff_size) + encoded[8:], *filler)


@lru_cache(maxsize=len(IMAGE_FORMATS))
def _full_filler_block(image_format: ImageFormat) -> bytes:
    return b"".join(_filler_block(image_format, _FILLER_BLOCK_PAYLOAD))


def _filler_block(image_format: ImageFormat, payload: int) -> list[Part]:
    """A block skipped by decoders, its zero payload a view of one shared buffer."""
    # RIFF chunks are word aligned: an odd payload is followed by one unlisted zero byte.
    zeros = _ZEROS[: payload + (payload % 2 if image_format == "webp" else 0)]
    if image_format == "png":
        crc = zlib.crc32(zeros, zlib.crc32(_PNG_FILLER_TYPE))
        return [struct.pack(">I", payload) + _PNG_FILLER_TYPE, zeros, struct.pack(">I", crc)]
    if image_format == "jpeg":
        return [b"\xff\xfe" + struct.pack(">H", payload + 2), zeros]
    return [_WEBP_FILLER_TYPE + struct.pack("<I", payload), zeros]


RenderKey = tuple[int, int, str, int, ImageFormat, int]


class ImageRenderer:
    """Renders off the event loop, remembers recent results, and renders each key only once at
    a time, since a benchmark fires many identical requests together."""

    def __init__(
        self, count: Callable[[str], None], cache_size: int = 64, workers: int = 2
    ) -> None:
        self._renders: RenderCache[RenderKey, RenderedImage] = RenderCache(
            count,
            made="renders",
            hit="render_cache_hits",
            joins_hit=True,
            cache_size=cache_size,
            workers=workers,
            thread_name="fake-upstream-render",
        )

    async def render(
        self,
        width: int,
        height: int,
        prompt: str,
        seed: int,
        image_format: ImageFormat,
        min_bytes: int = 0,
    ) -> RenderedImage:
        key: RenderKey = (width, height, prompt, seed, image_format, min_bytes)
        return await self._renders.get(key, lambda: render_image(*key))

    def close(self) -> None:
        self._renders.close()
