"""`python -m bench.formats`: what `output_format` costs: bytes per image, conversion time.

The fake upstream's images are small flat gradients, which every encoder squeezes to nothing;
these figures come instead from photo-like test images drawn here, deterministically: colour
gradients, blotches and fine texture (blurred noise at several scales), shapes with soft edges,
and a little grain, at SiliconFlow's usual sizes. The source is a PNG as SiliconFlow sends
one, and each conversion is `sfproxy.images.convert_image` as the service calls it (decode,
re-encode), timed on one core with nothing else running in this process.

Runs on its own in about half a minute (no servers, no wrk): `python -m bench.formats --write-docs`
rewrites its section of docs/benchmarks.md and keeps the rest; the full harness keeps the
section by rendering it again from `bench/results/formats.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import os
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

from sfproxy.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_QUALITY,
    FORMAT_MEDIA_TYPES,
    convert_image,
    image_dimensions,
)

from .machine import REPO, machine, versions
from .sections import replace_marked

RESULTS = REPO / "bench" / "results" / "formats.json"
DOCS = REPO / "docs" / "benchmarks.md"
# Qwen-Image's and Kolors' default sizes.
SIZES = ((1024, 1024), (1328, 1328))
FORMATS = ("png", "jpeg", "webp")
# Beside the default: OpenAI's default (100) and a smaller file (75).
OTHER_QUALITIES = (75, 100)
START = "<!-- bench.formats: start -->"
END = "<!-- bench.formats: end -->"


def photo_like(width: int, height: int, seed: int = 1) -> Image.Image:
    """A deterministic RGB picture whose detail compresses about as a photograph does."""
    rng = random.Random(seed)

    def noise(blur: float) -> Image.Image:
        raw = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
        return raw.filter(ImageFilter.GaussianBlur(blur)) if blur else raw

    def colour() -> tuple[int, int, int]:
        return (rng.randrange(256), rng.randrange(256), rng.randrange(256))

    mask = Image.radial_gradient("L").resize((width, height), Image.Resampling.BILINEAR)
    picture = Image.composite(
        Image.new("RGB", (width, height), colour()),
        Image.new("RGB", (width, height), colour()),
        mask,
    )
    draw = ImageDraw.Draw(picture)
    for _ in range(24):
        x, y = rng.randrange(width), rng.randrange(height)
        rx, ry = rng.randrange(width // 32, width // 5), rng.randrange(height // 32, height // 5)
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=colour())
    picture = picture.filter(ImageFilter.GaussianBlur(2))
    # Blurred noise loses contrast as it is blurred: each layer is stretched back first.
    for blur, weight in ((12, 0.35), (3, 0.25), (1, 0.12)):
        layer = noise(blur)
        layer = layer.point(lambda value, b=blur: max(0, min(255, 128 + (value - 128) * b)))
        picture = Image.blend(picture, layer, weight)
    return Image.blend(picture, noise(0), 0.04)


def source_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    photo_like(width, height).save(out, "PNG")
    return out.getvalue()


def _median_seconds(work: Any, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def in_a_thread(work: Callable[[], object]) -> tuple[float, float]:
    """Seconds `work` takes in a worker thread, as the service runs a conversion, and the
    longest an event loop in the same process stalled meanwhile (it ticks every millisecond):
    Pillow's codecs release the GIL, so the loop goes on."""

    async def probe() -> tuple[float, float]:
        done = asyncio.Event()
        worst = 0.0

        async def tick() -> None:
            nonlocal worst
            while not done.is_set():
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                worst = max(worst, time.perf_counter() - started - 0.001)

        ticking = asyncio.create_task(tick())
        started = time.perf_counter()
        await asyncio.to_thread(work)
        elapsed = time.perf_counter() - started
        done.set()
        await ticking
        return elapsed, worst

    return asyncio.run(probe())


def measure(sizes: Sequence[tuple[int, int]] = SIZES, repeats: int = 5) -> list[dict[str, Any]]:
    """One row per size, format and quality: bytes, median conversion time, the worst loop
    stall meanwhile, and the time to read the result's size from its header (done on the
    event loop for every image the service keeps as it came)."""
    rows: list[dict[str, Any]] = []
    for width, height in sizes:
        source = source_png(width, height)
        megapixels = width * height / 1e6
        size = f"{width}x{height}"
        rows.append(_row(size, "png", None, "none: as SiliconFlow sends it", source, repeats))
        for image_format in FORMATS:
            media_type = FORMAT_MEDIA_TYPES[image_format]
            # PNG is lossless: one row; JPEG and WebP at each quality.
            lossy = image_format != "png"
            for quality in (DEFAULT_QUALITY, *OTHER_QUALITIES) if lossy else (DEFAULT_QUALITY,):

                def convert(s: bytes = source, m: str = media_type, q: int = quality) -> bytes:
                    return convert_image(s, m, max_pixels=DEFAULT_MAX_PIXELS, quality=q).data

                data = convert()
                shown_quality = quality if lossy else None
                what = _what(image_format, quality)
                measured = _row(size, image_format, shown_quality, what, data, repeats)
                # Medians: the machines are shared, and a single run can meet another tenant.
                runs = [in_a_thread(convert) for _ in range(repeats)]
                seconds = statistics.median(elapsed for elapsed, _ in runs)
                measured["seconds"] = seconds
                measured["ms_per_megapixel"] = seconds * 1000 / megapixels
                measured["loop_gap_seconds"] = statistics.median(gap for _, gap in runs)
                rows.append(measured)
    return rows


def _row(
    size: str, image_format: str, quality: int | None, what: str, data: bytes, repeats: int
) -> dict[str, Any]:
    return {
        "size": size,
        "format": image_format,
        "quality": quality,
        "what": what,
        "bytes": len(data),
        "seconds": None,
        "ms_per_megapixel": None,
        "loop_gap_seconds": None,
        "header_seconds": _median_seconds(lambda: image_dimensions(data), repeats * 20),
    }


def _what(image_format: str, quality: int) -> str:
    if image_format == "png":
        return "re-encoded (skipped when the source is PNG)"
    default = " (default)" if quality == DEFAULT_QUALITY else ""
    return f"quality {quality}{default}"


def run(argv: Sequence[str] | None, repeats: int) -> dict[str, Any]:
    return {
        "schema": 1,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.formats" + (f" {shlex.join(argv)}" if argv else ""),
        "machine": {**machine(), "nproc": len(os.sched_getaffinity(0))},
        "versions": {**versions(), "pillow": Image.__version__},
        "repeats": repeats,
        "rows": measure(repeats=repeats),
    }


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| Size | Output | Conversion | Bytes per image | Conversion time | Per megapixel "
        "| Worst event-loop stall meanwhile | Size read from the header |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']} | {row['format']} | {row['what']} | {row['bytes'] / 1024:,.0f} KiB "
            f"| {_ms(row['seconds'])} | {_ms(row['ms_per_megapixel'], 1000)} "
            f"| {_ms(row['loop_gap_seconds'], digits=1)} | {_ms(row['header_seconds'], digits=3)} |"
        )
    return "\n".join(lines)


def _ms(seconds: float | None, scale: float = 1.0, digits: int = 0) -> str:
    """Milliseconds (`scale` 1000: the value is already in them); a dash when not measured."""
    if seconds is None:
        return "—"
    return f"{seconds * 1000 / scale:,.{digits}f} ms"


def section(results: Mapping[str, Any]) -> str:
    """The page's section for a run, between markers so that it can be replaced alone."""
    machine_ = results["machine"]
    return "\n".join(
        [
            START,
            "## Output formats",
            "",
            "What `output_format` (and `IMAGE_FORMAT`) costs per image: the converted file's "
            "size, and the time `sfproxy.images.convert_image` takes (decode the PNG, encode the "
            "asked format). "
            "The images are photo-like test pictures drawn deterministically by "
            "`bench/formats.py` (gradients, soft shapes, blurred noise at three scales and a "
            "little grain), not the fake upstream's flat gradients, which every encoder "
            "squeezes to almost nothing; real generations may compress better or worse. The "
            "first row of each size is the PNG as SiliconFlow sends it. Each conversion runs in "
            "a worker thread, as in the service, beside an event loop that ticks every "
            "millisecond: *worst event-loop stall* is the longest that loop waited. Pillow's "
            "codecs release the GIL, so the loop goes on serving other requests (CPython "
            "switches threads every 5 ms). Both are medians over "
            f"{results['repeats']} runs. *Size read from the header* is "
            "the only work done on the event loop for an image kept as it came (to report an "
            "edit's `size`).",
            "",
            f"From a real run on {results['date']}: `{results['command']}` on "
            f"{machine_['cpu']} (`nproc` {machine_['nproc']}, Linux {machine_['kernel']}, "
            f"load average {' / '.join(str(v) for v in machine_.get('load_average', []))} at "
            "the start, from other tenants), "
            f"Pillow {results['versions']['pillow']}, Python {results['versions']['python']}.",
            "",
            markdown_table(results["rows"]),
            "",
            "`IMAGE_COMPRESSION` defaults to 90 rather than OpenAI's 100: compare the bytes of "
            "the two rows. Run it alone: `python -m bench.formats --write-docs` (about half a "
            "minute, no servers).",
            END,
        ]
    )


def replace_section(page: str, new_section: str) -> str:
    """The page with its formats section replaced, or the section appended if it has none."""
    return replace_marked(page, new_section, START, END)


def saved_section(path: Path = RESULTS) -> str | None:
    """The section from the last saved run, for the full harness to keep on the page."""
    if not path.exists():
        return None
    return section(json.loads(path.read_text()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.formats", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per conversion")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"replace the section in {DOCS.relative_to(REPO)}",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="PATH",
        help="measure nothing: print the table (and --write-docs) from a saved run",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        print("bench.formats: --repeats must be at least 1", file=sys.stderr)
        return 2
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
    else:
        results = run(list(argv) if argv is not None else sys.argv[1:], args.repeats)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown_table(results["rows"]))
    if args.write_docs:
        page = DOCS.read_text() if DOCS.exists() else ""
        DOCS.write_text(replace_section(page, section(results)))
        print(f"bench.formats: wrote {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
