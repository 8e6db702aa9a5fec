"""OpenAI's Videos API, driven with openai-python against the running service and the fake.

The SDK is the oracle: `create_and_poll`, `retrieve`, `list` (with its cursor pages), `delete`
and `download_content` must work on their defaults, and every object must parse as the SDK's own
`Video` type, strictly.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import openai
import pytest
from openai.types import Video
from PIL import Image

from .conftest import CLIENT_KEYS, StartProxy, keyed
from .images import data_uri, image_bytes
from .test_ai_sdk import NODE_DIR

T2V = "Wan-AI/Wan2.2-T2V-A14B"
I2V = "Wan-AI/Wan2.2-I2V-A14B"
ADMIN_KEY = "admin-key-for-videos-0123456789"
# Polled quickly, so that a job the fake finishes in 0.3 s is seen finished soon after.
FAST = {"VIDEO_POLL_SECONDS": "0.05", "VIDEO_POLL_MAX_SECONDS": "0.2", "ADMIN_KEYS": ADMIN_KEY}

# The Sora API's shutdown is announced on every method; these tests call them on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def service(start: StartProxy):
    return keyed(start, **FAST)


def sdk(service, key: str = CLIENT_KEYS[0]) -> openai.OpenAI:
    return openai.OpenAI(base_url=service.api_base, api_key=key, max_retries=0)


@pytest.fixture
def client(service) -> Iterator[openai.OpenAI]:
    with sdk(service) as client:
        yield client


def strict(video: Video) -> Video:
    """The object as the SDK's type reads it, with nothing left over or missing."""
    return Video.model_validate(video.model_dump(), strict=True)


def mp4_facts(data: bytes) -> tuple[str, str, int, int]:
    with av.open(io.BytesIO(data)) as container:
        (stream,) = container.streams.video
        return container.format.name, stream.codec_context.name, stream.width, stream.height


def test_text_to_video_with_create_and_poll_and_download(client, fake):
    video = client.videos.create_and_poll(prompt="a paper boat on a pond", model=T2V)
    strict(video)
    assert (video.object, video.status, video.progress) == ("video", "completed", 100)
    assert (video.model, video.size, video.seconds) == (T2V, "1280x720", "5")
    assert video.prompt == "a paper boat on a pond"
    assert video.error is None and video.expires_at is None
    assert video.completed_at is not None and video.completed_at >= video.created_at
    (job,) = fake.videos.jobs()
    assert (job.model, job.image_size, job.has_image) == (T2V, "1280x720", False)
    assert job.downloads == 1

    content = client.videos.download_content(video.id)
    assert content.response.headers["content-type"] == "video/mp4"
    # The fake makes its clips at an eighth of the size asked for.
    assert mp4_facts(content.content)[1:] == ("h264", 160, 90)
    poster = client.videos.download_content(video.id, variant="thumbnail")
    picture = Image.open(io.BytesIO(poster.content))
    assert picture.size == (160, 90)
    assert poster.response.headers["content-type"] == Image.MIME[picture.format]


@pytest.mark.parametrize(
    ("size", "fitted"),
    [
        (None, "1280x720"),
        ("720x1280", "720x1280"),
        ("1792x1024", "1280x720"),
        ("1024x1792", "720x1280"),
    ],
)
def test_openai_sizes_are_fitted_and_the_default_model_is_wan(client, fake, size, fitted):
    options = {"size": size} if size else {}
    video = client.videos.create(prompt="a lantern", **options)
    assert (video.model, video.size, video.status) == (T2V, fitted, "queued")
    assert fake.videos.jobs()[-1].image_size == fitted


def test_image_to_video_from_an_uploaded_file(client, fake):
    red = image_bytes("PNG", (64, 36), "red")
    video = client.videos.create_and_poll(
        prompt="the red square drifts", input_reference=("red.png", red, "image/png")
    )
    assert (video.status, video.model) == ("completed", I2V)
    assert fake.videos.jobs()[-1].has_image is True
    poster = Image.open(
        io.BytesIO(client.videos.download_content(video.id, variant="thumbnail").content)
    ).convert("RGB")
    # The fake's frames show the input image: the poster is the first frame, mostly red.
    red_, green, blue = poster.resize((1, 1)).getpixel((0, 0))
    assert red_ > 150 and green < 90 and blue < 90


def test_image_to_video_from_an_image_url_as_form_fields_and_as_json(service, fake):
    # openai-python uploads only files; other clients send the reference object as form fields
    # (`input_reference[image_url]`, as the SDKs' form encoding writes a nested object) or JSON.
    uri = data_uri(image_bytes("PNG", (64, 36), "blue"))
    auth = {"authorization": f"Bearer {CLIENT_KEYS[0]}"}
    form = httpx.post(
        service.api_base + "/videos",
        files={"prompt": (None, "blue"), "input_reference[image_url]": (None, uri)},
        headers=auth,
    )
    assert form.status_code == 200, form.text
    assert (form.json()["model"], form.json()["status"]) == (I2V, "queued")
    assert fake.videos.jobs()[-1].has_image is True
    for reference in (uri, {"image_url": uri}):
        answer = httpx.post(
            service.api_base + "/videos",
            json={"prompt": "blue again", "input_reference": reference, "seconds": 5},
            headers=auth,
        )
        assert answer.status_code == 200, answer.text
        assert (answer.json()["model"], answer.json()["seconds"]) == (I2V, "5")
    assert [job.has_image for job in fake.videos.jobs()] == [True, True, True]


def test_a_file_id_reference_is_refused_with_what_to_send_instead(service, fake):
    answer = httpx.post(
        service.api_base + "/videos",
        json={"prompt": "a kite", "input_reference": {"file_id": "file_123"}},
        headers={"authorization": f"Bearer {CLIENT_KEYS[0]}"},
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == ("input_reference.file_id", "unsupported_parameter")
    assert fake.videos.jobs() == []


@pytest.mark.parametrize(
    ("options", "param", "code"),
    [
        ({"seconds": "8"}, "seconds", "invalid_seconds"),
        ({"model": "no-such-video-model"}, "model", "model_not_found"),
        ({"size": "huge"}, "size", None),
    ],
)
def test_bad_requests_get_400_before_anything_is_submitted(client, fake, options, param, code):
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.create(prompt="a kite", **options)
    error = caught.value.body
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert fake.videos.jobs() == []


def test_remix_and_other_variants_are_refused_clearly(client):
    video = client.videos.create_and_poll(prompt="a tree")
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.remix(video.id, prompt="a taller tree")
    assert caught.value.body["code"] == "remix_not_supported"
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.extend(video=("a.mp4", b"x", "video/mp4"), prompt="longer", seconds="4")
    assert caught.value.body["code"] == "extension_not_supported"
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.edit(video=("a.mp4", b"x", "video/mp4"), prompt="bluer")
    assert caught.value.body["code"] == "edit_not_supported"
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.download_content(video.id, variant="spritesheet")
    assert caught.value.body["param"] == "variant"


def test_polling_hints_and_reads_are_not_held_to_the_rpm_limit(start, fake):
    service = keyed(start, CLIENT_RPM="3", **FAST)
    with sdk(service) as client:
        fake.videos.hold()
        try:
            video = client.videos.create(prompt="held")
            for _ in range(5):
                raw = client.videos.with_raw_response.retrieve(video.id)
                assert raw.parse().status in ("queued", "in_progress")
                # The time to the service's own next poll: between VIDEO_POLL_SECONDS and
                # VIDEO_POLL_MAX_SECONDS.
                assert 50 <= int(raw.headers["openai-poll-after-ms"]) <= 200
        finally:
            fake.videos.release()
        finished = client.videos.poll(video.id)
        assert finished.status == "completed"
        raw = client.videos.with_raw_response.retrieve(video.id)
        assert "openai-poll-after-ms" not in raw.headers


def test_list_pages_with_the_sdk_cursor_and_keys_see_only_their_own(start, fake):
    # A service of its own, so that no other test's videos are listed.
    service = keyed(start, TEST_SERVICE="video-list", **FAST)
    client = sdk(service)
    made = [client.videos.create(prompt=f"clip {i}").id for i in range(5)]
    with sdk(service, CLIENT_KEYS[1]) as other:
        theirs = other.videos.create(prompt="someone else's").id
        assert [v.id for v in other.videos.list()] == [theirs]
        for call in (other.videos.retrieve, other.videos.download_content):
            with pytest.raises(openai.NotFoundError):
                call(made[0])
    page = client.videos.list(limit=2)
    assert [v.id for v in page.data] == made[::-1][:2] and page.has_more is True
    # Auto-pagination follows last_id through every page.
    assert [v.id for v in client.videos.list(limit=2)] == made[::-1]
    assert [v.id for v in client.videos.list(limit=10, order="asc")] == made
    with sdk(service, ADMIN_KEY) as admin:
        assert admin.videos.retrieve(theirs).id == theirs
        assert {v.id for v in admin.videos.list(limit=100)} == {*made, theirs}


def test_delete_removes_a_finished_video_and_refuses_an_unfinished_one(client, fake):
    fake.videos.hold()
    try:
        pending = client.videos.create(prompt="not yet")
        with pytest.raises(openai.ConflictError):
            client.videos.delete(pending.id)
    finally:
        fake.videos.release()
    done = client.videos.poll(pending.id)
    deleted = client.videos.delete(done.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (done.id, "video.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(done.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(done.id)


def test_a_failed_job_is_reported_as_the_sdk_types_it(client, fake):
    fake.videos.fail_next(reason="content moderation")
    video = client.videos.create_and_poll(prompt="something refused")
    strict(video)
    assert video.status == "failed"
    assert video.error is not None and "content moderation" in video.error.message
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(video.id)


def node_video(service, request: dict, image: Path | None = None) -> dict:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed: make install / .ci/run install it"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), "run `make install` (npm ci)"
    args = [node, str(NODE_DIR / "videos.mjs"), service.api_base, CLIENT_KEYS[0]]
    args += [json.dumps(request)] + ([str(image)] if image else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    result: dict = json.loads(done.stdout)
    return result


def test_openai_node_makes_and_downloads_a_video(service, fake, tmp_path):
    seen = node_video(service, {"prompt": "from node", "size": "720x1280"})
    assert (seen["video"]["status"], seen["video"]["size"]) == ("completed", "720x1280")
    polls = seen["polls"]
    assert polls["hinted"] == polls["unfinished"] and polls["final_hint"] is None
    assert seen["mp4_box"] == "ftyp" and seen["mp4_bytes"] > 1000
    assert seen["thumbnail_type"].startswith("image/")
    image = tmp_path / "red.png"
    image.write_bytes(image_bytes("PNG", (64, 36), "red"))
    seen = node_video(service, {"prompt": "from node, from an image"}, image)
    assert (seen["video"]["status"], seen["video"]["model"]) == ("completed", I2V)
    assert fake.videos.jobs()[-1].has_image is True


def test_a_submit_answered_without_a_request_id_is_not_retried_by_the_sdk(service, fake):
    # SiliconFlow answered: it may have started (and will bill) a video nobody can name. The
    # SDK, which retries a 502 by default, is told not to; it would pay for a second one.
    fake.add_fault("malformed", target="video_submit")
    with openai.OpenAI(
        base_url=service.api_base, api_key=CLIENT_KEYS[0], max_retries=2
    ) as retrying:
        with pytest.raises(openai.InternalServerError) as failed:
            retrying.videos.create(prompt="a paper boat on a pond", model=T2V)
    assert failed.value.status_code == 502
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert len([r for r in fake.requests if r.path.endswith("/video/submit")]) == 1
