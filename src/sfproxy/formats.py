"""The format images are kept and answered in: `output_format`, else `IMAGE_FORMAT`.

An image SiliconFlow sent in another format is converted with Pillow, in a worker thread, before
it is stored, so the stored file, its link, its `Content-Type`, the `b64_json` bytes and the
answer's `output_format` all agree. Bytes already in the asked format are kept as they are,
unless a quality (`output_compression`) was asked for a format that has one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .errors import UpstreamBadResponseError
from .images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_QUALITY,
    EXTENSIONS,
    FORMAT_MEDIA_TYPES,
    LOSSY_MEDIA_TYPES,
    ImageError,
    convert_image,
    image_dimensions,
)
from .plan import ImageJob
from .protocol import OutputFormat


@dataclass(frozen=True, slots=True)
class OutputFormats:
    # IMAGE_FORMAT (None: keep SiliconFlow's), and IMAGE_COMPRESSION.
    default: OutputFormat | None = None
    quality: int = DEFAULT_QUALITY

    def wanted(self, job: ImageJob) -> OutputFormat | None:
        """The format the job's images are answered in; None: as SiliconFlow made them."""
        return job.output_format or self.default

    async def apply(
        self, data: bytes, media_type: str, job: ImageJob
    ) -> tuple[bytes, str, tuple[int, int] | None]:
        """The downloaded image as the job asks, its media type and pixel size."""
        wanted = self.wanted(job)
        target = FORMAT_MEDIA_TYPES[wanted] if wanted is not None else media_type
        # Only JPEG and WebP have a quality; asked of PNG (or GIF) it is no reason to convert.
        requality = job.output_compression is not None and target in LOSSY_MEDIA_TYPES
        if target == media_type and not requality:
            try:
                # The header alone, on the loop: tens of microseconds for PNG and JPEG, under a
                # millisecond for WebP (docs/benchmarks.md, "Output formats").
                return data, media_type, image_dimensions(data, max_pixels=DEFAULT_MAX_PIXELS)
            except ImageError:
                # Kept and answered as before: the size is only reported, never needed.
                return data, media_type, None
        quality = job.output_compression
        try:
            converted = await asyncio.to_thread(
                convert_image,
                data,
                target,
                max_pixels=DEFAULT_MAX_PIXELS,
                quality=self.quality if quality is None else quality,
            )
        except ImageError as exc:
            raise UpstreamBadResponseError(
                f"SiliconFlow sent an image that cannot be converted to "
                f"{wanted or EXTENSIONS[target]}: {exc}."
            ) from None
        return converted.data, converted.media_type, (converted.width, converted.height)
