"""Sections of docs/benchmarks.md that a harness part run alone rewrites between its markers,
leaving the rest of the page as it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def replace_marked(page: str, new_section: str, start_marker: str, end_marker: str) -> str:
    """The page with the section between the markers replaced, or appended if it has none."""
    start, end = page.find(start_marker), page.find(end_marker)
    if start == -1 or end == -1 or end < start:
        return page.rstrip("\n") + "\n\n" + new_section + "\n"
    return page[:start] + new_section + page[end + len(end_marker) :]


def saved_run(path: Path) -> dict[str, Any] | None:
    """The results a scenario run alone saved (its `RESULTS` file), if it ever ran."""
    if not path.exists():
        return None
    results: dict[str, Any] = json.loads(path.read_text())
    return results
