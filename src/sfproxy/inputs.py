"""Input images a client supplies for editing, made into what SiliconFlow accepts.

Uploaded files and data URIs are checked (a real, readable image under the size and pixel limits,
the pixels counted from the header before anything is decoded) and sent as data URIs. Images
this service hosts are read from the image store, never over HTTP, and checked the same way. Any
other http(s) URL is passed to SiliconFlow as it is: the service itself never fetches a URL a
client supplied, so it cannot be used to reach hosts on its own network.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from .errors import InvalidRequestError
from .images import (
    DEFAULT_MAX_PIXELS,
    MEDIA_TYPES,
    ImageError,
    ImageTooLargeError,
    convert_to_png,
    decode_data_uri,
    is_data_uri,
    open_image,
    to_data_uri,
)
from .plan import INPUT_IMAGE_FIELDS, Plan
from .store import ImageStore, is_valid_name

# SiliconFlow takes these as they are; anything else (GIF, ...) is converted to PNG first.
UPSTREAM_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp")
_HOSTED_PREFIX = "/v1/files/images/"


def hosted_name(url: str, public_base: str | None = None) -> str | None:
    """The image-store name if the URL points at an image this service hosts."""
    if public_base and url.startswith(public_base + "/"):
        candidate = url[len(public_base) + 1 :].rsplit("/", 1)[-1].split("?", 1)[0]
        return candidate if is_valid_name(candidate) else None
    path = urlsplit(url).path
    _, found, name = path.rpartition(_HOSTED_PREFIX)
    if found and is_valid_name(name):
        return name
    return None


class InputImages:
    def __init__(
        self,
        store: ImageStore,
        *,
        max_bytes: int,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        public_base: str | None = None,
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.public_base = public_base

    async def from_upload(self, data: bytes, *, param: str) -> str:
        return await self._checked_data_uri(data, param=param)

    async def from_reference(self, reference: str, *, param: str) -> str:
        """A data URI or URL from a JSON body or a chat message."""
        reference = reference.strip()
        if is_data_uri(reference):
            data = decode_data_uri(reference, param=param, max_bytes=self.max_bytes)
            return await self._checked_data_uri(data, param=param)
        if not reference.lower().startswith(("http://", "https://")):
            raise InvalidRequestError(
                f"{param} must be an uploaded file, a data: URI or an http(s) URL.", param=param
            )
        name = hosted_name(reference, self.public_base)
        if name is not None and self.store.keeps_images:
            stored = await self.store.get(name)
            if stored is not None:
                return await self._checked_data_uri(stored.data, param=param)
        return reference

    async def read_plan_images(self, plan: Plan) -> Plan:
        """A plan whose input images came in a JSON body's `image`, `image2`, `image3` fields
        (SiliconFlow's names, on the generations endpoint), read and checked as an edit's are.

        Called once the plan was checked, so a model that takes no images is refused first.
        """
        if not plan.job.images:
            return plan
        images = [
            await self.from_reference(reference, param=param)
            for reference, param in zip(plan.job.images, INPUT_IMAGE_FIELDS, strict=False)
        ]
        return plan.with_images(tuple(images))

    async def _checked_data_uri(self, data: bytes, *, param: str) -> str:
        if len(data) > self.max_bytes:
            raise InvalidRequestError(
                f"{param} is larger than the {self.max_bytes / (1024 * 1024):g} MB limit "
                "(MAX_IMAGE_MB).",
                param=param,
            )
        media_type = await asyncio.to_thread(_readable_media_type, data, param, self.max_pixels)
        if media_type not in UPSTREAM_MEDIA_TYPES:
            data = await asyncio.to_thread(_converted, data, param, self.max_pixels)
            media_type = "image/png"
        return to_data_uri(data, media_type)


def _readable_media_type(data: bytes, param: str, max_pixels: int) -> str:
    """The media type of bytes that really are an image within the pixel limit (off the loop)."""
    try:
        with open_image(data, max_pixels=max_pixels) as image:
            image_format = (image.format or "").lower()
            image.verify()
    except ImageTooLargeError as exc:
        raise _too_large(param, exc) from None
    except Exception:
        # ImageError, or whatever verify() raises on a damaged file.
        raise _unreadable(param) from None
    media_type = MEDIA_TYPES.get(image_format)
    if media_type is None:
        raise InvalidRequestError(
            f"{param} is a {image_format.upper() or 'unknown'} image; send PNG, JPEG, WebP or GIF.",
            param=param,
        )
    return media_type


def _converted(data: bytes, param: str, max_pixels: int) -> bytes:
    try:
        return convert_to_png(data, max_pixels=max_pixels)
    except ImageTooLargeError as exc:
        raise _too_large(param, exc) from None
    except ImageError:
        raise _unreadable(param) from None


def _too_large(param: str, exc: ImageTooLargeError) -> InvalidRequestError:
    return InvalidRequestError(f"{param} is too large: {exc}.", param=param)


def _unreadable(param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{param} is not a readable image (PNG, JPEG, WebP or GIF).", param=param
    )
