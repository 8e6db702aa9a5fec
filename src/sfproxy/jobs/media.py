"""A downloaded video checked to be an MP4 with a video stream, and its poster frame.

PyAV (FFmpeg) runs in a thread, off the event loop, and is bounded: the container is opened
from memory, its frame size is checked before anything is decoded, and only packets up to the
first decoded frame are read, so a hostile or broken file costs at most a few hundred packets.
"""

from __future__ import annotations

import asyncio
import io

import av
from PIL import Image

from ..errors import UpstreamBadResponseError

# ISO base media files (MP4) say so at bytes 4..8; FFmpeg's name for the family.
_MP4_FORMAT = "mp4"
# A first frame is found within this many packets in any real file.
MAX_PACKETS = 500
# SiliconFlow's videos are at most 1280x720; this bounds a decoded frame's memory.
MAX_FRAME_PIXELS = 4096 * 4096
POSTER_QUALITY = 85
POSTER_TYPE = "image/jpeg"


class VideoFileError(UpstreamBadResponseError):
    default_code = "video_unreadable"


async def poster_of(data: bytes) -> bytes:
    """The first frame of the MP4 `data`, as a JPEG; `VideoFileError` if it is not one."""
    if data[4:8] != b"ftyp":
        raise VideoFileError("SiliconFlow's video is not an MP4 file.")
    return await asyncio.to_thread(_first_frame, data)


def _first_frame(data: bytes) -> bytes:
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if _MP4_FORMAT not in container.format.name.split(","):
                raise VideoFileError("SiliconFlow's video is not an MP4 file.")
            if not container.streams.video:
                raise VideoFileError("SiliconFlow's MP4 has no video stream.")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if not width or not height or width * height > MAX_FRAME_PIXELS:
                raise VideoFileError(f"SiliconFlow's video has an unusable size {width}x{height}.")
            for count, packet in enumerate(container.demux(stream)):
                if count >= MAX_PACKETS:
                    break
                for frame in packet.decode():
                    return _jpeg(frame.to_image())  # type: ignore[no-untyped-call]
    except av.FFmpegError as exc:
        raise VideoFileError(
            f"SiliconFlow's video could not be read ({exc.__class__.__name__})."
        ) from None
    raise VideoFileError("SiliconFlow's video has no frame that could be decoded.")


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=POSTER_QUALITY)
    return buffer.getvalue()
