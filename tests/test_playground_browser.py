"""The playground page at `/`, used in headless Chromium against `sfproxy serve` and the fake.

Screenshots go to test-artifacts/; docs/playground.png is a copy of playground-desktop.png.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, ViewportSize, expect

from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.video_models import VIDEO_ENDPOINT_TYPE

from .conftest import CLIENT_KEYS, StartProxy, keyed
from .support.browser import OpenPage, WatchedPage, system_chromium
from .support.proxy import ProxyProcess

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
DESKTOP = ViewportSize(width=1360, height=940)
PHONE = ViewportSize(width=390, height=844)
HISTORY_KEY = "sfproxy.playground.history"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with system_chromium() as chromium:
        yield chromium


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """Open the page in a fresh context (empty local storage) per call."""
    contexts = []

    def open_at(
        server: ProxyProcess, path: str = "/", viewport: ViewportSize = DESKTOP
    ) -> WatchedPage:
        context = browser.new_context(viewport=viewport)
        context.set_default_timeout(15_000)
        contexts.append(context)
        watched = WatchedPage(context.new_page(), origin=server.url)
        watched.watch()
        watched.page.goto(server.url + path)
        expect(watched.page.locator("#connection")).not_to_have_attribute("data-state", "loading")
        return watched

    yield open_at
    for context in contexts:
        context.close()


def listed_models(server: ProxyProcess, key: str | None = None) -> list[str]:
    """The image models: the ones the image form lists (video models have their own mode)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.get(f"{server.api_base}/models", headers=headers, timeout=10)
    return [
        card["id"]
        for card in answer.json()["data"]
        if VIDEO_ENDPOINT_TYPE not in card["supported_endpoint_types"]
    ]


def generate(page: Page, prompt: str, model: str = "Qwen/Qwen-Image", **fields: str) -> None:
    """Fill the form (fields by element id) and generate; returns once the new entry shows."""
    page.select_option("#model", model)
    page.fill("#prompt", prompt)
    for element_id, value in fields.items():
        if element_id == "size":
            page.select_option("#size", value)
        else:
            page.fill(f"#{element_id}", value)
    before = page.locator(".entry:not(.pending)").count()
    page.click("#generate")
    expect(page.locator(".entry:not(.pending)")).to_have_count(before + 1)
    expect(page.locator(".entry").first.locator(".entry-prompt")).to_have_text(prompt)


def png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri_image(value: str) -> Image.Image:
    match = re.fullmatch(r"data:image/[a-z]+;base64,(.+)", value, flags=re.DOTALL)
    assert match, value[:60]
    return Image.open(io.BytesIO(base64.b64decode(match.group(1))))


def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page, animations="disabled")


def test_page_loads_at_both_addresses_with_only_its_own_requests(
    open_page: OpenPage, proxy: ProxyProcess
) -> None:
    for path in ("/", "/playground"):
        view = open_page(proxy, path)
        page = view.page
        expect(page).to_have_title(re.compile("Image Playground"))
        expect(page.locator("#connection")).to_have_attribute("data-state", "ok")
        options = page.locator("#model option")
        assert options.all_text_contents() == listed_models(proxy)
        expect(page.locator("#key-hint")).to_have_text("This server needs no key.")
        expect(page.locator("#empty")).to_be_visible()
        # The module scripts, the stylesheet, the icon and /v1/models: nothing from elsewhere.
        assert any(url.endswith("/static/app.js") for url in view.requests)
        assert any(url.endswith("/v1/models") for url in view.requests)
        assert view.foreign_requests() == []
        assert view.console_errors == []


def test_generate_shows_the_images_with_size_and_seed_and_sends_the_form(
    open_page: OpenPage, proxy: ProxyProcess, fake: FakeSiliconFlow
) -> None:
    view = open_page(proxy)
    page = view.page
    generate(page, "A lighthouse on a cliff at dawn, cinematic", size="1664x928", n="3", seed="7")
    generate(
        page,
        "A red panda reading a book in a sunlit library, watercolor",
        size="1328x1328",
        negative="blurry, low quality",
        n="2",
        seed="42",
        steps="20",
        guidance="4.5",
    )

    latest = page.locator(".entry").first
    assert view.wait_for_images(".entry:first-child .shot img") == [(1328, 1328)] * 2
    shots = latest.locator(".shot")
    expect(shots.nth(0).locator(".shot-info")).to_have_text("1328×1328seed 42")
    expect(shots.nth(1).locator(".shot-info")).to_have_text("1328×1328seed 43")
    expect(latest.locator(".entry-negative")).to_have_text("Negative: blurry, low quality")
    expect(page.locator("#status")).to_contain_text("Made 2 images")

    sent = sorted((r.body for r in fake.requests[-2:]), key=lambda body: body["seed"])
    assert [body["seed"] for body in sent] == [42, 43]
    for body in sent:
        assert body["model"] == "Qwen/Qwen-Image"
        assert body["prompt"] == "A red panda reading a book in a sunlit library, watercolor"
        assert body["negative_prompt"] == "blurry, low quality"
        assert body["num_inference_steps"] == 20
        assert body["cfg"] == 4.5
        assert body["image_size"] == "1328x1328"

    # Download links point at the hosted image; a click opens it full size.
    url = shots.nth(0).locator("img").get_attribute("src")
    assert url and url.startswith(f"{proxy.url}/v1/files/images/")
    download = shots.nth(0).locator("[data-part=download]")
    expect(download).to_have_attribute("href", url)
    expect(download).to_have_attribute("download", re.compile(r"^a-red-panda.*-42\.png$"))
    page.mouse.move(0, 0)
    screenshot(page, "playground-desktop.png")

    shots.nth(0).locator(".shot-open").click()
    expect(page.locator("#viewer")).to_be_visible()
    assert view.wait_for_images("#viewer-image") == [(1328, 1328)]
    expect(page.locator("#viewer-meta")).to_have_text("Qwen/Qwen-Image · 1328×1328 · seed 42")
    expect(page.locator("#viewer-open")).to_have_attribute("href", url)
    page.keyboard.press("Escape")
    expect(page.locator("#viewer")).to_be_hidden()

    assert view.foreign_requests() == []
    assert view.console_errors == []


def test_history_survives_a_reload_and_clears(open_page: OpenPage, proxy: ProxyProcess) -> None:
    page = open_page(proxy).page
    generate(page, "a paper boat on a pond", seed="5")
    page.reload()
    entries = page.locator(".entry")
    expect(entries).to_have_count(1)
    expect(entries.first.locator(".entry-prompt")).to_have_text("a paper boat on a pond")
    expect(entries.first.locator(".chip").first).to_have_text("Qwen/Qwen-Image")
    expect(entries.first.locator(".shot-info")).to_have_text("1328×1328seed 5")
    expect(entries.first.locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-"))

    page.click("#clear-history")
    expect(entries).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    assert page.evaluate(f"localStorage.getItem('{HISTORY_KEY}')") is None
    # Clearing can be undone until the next generation...
    page.click("#clear-history")
    expect(entries).to_have_count(1)
    page.click("#clear-history")
    # ...and stays cleared after a reload.
    page.reload()
    expect(entries).to_have_count(0)
    expect(page.locator("#clear-history")).to_be_hidden()


def test_edit_sends_a_chosen_file_as_the_input_image(
    open_page: OpenPage, proxy: ProxyProcess, fake: FakeSiliconFlow
) -> None:
    view = open_page(proxy)
    page = view.page
    page.select_option("#model", "Qwen/Qwen-Image-Edit")
    expect(page.locator("#inputs")).to_be_visible()
    expect(page.locator("#inputs-badge")).to_have_text("required")
    expect(page.locator("#size-field")).to_be_hidden()  # the output keeps the input's shape

    page.fill("#prompt", "make the sky purple")
    page.click("#generate")
    expect(page.locator("#error-title")).to_have_text("Add an input image")

    page.set_input_files(
        "#file",
        files=[
            {"name": "photo.png", "mimeType": "image/png", "buffer": png(300, 200, (200, 80, 40))}
        ],
    )
    expect(page.locator("#input-list .thumb")).to_have_count(1)
    expect(page.locator("#inputs-count")).to_have_text("1 / 1")
    generate(page, "make the sky purple", model="Qwen/Qwen-Image-Edit", seed="9")

    entry = page.locator(".entry").first
    expect(entry.locator(".chip-edit")).to_have_text("edit")
    assert view.wait_for_images(".entry:first-child .shot img")
    expect(entry.locator(".shot-info")).to_contain_text("seed 9")
    body = fake.requests[-1].body
    assert body["model"] == "Qwen/Qwen-Image-Edit"
    assert body["prompt"] == "make the sky purple"
    assert data_uri_image(body["image"]).size == (300, 200)
    assert view.console_errors == []


def test_a_generated_image_can_be_the_next_edit_s_input(
    open_page: OpenPage, proxy: ProxyProcess, fake: FakeSiliconFlow
) -> None:
    page = open_page(proxy).page
    generate(page, "a castle on a hill", size="1664x928")
    page.locator(".entry").first.locator(".shot-open").first.click()
    page.click("#viewer-use")
    expect(page.locator("#viewer")).to_be_hidden()
    # Qwen-Image makes images but doesn't edit them: the page picks an edit model.
    expect(page.locator("#model")).to_have_value("Qwen/Qwen-Image-Edit")
    expect(page.locator("#status")).to_contain_text("switched to Qwen/Qwen-Image-Edit")
    expect(page.locator("#input-list .thumb")).to_have_count(1)

    generate(page, "the castle at night", model="Qwen/Qwen-Image-Edit")
    expect(page.locator(".entry").first.locator(".chip-edit")).to_have_text("edit")
    # The proxy read the hosted image from its own store and sent it on inline.
    assert data_uri_image(fake.requests[-1].body["image"]).size == (1664, 928)


def test_a_wrong_key_asks_for_the_key_and_the_right_one_works(
    open_page: OpenPage, start: StartProxy
) -> None:
    server = keyed(start)
    view = open_page(server)
    page = view.page
    expect(page.locator("#connection")).to_have_attribute("data-state", "error")
    expect(page.locator("#error-title")).to_have_text("This server needs a proxy key")
    expect(page.locator("#key")).to_be_focused()

    page.fill("#key", "not-the-key")
    expect(page.locator("#error-title")).to_have_text("That proxy key was not accepted")
    expect(page.locator("#error-message")).to_contain_text("Enter your proxy key")
    expect(page.locator("#key")).to_be_focused()
    expect(page.locator("#key")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#generate")).to_be_disabled()

    page.fill("#key", CLIENT_KEYS[0])
    expect(page.locator("#connection")).to_have_attribute("data-state", "ok")
    expect(page.locator("#error")).to_be_hidden()
    assert page.locator("#model option").all_text_contents() == listed_models(
        server, CLIENT_KEYS[0]
    )
    generate(page, "a key that works")
    assert view.wait_for_images(".entry:first-child .shot img")

    # Kept for the next visit, and never put in an address.
    page.reload()
    expect(page.locator("#key")).to_have_value(CLIENT_KEYS[0])
    expect(page.locator("#connection")).to_have_attribute("data-state", "ok")
    assert not [url for url in view.requests if CLIENT_KEYS[0] in url or "not-the-key" in url]


def test_cancel_stops_waiting_for_a_slow_generation(
    open_page: OpenPage, proxy: ProxyProcess, fake: FakeSiliconFlow
) -> None:
    fake.configure(latency=3.0)
    page = open_page(proxy).page
    page.select_option("#model", "Qwen/Qwen-Image")
    page.fill("#prompt", "a slow sunrise")
    page.click("#generate")
    expect(page.locator("#progress-text")).to_have_text("Generating 1 image with Qwen/Qwen-Image")
    expect(page.locator("#elapsed")).to_have_text(re.compile(r"^[1-9]\d* s$"))  # it counts
    expect(page.locator(".entry.pending")).to_have_count(1)
    expect(page.locator("#generate")).to_be_disabled()

    page.click("#cancel")
    expect(page.locator("#status")).to_have_text(re.compile(r"^Cancelled after \d+ s\.$"))
    expect(page.locator("#progress")).to_be_hidden()
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator(".entry")).to_have_count(0)
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#generate")).to_be_enabled()


def test_rate_limit_says_when_to_try_again(
    open_page: OpenPage, proxy: ProxyProcess, fake: FakeSiliconFlow
) -> None:
    fake.add_fault("status", status=429, retry_after=7, message="Rate limit reached")
    page = open_page(proxy).page
    page.select_option("#model", "Qwen/Qwen-Image")
    page.fill("#prompt", "too many foxes")
    page.click("#generate")
    expect(page.locator("#error-title")).to_have_text("Too many requests")
    expect(page.locator("#error-message")).to_contain_text("Try again in 7 s")
    expect(page.locator(".entry")).to_have_count(0)


def test_a_phone_sized_screen_has_no_sideways_scrolling(
    open_page: OpenPage, proxy: ProxyProcess
) -> None:
    view = open_page(proxy, viewport=PHONE)
    page = view.page

    def overflow() -> int:
        return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))

    assert overflow() == 0
    generate(page, "a very long prompt " * 12, n="3", seed="1")
    view.wait_for_images(".entry:first-child .shot img")
    assert overflow() == 0
    page.select_option("#model", "Qwen/Qwen-Image-Edit-2509")
    page.locator(".entry").first.locator("[data-part=use]").first.click()
    expect(page.locator("#input-list .thumb")).to_have_count(1)
    assert overflow() == 0
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "playground-phone.png", full_page=True)
    assert view.console_errors == []


def test_a_partial_failure_shows_the_images_that_came_back(
    open_page: OpenPage, proxy: ProxyProcess, fake: FakeSiliconFlow
) -> None:
    fake.add_fault("status", status=500, message="GPU fell over")
    page = open_page(proxy).page
    generate(page, "two lanterns", n="2")
    expect(page.locator(".entry").first.locator(".shot")).to_have_count(1)
    expect(page.locator("#error")).to_have_attribute("data-tone", "warning")
    expect(page.locator("#error-title")).to_have_text("Some images failed")
    expect(page.locator("#error-message")).to_contain_text("1 of 2 upstream calls failed")
