"""The fake's videos: small, real, playable MP4 clips (H.264, yuv420p) drawn with Pillow and
written with PyAV, whose wheel bundles FFmpeg and libx264, so no system FFmpeg is needed.

Each frame shows the prompt, a frame counter and a square sliding across, over a gradient coloured
by the prompt (text to video) or over the input image, scaled to fit (image to video): a test can
tell two prompts apart, see that the picture moves, and check that the input image went through.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .render_cache import RenderCache

MP4_CONTENT_TYPE = "video/mp4"
# Input images are checked against this before their pixels are decoded.
MAX_INPUT_PIXELS = 40_000_000
# H.264 in yuv420p needs even sides; below this libx264 refuses the size.
_MIN_SIDE = 16
_BACKDROP = (24, 24, 32)


# A spec with its input image as a digest: (width, height, fps, frames, prompt, sha256).
ClipKey = tuple[int, int, int, int, str, str]


@dataclass(frozen=True, slots=True)
class ClipSpec:
    """What a clip shows; the input image is the raw file (PNG, JPEG, ...) or None."""

    width: int
    height: int
    fps: int
    frames: int
    prompt: str
    image: bytes | None = None

    @property
    def key(self) -> ClipKey:
        # A digest, so the cache holds no copy of the input image.
        digest = hashlib.sha256(self.image).hexdigest() if self.image is not None else ""
        return (self.width, self.height, self.fps, self.frames, self.prompt, digest)


def clip_spec(
    image_size: tuple[int, int],
    scale: int,
    fps: int,
    seconds: float,
    prompt: str,
    image: bytes | None,
) -> ClipSpec:
    """The clip for a job: each side divided by `scale` (rounded to even), `fps` × `seconds`."""
    width, height = (max(_MIN_SIDE, round(side / scale / 2) * 2) for side in image_size)
    return ClipSpec(width, height, fps, max(1, round(fps * seconds)), prompt, image)


def render_clip(spec: ClipSpec) -> bytes:
    """Encode the clip; runs on a worker thread (it holds the GIL only in Pillow's drawing)."""
    with tempfile.TemporaryDirectory(prefix="fake-clip-") as folder:
        # `+faststart` moves the index to the front, so a browser plays before the end arrives;
        # it rewrites the file, which FFmpeg cannot do in memory.
        path = Path(folder) / "clip.mp4"
        with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=spec.fps)
            stream.width, stream.height = spec.width, spec.height
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
            time_base = Fraction(1, spec.fps)
            for index, picture in enumerate(_frames(spec)):
                frame = av.VideoFrame.from_image(picture)  # type: ignore[no-untyped-call]
                frame.pts, frame.time_base = index, time_base
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        return path.read_bytes()


def _frames(spec: ClipSpec) -> Iterator[Image.Image]:
    backdrop = _backdrop(spec)
    side = max(4, spec.height // 6)
    font_size = max(8, min(spec.width, spec.height) // 10)
    font = ImageFont.load_default(font_size)
    caption = _wrap(spec.prompt, spec.width, spec.height, font_size)
    for index in range(spec.frames):
        picture = backdrop.copy()
        draw = ImageDraw.Draw(picture)
        # Left to right over the clip, a third of the way down.
        x = round(index * (spec.width - side) / max(1, spec.frames - 1))
        y = spec.height // 3
        draw.rectangle((x, y, x + side, y + side), fill=(255, 255, 255), outline=(0, 0, 0))
        for position, text in (
            ((2, 1), caption),
            ((2, spec.height - font_size - 2), f"{index + 1}/{spec.frames}"),
        ):
            draw.multiline_text(
                position, text, font=font, fill="white", stroke_width=1, stroke_fill="black"
            )
        yield picture


def _backdrop(spec: ClipSpec) -> Image.Image:
    size = (spec.width, spec.height)
    if spec.image is not None:
        with Image.open(io.BytesIO(spec.image)) as source:
            width, height = source.size
            if width * height > MAX_INPUT_PIXELS:
                raise ValueError("the input image has too many pixels")
            source.draft("RGB", size)  # JPEG: decode at a fraction of the size
            fitted = ImageOps.contain(source.convert("RGB"), size)
        backdrop = Image.new("RGB", size, _BACKDROP)
        backdrop.paste(fitted, ((size[0] - fitted.width) // 2, (size[1] - fitted.height) // 2))
        return backdrop
    # The prompt's digest picks the gradient's colours, so two prompts differ in every frame.
    digest = hashlib.sha256(spec.prompt.encode()).digest()
    start, end = tuple(digest[0:3]), tuple(digest[3:6])
    mask = Image.linear_gradient("L").resize(size, Image.Resampling.BILINEAR)
    return Image.composite(Image.new("RGB", size, end), Image.new("RGB", size, start), mask)


def _wrap(prompt: str, width: int, height: int, font_size: int) -> str:
    # The default font's glyphs average about half its size across.
    columns = max(1, int((width - 4) / (font_size * 0.55)))
    rows = max(1, (height // 3 - 2) // (font_size + 1))
    lines = textwrap.wrap(" ".join(prompt.split()), columns, max_lines=rows, placeholder="...")
    return "\n".join(lines)


class ClipRenderer:
    """Encodes off the event loop, one clip at a time (the machine's cores serve the tests),
    remembers recent clips, and encodes each spec once however many jobs ask for it."""

    def __init__(self, count: Callable[[str], None], cache_size: int = 16) -> None:
        self._clips: RenderCache[ClipKey, bytes] = RenderCache(
            count,
            made="clips_rendered",
            hit="clip_cache_hits",
            joins_hit=False,
            cache_size=cache_size,
            workers=1,
            thread_name="fake-upstream-clip",
        )

    async def render(self, spec: ClipSpec) -> bytes:
        return await self._clips.get(spec.key, lambda: render_clip(spec))

    def close(self) -> None:
        self._clips.close()
