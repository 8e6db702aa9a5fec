"""Image bytes: what format they are, data URIs, and conversion between PNG, JPEG and WebP.

Every image decoded here is opened lazily and its pixel count, read from the header, checked
before any pixel is decoded: a 100 KB file can claim 12000x12000 pixels (a decompression bomb).
Only the first frame of an animation is ever decoded.
"""

from __future__ import annotations

import binascii
import io
from dataclasses import dataclass

import orjson
import pybase64
from PIL import Image

from .errors import InvalidRequestError

# Extension by media type; the image store names files with these.
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}
MEDIA_TYPES = {ext: media for media, ext in EXTENSIONS.items()} | {"jpeg": "image/jpeg"}
# What `output_format` names, by its OpenAI spelling, and Pillow's name for each.
FORMAT_MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PILLOW_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
# The formats `output_compression` (a quality) applies to.
LOSSY_MEDIA_TYPES = ("image/jpeg", "image/webp")
# The JPEG/WebP quality when nobody asked for one (IMAGE_COMPRESSION's default). OpenAI's is
# 100, but a JPEG at 100 is about twice the bytes of one at 90 for no difference anyone sees.
DEFAULT_QUALITY = 90
# JPEG has no alpha: transparent pixels become this colour.
JPEG_BACKGROUND = (255, 255, 255)
# The default of MAX_INPUT_PIXELS, and the bound on images SiliconFlow sends back (its largest
# are under 2 Mpx); an RGBA image this large is 160 MB decoded.
DEFAULT_MAX_PIXELS = 40_000_000
# `data:image/png;base64,` and any parameters: longer headers are not data URIs we accept.
_MAX_DATA_URI_HEADER = 256


class ImageError(ValueError):
    """Bytes that cannot be used as an image; the message says why, for the client."""


class ImageTooLargeError(ImageError):
    pass


def sniff_media_type(data: bytes) -> str | None:
    """The media type the bytes really are, from their signature; None if not an image we know."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    return None


def looks_complete(data: bytes, media_type: str) -> bool:
    """Whether the file ends as its format says files end: a cut-off transfer does not.

    A cheap structural check (no decoding) for images downloaded from SiliconFlow, so a
    truncated one is retried rather than stored.
    """
    if media_type == "image/png":
        return data.endswith(b"IEND\xaeB`\x82")
    if media_type == "image/jpeg":
        # Some encoders leave a few bytes after the end-of-image marker.
        return b"\xff\xd9" in data[-64:]
    if media_type == "image/webp":
        declared = int.from_bytes(data[4:8], "little") + 8
        return len(data) in (declared, declared + 1)
    if media_type == "image/gif":
        return data.endswith(b";")
    return True


def to_data_uri(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{pybase64.b64encode(data).decode('ascii')}"


def b64_json_fragment(data: bytes) -> orjson.Fragment:
    """The bytes' base64 as a finished JSON string, for orjson to copy into an answer as is.

    A 2 MB image is 2.7 MB of base64: encoding it with SIMD and never turning it into a Python
    str (base64 needs no JSON escaping) keeps the event loop free for other requests.
    """
    return orjson.Fragment(b'"' + pybase64.b64encode(data) + b'"')


def decode_data_uri(uri: str, *, param: str, max_bytes: int) -> bytes:
    """The image bytes of a `data:image/...;base64,` URI, or a 400 naming `param`."""
    # Parsed with find, not a regex: the header is short, and a URI without a comma must not
    # cost a scan of all its megabytes.
    comma = uri.find(",", 0, _MAX_DATA_URI_HEADER)
    header = uri[:comma].lower() if comma > 0 else ""
    if not header.startswith("data:") or not header.endswith(";base64"):
        raise InvalidRequestError(
            f"{param} is not a base64 data URI (expected data:image/png;base64,...).", param=param
        )
    encoded = uri[comma + 1 :]
    if len(encoded) * 3 // 4 > max_bytes:
        raise InvalidRequestError(
            f"{param} is larger than the {max_bytes / (1024 * 1024):g} MB limit.", param=param
        )
    try:
        return pybase64.b64decode(encoded, validate=False)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"{param} holds invalid base64 data.", param=param) from None


def is_data_uri(value: str) -> bool:
    return value[:5].lower() == "data:"


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """The image, opened but not decoded, once its header shows at most `max_pixels` pixels.

    Raises ImageError for anything Pillow cannot read (it raises many kinds of exception on
    damaged files) and ImageTooLargeError above the limit. Pillow's own bomb check, which
    applies a process-wide limit, counts as too large too.
    """
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(
            f"the image has more pixels than the limit of {max_pixels:,} (MAX_INPUT_PIXELS)"
        ) from None
    except Exception as exc:
        raise ImageError(f"not a readable image: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLargeError(
            f"the image is {width}x{height}, more pixels than the limit of {max_pixels:,} "
            "(MAX_INPUT_PIXELS)"
        )
    return image


def image_dimensions(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Width and height from the header alone (no pixel is decoded); ImageError if unreadable."""
    with open_image(data, max_pixels=max_pixels) as opened:
        return opened.size


@dataclass(frozen=True, slots=True)
class Converted:
    data: bytes
    media_type: str
    width: int
    height: int


def convert_image(
    data: bytes, media_type: str, *, max_pixels: int, quality: int = DEFAULT_QUALITY
) -> Converted:
    """The first frame re-encoded as `media_type` (PNG, JPEG or WebP).

    CPU work: call it off the event loop. `quality` (0 to 100) applies to JPEG and WebP; PNG is
    lossless and ignores it. JPEG has no alpha channel, so transparency is flattened onto
    `JPEG_BACKGROUND`; PNG and WebP keep it.
    """
    pillow_format = _PILLOW_FORMATS[media_type]
    with open_image(data, max_pixels=max_pixels) as opened:
        try:
            # load() decodes the current frame only: the first, as nothing has seeked.
            opened.load()
            image = _in_mode_for(opened, pillow_format)
            options: dict[str, object] = {}
            if pillow_format != "PNG":
                options["quality"] = quality
            # The colour profile keeps colours as the model made them (P3 and the like).
            if icc_profile := opened.info.get("icc_profile"):
                options["icc_profile"] = icc_profile
            out = io.BytesIO()
            image.save(out, format=pillow_format, **options)
            width, height = image.size
            return Converted(out.getvalue(), media_type, width, height)
        except Exception as exc:
            raise ImageError(f"not a readable image: {exc}") from None


def convert_to_png(data: bytes, *, max_pixels: int) -> bytes:
    """The first frame re-encoded as PNG (CPU work: call it off the event loop)."""
    return convert_image(data, "image/png", max_pixels=max_pixels).data


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )


def _in_mode_for(image: Image.Image, pillow_format: str) -> Image.Image:
    """The image in a mode the format can store, converted only when it must be."""
    if pillow_format == "PNG":
        return image if image.mode in ("RGB", "RGBA", "L", "LA", "P") else image.convert("RGBA")
    if pillow_format == "JPEG":
        if _has_alpha(image):
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, JPEG_BACKGROUND)
            flat.paste(rgba, mask=rgba.getchannel("A"))
            return flat
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    # WebP stores RGB or RGBA only.
    wanted = "RGBA" if _has_alpha(image) else "RGB"
    return image if image.mode == wanted else image.convert(wanted)
