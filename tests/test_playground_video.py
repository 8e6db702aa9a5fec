"""The playground's video mode in headless Chromium, against the service and the fake SiliconFlow:
submit, watch the job's progress, play the result in the page, download it."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest
from PIL import Image, ImageStat
from playwright.sync_api import Browser, Page, expect

from sfproxy.fake_upstream import FakeSiliconFlow

from .conftest import CLIENT_KEYS, StartProxy, keyed
from .support.browser import WatchedPage, system_chromium
from .support.proxy import ProxyProcess

pytestmark = pytest.mark.browser

T2V = "Wan-AI/Wan2.2-T2V-A14B"
I2V = "Wan-AI/Wan2.2-I2V-A14B"
KEY = CLIENT_KEYS[0]
KEY_STORAGE = "sfproxy.playground.key"
# The service polls the fake often, so the page sees each state the fake goes through.
FAST_POLLS = {"VIDEO_POLL_SECONDS": "0.1", "VIDEO_POLL_MAX_SECONDS": "0.2"}
# Every text the progress line showed, in order, recorded by the page itself.
RECORD_PROGRESS = """() => {
    window.progressSeen = [];
    const line = document.getElementById("video-progress-text");
    new MutationObserver(() => window.progressSeen.push(line.textContent)).observe(line, {
        childList: true, characterData: true, subtree: true,
    });
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with system_chromium() as chromium:
        yield chromium


@pytest.fixture
def server(start: StartProxy, fake: FakeSiliconFlow) -> Iterator[ProxyProcess]:
    """The service, and a fake whose jobs queue, then run, long enough to be watched."""
    fake.videos.reset()
    fake.configure(video_queue_seconds=0.5, video_progress_seconds=0.8)
    try:
        # With client keys, so the page must send its key for the MP4 and the poster as well.
        yield keyed(start, **FAST_POLLS)
    finally:
        fake.configure(video_queue_seconds=0.0, video_progress_seconds=0.3)
        fake.videos.reset()


@pytest.fixture
def view(browser: Browser, server: ProxyProcess) -> Iterator[WatchedPage]:
    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(20_000)
    # The key is in place before the page loads, as a returning user's would be: a 401 in the
    # console then means the page left the key out of a request.
    context.add_init_script(f"localStorage.setItem({KEY_STORAGE!r}, {KEY!r})")
    watched = WatchedPage(context.new_page(), origin=server.url)
    watched.watch()
    watched.page.goto(server.url + "/")
    expect(watched.page.locator("#connection")).to_have_attribute("data-state", "ok")
    try:
        yield watched
    finally:
        context.close()


def png(color: tuple[int, int, int], size: tuple[int, int] = (320, 180)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def make_video(page: Page, prompt: str, model: str = T2V, size: str = "1280x720") -> None:
    page.click("#mode-video")
    expect(page.locator("#video-fields")).to_be_visible()
    expect(page.locator("#model")).to_be_hidden()
    page.select_option("#video-model", model)
    page.fill("#video-prompt", prompt)
    page.select_option("#video-size", size)
    page.evaluate(RECORD_PROGRESS)
    page.click("#video-generate")


def played(page: Page) -> tuple[float, int, int, str]:
    """Once the newest video can play: its duration, width, height and poster address."""
    page.wait_for_function(
        "() => { const v = document.querySelector('.video-card video'); "
        "return v !== null && v.readyState >= 2; }"
    )
    duration, width, height, poster = page.eval_on_selector(
        ".video-card video", "v => [v.duration, v.videoWidth, v.videoHeight, v.poster]"
    )
    return duration, width, height, poster


def downloaded(page: Page, folder: Path) -> tuple[str, bytes]:
    with page.expect_download() as started:
        page.locator(".video-card [data-part=download]").first.click()
    download = started.value
    target = folder / download.suggested_filename
    download.save_as(target)
    return download.suggested_filename, target.read_bytes()


def first_frame(content: bytes) -> tuple[str, int, int, Image.Image]:
    with av.open(io.BytesIO(content)) as container:
        [stream] = container.streams.video
        frame = next(container.decode(stream)).to_image()
        return stream.codec_context.name, stream.width, stream.height, frame


def test_text_to_video_shows_progress_then_plays_and_downloads_the_mp4(
    view: WatchedPage, fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    page = view.page
    make_video(page, "A paper boat drifting down a rainy street")
    expect(page.locator("#video-progress")).to_be_visible()
    expect(page.locator("#video-generate")).to_be_disabled()

    duration, width, height, poster = played(page)
    seconds, fps = fake.config.video_seconds, fake.config.video_fps
    assert abs(duration - seconds) <= 1 / fps
    assert (width, height) == (160, 90)
    assert poster.startswith(f"blob:{view.origin}/")
    seen: list[str] = page.evaluate("() => window.progressSeen")
    assert "Queued · 0%" in seen
    assert any(re.fullmatch(r"Making the video · \d+%", text) for text in seen), seen
    expect(page.locator("#video-progress")).to_be_hidden()
    expect(page.locator("#video-status")).to_contain_text("Made a 5 s video")
    card = page.locator(".video-card").first
    expect(card.locator("[data-part=prompt]")).to_have_text(
        "A paper boat drifting down a rainy street"
    )
    expect(card.locator("[data-part=meta]")).to_have_text(f"{T2V} · 1280×720 · 5 s")

    name, content = downloaded(page, tmp_path)
    assert re.fullmatch(r"video_[A-Za-z0-9_-]+\.mp4", name), name
    codec, width, height, _ = first_frame(content)
    assert (codec, width, height) == ("h264", 160, 90)

    [job] = fake.videos.jobs()
    assert (job.model, job.prompt, job.image_size, job.has_image) == (
        T2V,
        "A paper boat drifting down a rainy street",
        "1280x720",
        False,
    )
    # The page's only requests were to the service (blobs are made in the page).
    assert any(url.endswith("/v1/videos") for url in view.requests)
    assert any(url.endswith("/content?variant=thumbnail") for url in view.requests)
    assert view.foreign_requests() == []
    assert view.console_errors == []


def test_image_to_video_sends_the_chosen_image_as_input_reference(
    view: WatchedPage, fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    page = view.page
    page.click("#mode-video")
    page.select_option("#video-model", I2V)
    expect(page.locator("#video-image-field")).to_be_visible()
    # Without the image the page says so, and sends nothing.
    page.fill("#video-prompt", "The red square slowly turns blue")
    page.click("#video-generate")
    expect(page.locator("#video-error-title")).to_have_text("Add an input image")
    assert fake.videos.jobs() == []

    page.set_input_files(
        "#video-image",
        files=[{"name": "red.png", "mimeType": "image/png", "buffer": png((255, 0, 0))}],
    )
    expect(page.locator("#video-image-preview")).to_be_visible()
    make_video(page, "The red square slowly turns blue", model=I2V, size="1280x720")
    expect(page.locator("#video-error")).to_be_hidden()

    duration, width, _, _ = played(page)
    assert abs(duration - fake.config.video_seconds) <= 1 / fake.config.video_fps
    assert width == 160
    _, content = downloaded(page, tmp_path)
    # The fake draws the input image behind every frame: red in, red out.
    red, green, blue = ImageStat.Stat(first_frame(content)[3]).median
    assert red > 200 and green < 60 and blue < 60
    [job] = fake.videos.jobs()
    assert (job.model, job.has_image) == (I2V, True)
    assert view.foreign_requests() == []
    assert view.console_errors == []


def test_a_failed_job_shows_its_error(
    view: WatchedPage, fake: FakeSiliconFlow, server: ProxyProcess
) -> None:
    page = view.page
    fake.videos.fail_next(reason="The prompt was flagged by content moderation")
    make_video(page, "Something the moderation refuses")
    expect(page.locator("#video-error")).to_be_visible()
    expect(page.locator("#video-error-title")).to_have_text("The video failed")
    [video_id] = {
        match[1]
        for url in view.requests
        if (match := re.search(r"/v1/videos/(video_[^/?]+)$", url))
    }
    job = httpx.get(
        f"{server.api_base}/videos/{video_id}",
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    ).json()
    assert job["status"] == "failed"
    expect(page.locator("#video-error-message")).to_have_text(job["error"]["message"])
    assert "flagged by content moderation" in job["error"]["message"]
    expect(page.locator(".video-card")).to_have_count(0)
    expect(page.locator("#video-generate")).to_be_enabled()
    assert view.foreign_requests() == []


def test_stop_waiting_leaves_the_job_running_and_frees_the_form(
    view: WatchedPage, fake: FakeSiliconFlow
) -> None:
    page = view.page
    fake.videos.hold()
    make_video(page, "A job that takes its time")
    page.wait_for_function(
        "() => window.progressSeen.some(text => text.startsWith('Making the video'))"
    )
    page.click("#video-stop")
    expect(page.locator("#video-status")).to_have_text(
        "Stopped waiting; the video is still being made on the server."
    )
    expect(page.locator("#video-progress")).to_be_hidden()
    expect(page.locator("#video-generate")).to_be_enabled()
    [job] = fake.videos.jobs()
    assert job.status == "InProgress"
    assert view.console_errors == []
