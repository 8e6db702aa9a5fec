"""The local image store: files under IMAGE_DIR, written atomically."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

from sfproxy.errors import ImageStoreError
from sfproxy.store import is_valid_name
from sfproxy.store.local import INLINE_WRITE_BYTES, LocalImageStore

PNG = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(64)
JPEG = b"\xff\xd8\xff\xe0" + secrets.token_bytes(64)


def files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


@pytest.fixture
async def store(tmp_path):
    local = LocalImageStore(tmp_path / "images")
    await local.start()
    yield local
    await local.close()


async def test_start_creates_the_directory(tmp_path):
    store = LocalImageStore(tmp_path / "a" / "b")
    await store.start()
    assert (tmp_path / "a" / "b").is_dir()
    await store.close()


async def test_put_then_get_returns_the_same_bytes_and_media_type(store):
    png_name = await store.put(PNG, "image/png")
    jpeg_name = await store.put(JPEG, "image/jpeg")

    assert is_valid_name(png_name) and png_name.endswith(".png")
    assert jpeg_name.endswith(".jpg")
    png = await store.get(png_name)
    jpeg = await store.get(jpeg_name)
    assert png is not None and png.data == PNG and png.media_type == "image/png"
    assert jpeg is not None and jpeg.data == JPEG and jpeg.media_type == "image/jpeg"
    assert png.etag == f'"{png_name.partition(".")[0]}"'


async def test_large_images_are_written_the_same_way(store):
    # Over the inline size the write happens in a thread: same result, same atomicity.
    large = PNG + secrets.token_bytes(INLINE_WRITE_BYTES)
    name = await store.put(large, "image/png")
    stored = await store.get(name)
    assert stored is not None and stored.data == large
    assert files_under(store.directory) == [store.directory / name[:2] / name]


async def test_a_write_leaves_only_the_image_behind(store):
    name = await store.put(PNG, "image/png")
    assert files_under(store.directory) == [store.directory / name[:2] / name]


async def test_a_failed_write_leaves_nothing_behind(store, monkeypatch):
    def failing_replace(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(ImageStoreError) as failure:
        await store.put(PNG, "image/png")

    assert "No space left on device" in failure.value.message
    assert failure.value.retry_after == 30
    assert failure.value.status_code == 503
    assert files_under(store.directory) == []


@pytest.mark.parametrize(
    "name",
    [
        "0123456789abcdef0123456789abcdef.png",  # well formed, never stored
        "../etc/passwd",
        "../../../../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "0123456789ABCDEF0123456789ABCDEF.png",
        "0123456789abcdef0123456789abcdef.exe",
        "0123456789abcdef0123456789abcdef.jpeg",
        "0123456789abcdef0123456789abcdef",
        "0123456789abcdef0123456789abcde.png",
        "01/0123456789abcdef0123456789abcdef.png",
        "0123456789abcdef0123456789abcdef.png\x00",
        "",
    ],
)
async def test_get_of_an_unknown_or_invalid_name_is_none(store, name):
    assert await store.get(name) is None


async def test_an_invalid_name_never_reaches_a_file_even_if_one_exists(store):
    name = await store.put(PNG, "image/png")
    shard = name[:2]
    assert await store.get(name.upper()) is None
    assert await store.get(f"{shard}/{name}") is None
    assert await store.get(f"../{store.directory.name}/{shard}/{name}") is None


async def test_delete_older_than_removes_only_older_images(store):
    old = [await store.put(PNG, "image/png") for _ in range(2)]
    new = await store.put(JPEG, "image/jpeg")
    long_ago = time.time() - 7 * 24 * 3600
    for name in old:
        os.utime(store.directory / name[:2] / name, (long_ago, long_ago))

    assert await store.delete_older_than(long_ago - 60) == 0
    assert await store.delete_older_than(time.time() - 3600) == len(old)
    for name in old:
        assert await store.get(name) is None
    assert await store.get(new) is not None
    assert files_under(store.directory) == [store.directory / new[:2] / new]


async def test_check_passes_and_leaves_nothing_behind(store):
    await store.check()
    assert files_under(store.directory) == []


async def test_an_unwritable_directory_fails_check_and_put(tmp_path, caplog):
    # The tests may run as root, whom file modes do not stop; nothing can be created under a
    # regular file, whoever asks.
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    store = LocalImageStore(blocker / "images")

    with pytest.raises(ImageStoreError) as check_failure:
        await store.check()
    # /readyz shows this message to anyone: the path is only in the log.
    assert check_failure.value.message == "IMAGE_DIR is not writable (Not a directory)."
    assert f"IMAGE_DIR {blocker / 'images'} is not writable" in caplog.text
    assert check_failure.value.status_code == 503

    with pytest.raises(ImageStoreError) as put_failure:
        await store.put(PNG, "image/png")
    assert put_failure.value.retry_after == 30


def test_public_url_is_none(tmp_path):
    # Local images are served by the proxy itself, at /v1/files/images/{name}.
    store = LocalImageStore(tmp_path)
    assert store.public_url("0123456789abcdef0123456789abcdef.png") is None


async def test_an_mp4_is_kept_with_its_type_and_deleted_alone(store):
    mp4 = b"\x00\x00\x00\x18ftypmp42" + bytes(range(64))
    name = await store.put(mp4, "video/mp4")
    other = await store.put(PNG, "image/png")
    kept = await store.get(name)
    await store.delete(name)
    await store.delete(name)  # already gone: nothing happens

    assert name.endswith(".mp4") and is_valid_name(name)
    assert kept is not None and kept.data == mp4 and kept.media_type == "video/mp4"
    assert await store.get(name) is None
    assert await store.get(other) is not None
