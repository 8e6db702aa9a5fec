"""The image store: where generated images live so that their URLs keep working.

SiliconFlow's own image URLs expire after an hour. Every image is downloaded once, right after
generation, and kept here under a random, unguessable name; `/v1/files/images/{name}` serves it
(or, with `IMAGE_PUBLIC_BASE_URL`, a bucket or CDN does). Video jobs keep their MP4s (and
poster frames) here too, beside the images, under names of the same kind.

Backends, chosen by `IMAGE_STORE`: `local` (files under `IMAGE_DIR`), `s3://bucket/prefix`
(any S3-compatible store), and `off` (upstream URLs passed through, as the original did).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Protocol

from ..images import EXTENSIONS as IMAGE_EXTENSIONS
from ..images import MEDIA_TYPES as IMAGE_MEDIA_TYPES

MP4 = "video/mp4"
# Extension by media type of everything the store keeps: images, and the videos of jobs.
EXTENSIONS = IMAGE_EXTENSIONS | {MP4: "mp4"}
MEDIA_TYPES = IMAGE_MEDIA_TYPES | {"mp4": MP4}
# 128 random bits, hex-encoded, and a known extension: nothing else is ever a valid name, so
# no request can reach outside the store.
NAME_PATTERN = re.compile(r"^[0-9a-f]{32}\.(png|jpg|webp|gif|mp4)$")


@dataclass(frozen=True, slots=True)
class StoredImage:
    name: str
    media_type: str
    data: bytes

    @property
    def etag(self) -> str:
        # A name is never reused for other bytes, so it is a strong validator by itself.
        return f'"{self.name.partition(".")[0]}"'


class _RandomPool:
    """Bytes from the OS's CSPRNG, drawn a page at a time.

    One `os.urandom` call per name showed in profiles under load (a system call that gives up
    the GIL); slicing a larger draw is just as unguessable.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._buffer = b""
        self._offset = 0

    def take(self, count: int) -> bytes:
        if self._offset + count > len(self._buffer):
            self._buffer, self._offset = secrets.token_bytes(self._size), 0
        taken = self._buffer[self._offset : self._offset + count]
        self._offset += count
        return taken


_random = _RandomPool()


def new_name(media_type: str) -> str:
    """128 random bits, hex, and the extension; called on the event loop only."""
    return f"{_random.take(16).hex()}.{EXTENSIONS[media_type]}"


def is_valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def media_type_of(name: str) -> str:
    return MEDIA_TYPES[name.rpartition(".")[2]]


class ImageStore(Protocol):
    # False only for `off`: images are not kept, upstream URLs are handed out.
    keeps_images: bool

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, data: bytes, media_type: str) -> str:
        """Keep the bytes; return the new image's name. Raises ImageStoreError."""
        ...

    async def get(self, name: str) -> StoredImage | None:
        """The image, or None if there is none by that (valid) name."""
        ...

    async def delete_older_than(self, cutoff: float) -> int:
        """Remove images stored before the Unix time `cutoff`; return how many."""
        ...

    async def delete(self, name: str) -> None:
        """Remove one file (a deleted video's); nothing happens if it is not there."""
        ...

    async def check(self, *, min_free_bytes: int = 0) -> None:
        """Raise ImageStoreError unless the store can be written now (for /readyz).

        Where the free space is known (the local store's file system), less than
        `min_free_bytes` of it fails the check too.
        """
        ...

    def public_url(self, name: str) -> str | None:
        """A URL outside this service for the image (a bucket or CDN), or None."""
        ...


class NoImageStore:
    """`IMAGE_STORE=off`: nothing is kept; SiliconFlow's URLs (valid one hour) go to clients."""

    keeps_images = False

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def put(self, data: bytes, media_type: str) -> str:
        raise RuntimeError("IMAGE_STORE=off keeps no images")

    async def get(self, name: str) -> StoredImage | None:
        return None

    async def delete_older_than(self, cutoff: float) -> int:
        return 0

    async def delete(self, name: str) -> None:
        pass

    async def check(self, *, min_free_bytes: int = 0) -> None:
        pass

    def public_url(self, name: str) -> str | None:
        return None
