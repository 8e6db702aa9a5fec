"""The fake's object storage: signed-looking image links that expire."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from .images import EXTENSIONS, RenderedImage


@dataclass(frozen=True, slots=True)
class StoredFile:
    image: RenderedImage
    expires_at: float


class FileStore:
    """Bounded by count; each entry only references its image, so one picture handed out under
    many ids is held once."""

    def __init__(self, max_files: int = 4096) -> None:
        self._lock = threading.Lock()
        self._files: OrderedDict[str, StoredFile] = OrderedDict()
        self._max_files = max_files

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)

    def add(self, image: RenderedImage, ttl: float) -> tuple[str, int]:
        """Store `image` under a new name; return the name and its expiry as a unix time."""
        name = new_file_name(image)
        expires_at = time.time() + ttl
        with self._lock:
            self._files[name] = StoredFile(image, expires_at)
            while len(self._files) > self._max_files:
                self._files.popitem(last=False)
        return name, int(expires_at)

    def get(self, name: str) -> StoredFile | None:
        with self._lock:
            stored = self._files.get(name)
            if stored is not None and stored.expires_at <= time.time():
                del self._files[name]
                stored = None
            return stored

    def clear(self) -> int:
        with self._lock:
            cleared = len(self._files)
            self._files.clear()
            return cleared


def new_file_name(image: RenderedImage) -> str:
    return f"{secrets.token_hex(16)}.{EXTENSIONS[image.image_format]}"
