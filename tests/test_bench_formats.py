"""The output-format benchmark's parts, on tiny images: no figure is checked, only the shapes."""

from __future__ import annotations

import io

from bench.formats import END, START, markdown_table, measure, photo_like, replace_section, section
from PIL import Image


def test_the_test_picture_is_deterministic_and_detailed():
    first, second = photo_like(96, 64), photo_like(96, 64)
    assert first.tobytes() == second.tobytes()
    assert first.size == (96, 64) and first.mode == "RGB"
    # Photo-like: many distinct colours, unlike the fake upstream's gradients.
    assert len(first.getcolors(maxcolors=96 * 64) or []) > 1000


def test_each_format_is_measured_and_decodes():
    rows = measure(sizes=((64, 48),), repeats=1)
    assert [(row["format"], row["quality"]) for row in rows] == [
        ("png", None),
        ("png", None),
        ("jpeg", 90),
        ("jpeg", 75),
        ("jpeg", 100),
        ("webp", 90),
        ("webp", 75),
        ("webp", 100),
    ]
    assert all(row["bytes"] > 0 and row["header_seconds"] > 0 for row in rows)
    assert all(row["seconds"] > 0 for row in rows[1:])
    assert rows[0]["loop_gap_seconds"] is None and rows[0]["seconds"] is None
    assert all(row["loop_gap_seconds"] is not None for row in rows[1:])
    table = markdown_table(rows)
    assert table.count("\n") == len(rows) + 1
    assert "| 64x48 | webp | quality 90 (default) |" in table


def test_the_section_replaces_only_itself():
    results = {
        "date": "2026-12-01 12:00 UTC",
        "command": "python -m bench.formats",
        "machine": {
            "cpu": "Test CPU",
            "nproc": 2,
            "kernel": "6.0",
            "load_average": [0.5, 1.0, 1.5],
        },
        "versions": {"pillow": "13.0.0", "python": "3.11.7"},
        "repeats": 1,
        "rows": measure(sizes=((32, 32),), repeats=1),
    }
    page = "# Benchmarks\n\n## Results\n\nfigures\n"
    once = replace_section(page, section(results))
    assert once.startswith(page.rstrip("\n"))
    assert once.count(START) == once.count(END) == 1
    assert "## Output formats" in once and "`nproc` 2" in once
    later = {**results, "date": "2026-12-02 12:00 UTC"}
    twice = replace_section(once + "\n## After\n", section(later))
    assert twice.count(START) == 1 and "2026-12-02 12:00 UTC" in twice
    assert "2026-12-01 12:00 UTC" not in twice
    assert twice.endswith("## After\n")


def test_the_full_harness_keeps_the_section():
    from bench.docs import render

    from .test_bench_harness import results

    run = results()
    run.update(date="2026-11-25 12:00 UTC", command="python -m bench", duration_s=100.0)
    page = render(run, None, None, "<!-- bench.formats: start -->\n## Output formats\n")
    assert page.rstrip().endswith("## Output formats")
    assert "## Output formats" not in render(run, None)


def test_converted_bytes_open_as_their_format():
    from sfproxy.images import convert_image

    out = io.BytesIO()
    photo_like(40, 40).save(out, "PNG")
    for media_type, name in (("image/jpeg", "JPEG"), ("image/webp", "WEBP")):
        converted = convert_image(out.getvalue(), media_type, max_pixels=10_000)
        with Image.open(io.BytesIO(converted.data)) as image:
            assert image.format == name
