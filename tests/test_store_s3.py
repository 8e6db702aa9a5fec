"""The S3 image store, against a real S3-compatible server (moto's, in its own process)."""

from __future__ import annotations

import logging
import os
import secrets
import time

import httpx
import pytest

from sfproxy.errors import ImageStoreError
from sfproxy.settings import load_settings
from sfproxy.store import is_valid_name
from sfproxy.store.s3 import CACHE_CONTROL, S3ImageStore, parse_location

from .support.s3 import S3Server, running_s3_server, started

# Until tests/conftest.py offers these fixtures to every module.

PNG = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(64)
JPEG = b"\xff\xd8\xff\xe0" + secrets.token_bytes(64)


def some_name(extension: str = "png") -> str:
    return f"{secrets.token_hex(16)}.{extension}"


def wait_for_next_second() -> float:
    # S3 reports LastModified in whole seconds: objects written on either side of a second
    # boundary are told apart without sleeping for longer than that.
    boundary = float(int(time.time()) + 1)
    time.sleep(max(0.0, boundary - time.time()))
    return boundary


async def test_put_then_get_returns_the_same_bytes_and_media_type(s3_bucket):
    async with started(s3_bucket.store()) as store:
        png_name = await store.put(PNG, "image/png")
        jpeg_name = await store.put(JPEG, "image/jpeg")

        assert is_valid_name(png_name) and png_name.endswith(".png")
        assert jpeg_name.endswith(".jpg")
        png = await store.get(png_name)
        jpeg = await store.get(jpeg_name)

    assert png is not None and png.data == PNG and png.media_type == "image/png"
    assert jpeg is not None and jpeg.data == JPEG and jpeg.media_type == "image/jpeg"
    assert sorted(s3_bucket.keys()) == sorted([png_name, jpeg_name])


async def test_public_url_points_into_the_bucket_and_serves_the_object(s3_bucket):
    base = s3_bucket.allow_public_reads()
    async with started(s3_bucket.store("gallery", public_base_url=base + "/")) as store:
        name = await store.put(PNG, "image/png")
        url = store.public_url(name)

    assert url == f"{base}/gallery/{name}"
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == CACHE_CONTROL


def test_public_url_without_a_public_base_is_none():
    store = S3ImageStore("bucket", "a/b")
    assert store.public_url(some_name()) is None
    cdn = S3ImageStore("bucket", "a/b", public_base_url="https://cdn.example.com")
    assert cdn.public_url("../../etc/passwd") is None
    name = some_name()
    assert cdn.public_url(name) == f"https://cdn.example.com/a/b/{name}"
    assert S3ImageStore("bucket", public_base_url="https://cdn.example.com").public_url(name) == (
        f"https://cdn.example.com/{name}"
    )


@pytest.mark.parametrize(
    "name",
    [
        "0123456789abcdef0123456789abcdef.png",  # well formed, never stored
        "../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "0123456789ABCDEF0123456789ABCDEF.png",
        "0123456789abcdef0123456789abcdef.exe",
        "a/0123456789abcdef0123456789abcdef.png",
        "",
    ],
)
async def test_get_of_an_unknown_or_invalid_name_is_none(s3_server, name):
    async with started(s3_server.store()) as store:
        assert await store.get(name) is None


async def test_objects_land_under_the_prefix(s3_bucket):
    async with started(s3_bucket.store("/images/v1/")) as prefixed:
        name = await prefixed.put(PNG, "image/png")
        assert s3_bucket.keys() == [f"images/v1/{name}"]
        assert (await prefixed.get(name)) is not None
    async with started(s3_bucket.store()) as unprefixed:
        # The same name at the bucket's root is another image.
        assert await unprefixed.get(name) is None
        root_name = await unprefixed.put(PNG, "image/png")
    assert sorted(s3_bucket.keys()) == sorted([f"images/v1/{name}", root_name])


async def test_delete_older_than_removes_only_older_images_under_the_prefix(s3_bucket):
    # Neighbours sharing the bucket: never the store's to delete, whatever their age.
    neighbours = [
        "images/notes.txt",
        f"images/nested/{some_name()}",
        f"other/{some_name()}",
        some_name(),
    ]
    for key in neighbours:
        s3_bucket.put_object(key, PNG)
    # A small page size makes the listing take several pages.
    async with started(s3_bucket.store("images", page_size=2)) as store:
        old = [await store.put(PNG, "image/png") for _ in range(3)]
        cutoff = wait_for_next_second()
        new = [await store.put(JPEG, "image/jpeg") for _ in range(2)]

        assert await store.delete_older_than(time.time() - 3600) == 0
        assert await store.delete_older_than(cutoff) == len(old)
        for name in old:
            assert await store.get(name) is None
        for name in new:
            assert await store.get(name) is not None

        assert await store.delete_older_than(time.time() + 3600) == len(new)

    assert sorted(s3_bucket.keys()) == sorted(neighbours)


async def test_check_passes_and_leaves_nothing_behind(s3_bucket):
    async with started(s3_bucket.store("images")) as store:
        await store.check()
        await store.check()
    assert s3_bucket.keys() == []


def store_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        record.getMessage() for record in caplog.records if record.name == "sfproxy.store.s3"
    )


async def test_a_missing_bucket_is_named_in_the_log_not_to_clients(s3_server, caplog):
    caplog.set_level(logging.WARNING, logger="sfproxy.store.s3")
    missing = S3Server(
        endpoint_url=s3_server.endpoint_url,
        bucket=f"missing-{secrets.token_hex(4)}",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    async with started(missing.store("images")) as store:
        with pytest.raises(ImageStoreError) as put_failure:
            await store.put(PNG, "image/png")
        with pytest.raises(ImageStoreError) as check_failure:
            await store.check()
        with pytest.raises(ImageStoreError) as get_failure:
            # A missing bucket is a broken store, not a missing image.
            await store.get(some_name())

    assert put_failure.value.message == (
        "The image store could not store the image. The request was not completed so that no "
        "broken link is handed out."
    )
    assert check_failure.value.message == "The image store could not be written."
    assert get_failure.value.message == "The image store could not read the image."
    for failure in (put_failure, check_failure, get_failure):
        assert failure.value.status_code == 503
    assert put_failure.value.retry_after == 30
    logged = store_log(caplog)
    assert logged.count(f"image store s3://{missing.bucket}/images at {missing.endpoint_url}") == 3
    assert logged.count("NoSuchBucket") == 3
    assert missing.secret_key not in logged


async def test_a_stopped_server_is_named_in_the_log_not_to_clients(caplog):
    caplog.set_level(logging.WARNING, logger="sfproxy.store.s3")
    with running_s3_server() as server:
        store = server.store(max_attempts=1, connect_timeout=2, read_timeout=2)
        await store.start()
        try:
            name = await store.put(PNG, "image/png")
            server.stop()
            with pytest.raises(ImageStoreError) as put_failure:
                await store.put(PNG, "image/png")
            with pytest.raises(ImageStoreError) as check_failure:
                await store.check()
            with pytest.raises(ImageStoreError):
                await store.get(name)
            with pytest.raises(ImageStoreError):
                await store.delete_older_than(time.time())
        finally:
            await store.close()

    for failure in (put_failure, check_failure):
        message = failure.value.message
        assert message.startswith("The image store could not ")
        for detail in (server.bucket, server.endpoint_url.removeprefix("http://"), "connect"):
            assert detail not in message
    assert put_failure.value.retry_after == 30
    logged = store_log(caplog)
    # put, check, get and the retention sweep: each names the store and why it failed.
    assert logged.count(f"image store s3://{server.bucket} at {server.endpoint_url}") == 4
    assert logged.count("Could not connect to the endpoint URL") == 4
    assert server.secret_key not in logged


async def test_an_unusable_endpoint_fails_at_start():
    store = S3ImageStore("bucket", endpoint_url="not a url")
    with pytest.raises(ImageStoreError, match="s3://bucket"):
        await store.start()
    await store.close()


@pytest.mark.parametrize(
    ("location", "bucket", "prefix"),
    [
        ("s3://bucket", "bucket", ""),
        ("s3://bucket/", "bucket", ""),
        ("s3://bucket/a/b/", "bucket", "a/b"),
        ("s3://bucket//a//b", "bucket", "a/b"),
    ],
)
def test_parse_location(location, bucket, prefix):
    assert parse_location(location) == (bucket, prefix)


@pytest.mark.parametrize("location", ["local", "s3://", "gs://bucket/a"])
def test_parse_location_rejects_other_locations(location):
    with pytest.raises(ValueError):
        parse_location(location)


@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith(("IMAGE_", "AWS_", "S3_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_environment")
def test_from_settings_without_a_prefix_or_endpoint(monkeypatch):
    monkeypatch.setenv("IMAGE_STORE", "s3://bucket")
    store = S3ImageStore.from_settings(load_settings())
    assert (store.bucket, store.prefix) == ("bucket", "")
    assert store.endpoint_url is None
    assert store.region == "us-east-1"
    assert store.location == "s3://bucket"


@pytest.mark.usefixtures("clean_environment")
async def test_from_settings_builds_a_working_store(monkeypatch, s3_bucket):
    for variable, value in s3_bucket.env("a/b/").items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("IMAGE_PUBLIC_BASE_URL", "https://cdn.example.com/")
    store = S3ImageStore.from_settings(load_settings())
    assert (store.bucket, store.prefix) == (s3_bucket.bucket, "a/b")
    assert store.endpoint_url == s3_bucket.endpoint_url
    async with started(store):
        name = await store.put(PNG, "image/png")
    assert s3_bucket.keys() == [f"a/b/{name}"]
    assert store.public_url(name) == f"https://cdn.example.com/a/b/{name}"


@pytest.mark.usefixtures("clean_environment")
def test_from_settings_reads_the_aws_alias_variables(monkeypatch):
    monkeypatch.setenv("IMAGE_STORE", "s3://bucket/p")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    store = S3ImageStore.from_settings(load_settings())
    assert store.endpoint_url == "http://127.0.0.1:9000"
    assert store.region == "eu-central-1"


async def test_an_mp4_is_kept_served_with_its_type_and_deleted_alone(s3_bucket):
    mp4 = b"\x00\x00\x00\x18ftypmp42" + secrets.token_bytes(64)
    async with started(s3_bucket.store()) as store:
        name = await store.put(mp4, "video/mp4")
        other = await store.put(PNG, "image/png")
        kept = await store.get(name)
        await store.delete(name)
        await store.delete(name)  # already gone: nothing happens
        assert await store.get(name) is None

    assert name.endswith(".mp4") and is_valid_name(name)
    assert kept is not None and kept.data == mp4 and kept.media_type == "video/mp4"
    assert sorted(s3_bucket.keys()) == [other]
