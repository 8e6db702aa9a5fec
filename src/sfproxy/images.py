"""Image bytes: what format they are, data URIs, and conversion for clients that need PNG."""

from __future__ import annotations

import binascii
import io
import re

import orjson
import pybase64
from PIL import Image, UnidentifiedImageError

from .errors import InvalidRequestError

# Extension by media type; the image store names files with these.
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}
MEDIA_TYPES = {ext: media for media, ext in EXTENSIONS.items()} | {"jpeg": "image/jpeg"}
_DATA_URI = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,", re.I)


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
    match = _DATA_URI.match(uri)
    if match is None:
        raise InvalidRequestError(
            f"{param} is not a base64 data URI (expected data:image/png;base64,...).", param=param
        )
    encoded = uri[match.end() :]
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


def convert_to_png(data: bytes) -> bytes:
    """Re-encode as PNG (CPU work: call it off the event loop)."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = (
                opened if opened.mode in ("RGB", "RGBA", "L", "LA", "P") else opened.convert("RGBA")
            )
            out = io.BytesIO()
            image.save(out, format="PNG")
            return out.getvalue()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not a readable image: {exc}") from None
