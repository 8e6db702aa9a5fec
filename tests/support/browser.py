"""Headless Chromium for the playground tests: Debian's `chromium` package, driven by Playwright.

Playwright's own browser download is never used (`playwright install` needs a network this
project's machines don't have); the system Chromium is launched by path instead. Where it is
missing or will not start, the tests that need it skip and say why.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, sync_playwright
from playwright.sync_api import Error as PlaywrightError

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# --headless comes from Playwright, and so does a fresh --user-data-dir. Without the
# background-networking flags Chromium keeps calling Google's hosts, which this network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def system_chromium() -> Iterator[Browser]:
    """The system Chromium under Playwright, or a skip that names what is missing."""
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (install Debian's `chromium` package)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
            )
        except PlaywrightError as exc:
            pytest.skip(f"Chromium at {CHROMIUM} did not start: {exc.message.splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()


def same_origin(url: str, origin: str) -> bool:
    """Whether a request went to the page's own server (blob: addresses are made in the page)."""
    if url.startswith("blob:"):
        url = url.removeprefix("blob:")
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" == origin


@dataclass
class WatchedPage:
    """A page in a fresh browser context, with what it logged and asked for."""

    page: Page
    origin: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def watch(self) -> None:
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self.console_errors.append(f"uncaught: {error}"))
        self.page.on("request", self._on_request)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests if not same_origin(url, self.origin)]

    def wait_for_images(self, selector: str) -> list[tuple[int, int]]:
        """Wait until every image the selector matches has loaded; their natural sizes."""
        self.page.wait_for_function(
            """selector => {
                const images = [...document.querySelectorAll(selector)];
                return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
            }""",
            arg=selector,
        )
        sizes: list[list[int]] = self.page.eval_on_selector_all(
            selector, "images => images.map(i => [i.naturalWidth, i.naturalHeight])"
        )
        return [(width, height) for width, height in sizes]


OpenPage = Callable[..., WatchedPage]
