"""Images that last: the store backends behind the running service, and their failures."""

from __future__ import annotations

import base64
import os
import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import OPENAI_SIZES
from .support.s3 import running_s3_server

EXPECTED = {
    "Qwen/Qwen-Image": [
        "1328x1328",
        "1328x1328",
        "1328x1328",
        "1584x1056",
        "1056x1584",
        "1664x928",
        "928x1664",
    ],
    "Kwai-Kolors/Kolors": [
        "1024x1024",
        "1024x1024",
        "1024x1024",
        "1024x1024",
        "960x1280",
        "1024x1024",
        "720x1280",
    ],
}


def sdk_for(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.api_base, api_key="x", max_retries=0)


@pytest.mark.parametrize("model", list(EXPECTED))
def test_every_openai_size_is_fitted_to_the_model(client, fake, model):
    for size, expected in zip(OPENAI_SIZES, EXPECTED[model], strict=True):
        result = client.images.generate(model=model, prompt=f"size {size}", size=size)
        assert result.size == expected
        assert fake.requests[-1].body["image_size"] == expected


def test_aspect_ratio_and_auto(client, fake):
    assert (
        client.images.generate(model="Qwen/Qwen-Image", prompt="r", size="16:9").size == "1664x928"
    )
    ratio = client.images.generate(
        model="Qwen/Qwen-Image", prompt="r", extra_body={"sf_aspect_ratio": "3:4"}
    )
    assert ratio.size == "1140x1472"
    assert (
        client.images.generate(model="Kwai-Kolors/Kolors", prompt="a", size="auto").size
        == "1024x1024"
    )


def test_unknown_models_are_passed_through_untouched(start, fake):
    fake.configure(extra_models={"acme/new-model": "Qwen/Qwen-Image"})
    try:
        proxy = start(MODELS="acme/new-model")
        with sdk_for(proxy) as sdk:
            result = sdk.images.generate(
                prompt="new", size="1000x600", extra_body={"sf_guidance_scale": 3, "sf_cfg": 2}
            )
        sent = fake.requests[-1].body
        assert sent["model"] == "acme/new-model"
        assert sent["image_size"] == "1000x600"
        assert sent["guidance_scale"] == 3 and sent["cfg"] == 2
        assert result.size == "1000x600"
    finally:
        fake.configure(extra_models={})


def test_b64_json_uses_the_stored_bytes_without_a_second_download(client, proxy, fake):
    result = client.images.generate(prompt="once", n=2, response_format="b64_json")
    assert len(fake.downloads) == 2
    stored = sorted(Path(proxy.env["IMAGE_DIR"]).rglob("*.png"), key=lambda p: p.stat().st_mtime)
    payloads = {base64.b64decode(item.b64_json) for item in result.data}
    assert payloads <= {path.read_bytes() for path in stored}


def test_local_store_writes_no_temporary_files(client, proxy):
    client.images.generate(prompt="atomic", n=3)
    files = list(Path(proxy.env["IMAGE_DIR"]).rglob("*"))
    assert not [path for path in files if path.name.endswith(".tmp")]


def test_store_off_passes_upstream_urls_through(start, fake):
    proxy = start(IMAGE_STORE="off")
    with sdk_for(proxy) as sdk:
        url = sdk.images.generate(prompt="passthrough").data[0].url
        assert url.startswith(fake.origin + "/files/")
        assert fake.downloads == []
        b64 = sdk.images.generate(prompt="still b64", response_format="b64_json").data[0].b64_json
    assert base64.b64decode(b64).startswith(b"\x89PNG")


def test_s3_store_keeps_images_after_the_upstream_expires_them(start, fake, s3_bucket):
    proxy = start(**s3_bucket.env("gallery"))
    with sdk_for(proxy) as sdk:
        result = sdk.images.generate(prompt="kept in s3", n=2)
        b64 = sdk.images.generate(prompt="b64 from s3", response_format="b64_json")
    urls = [item.url for item in result.data]
    assert all(url.startswith(proxy.api_base + "/files/images/") for url in urls)
    before = [httpx.get(url).content for url in urls]
    fake.expire_images()
    assert [httpx.get(url).content for url in urls] == before
    keys = s3_bucket.keys("gallery/")
    assert len(keys) == 3
    assert {url.rsplit("/", 1)[1] for url in urls} <= {key.split("/", 1)[1] for key in keys}
    assert base64.b64decode(b64.data[0].b64_json).startswith(b"\x89PNG")


def test_s3_with_a_public_base_url_hands_out_bucket_links(start, s3_bucket):
    public = s3_bucket.allow_public_reads()
    proxy = start(**s3_bucket.env("cdn"), IMAGE_PUBLIC_BASE_URL=public)
    with sdk_for(proxy) as sdk:
        url = sdk.images.generate(prompt="from the bucket").data[0].url
    assert url.startswith(public + "/cdn/")
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content.startswith(b"\x89PNG")


def test_local_store_failure_is_503_and_hands_out_no_url(start, fake, tmp_path):
    image_dir = tmp_path / "images"
    proxy = start(IMAGE_DIR=str(image_dir))
    shutil.rmtree(image_dir, ignore_errors=True)
    image_dir.write_text("not a directory any more")
    response = httpx.post(
        proxy.api_base + "/images/generations", json={"prompt": "nowhere"}, timeout=30
    )
    assert response.status_code == 503
    error = response.json()["error"]
    assert "could not be stored" in error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert fake.origin not in response.text


def test_s3_failure_is_503_and_hands_out_no_url(start, fake):
    with running_s3_server() as server:
        proxy = start(**server.env("down"))
        server.stop()
        response = httpx.post(
            proxy.api_base + "/images/generations", json={"prompt": "bucket gone"}, timeout=60
        )
    assert response.status_code == 503, response.text
    # Only what failed: the bucket, the endpoint and botocore's reason are in the log.
    assert response.json()["error"]["message"] == (
        "The image store could not store the image. The request was not completed so that no "
        "broken link is handed out."
    )
    failures = [line for line in proxy.log().splitlines() if "could not store the image:" in line]
    assert len(failures) == 1, proxy.log()
    assert f"s3://{server.bucket}/down at {server.endpoint_url}" in failures[0]
    assert server.secret_key not in proxy.log()


def test_retention_removes_old_images(start, tmp_path):
    # About 1.7 s of retention; the sweep runs every second.
    proxy = start(IMAGE_RETENTION_DAYS="0.00002", IMAGE_DIR=str(tmp_path / "short"))
    with sdk_for(proxy) as sdk:
        url = sdk.images.generate(prompt="short-lived").data[0].url
    assert httpx.get(url).status_code == 200
    deadline = time.monotonic() + 10
    while httpx.get(url).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert httpx.get(url).status_code == 404


def test_without_retention_nothing_is_deleted(client, proxy, start, tmp_path):
    kept = client.images.generate(prompt="forever").data[0].url
    name = kept.rpartition("/")[2]
    path = Path(proxy.env["IMAGE_DIR"]) / name[:2] / name
    # Ten days old: any retention sweep would take it.
    old = time.time() - 10 * 86400
    os.utime(path, (old, old))
    # A proxy with a short retention shows when a sweep has had time to run (every second).
    sweeping = start(IMAGE_RETENTION_DAYS="0.00002", IMAGE_DIR=str(tmp_path / "sweeping"))
    with sdk_for(sweeping) as sdk:
        swept = sdk.images.generate(prompt="short-lived").data[0].url
    deadline = time.monotonic() + 10
    while httpx.get(swept).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert httpx.get(swept).status_code == 404
    assert httpx.get(kept).status_code == 200
    assert path.is_file()
