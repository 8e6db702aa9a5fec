"""`IMAGE_STORE=local`: files under `IMAGE_DIR`, sharded by the first two hex digits of the name."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from pathlib import Path

from ..errors import ImageStoreError
from . import StoredImage, is_valid_name, media_type_of, new_name

# Images up to this size are written from the event loop itself (see `put`); larger ones in a
# thread, as a burst of megabyte writes can meet the kernel's dirty-page throttling.
INLINE_WRITE_BYTES = 256 * 1024
MB = 1024 * 1024

log = logging.getLogger(__name__)


class LocalImageStore:
    keeps_images = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def start(self) -> None:
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        pass

    def _path(self, name: str) -> Path:
        return self.directory / name[:2] / name

    def path_of(self, name: str) -> Path:
        """Where the image is on disk (for `sfproxy mcp`, which serves no HTTP to link to)."""
        return self._path(name)

    async def put(self, data: bytes, media_type: str) -> str:
        name = new_name(media_type)
        try:
            if len(data) <= INLINE_WRITE_BYTES:
                # A small write into the page cache takes microseconds; a thread for it costs
                # more, in GIL hand-offs that stall the event loop under load.
                self._write_atomically(self._path(name), data)
            else:
                await asyncio.to_thread(self._write_atomically, self._path(name), data)
        except OSError as exc:
            raise ImageStoreError(
                f"The image could not be stored ({exc.strerror or exc.__class__.__name__}); "
                "the request was not completed so that no broken link is handed out.",
                retry_after=30,
            ) from None
        return name

    @staticmethod
    def _write_atomically(path: Path, data: bytes) -> None:
        # Written beside the target and renamed into place: a crash leaves at most a stray
        # temporary file, never a truncated image under a real name.
        # Names are never reused, so the temporary name is unique too.
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            try:
                file = open(temporary, "wb")
            except FileNotFoundError:
                # The shard folder's first image (creating it only then spares a mkdir a write).
                path.parent.mkdir(parents=True, exist_ok=True)
                file = open(temporary, "wb")
            with file:
                file.write(data)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    async def get(self, name: str) -> StoredImage | None:
        if not is_valid_name(name):
            return None
        try:
            data = await asyncio.to_thread(self._path(name).read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ImageStoreError(f"The image could not be read ({exc.strerror}).") from None
        return StoredImage(name=name, media_type=media_type_of(name), data=data)

    async def delete(self, name: str) -> None:
        if not is_valid_name(name):
            return
        try:
            await asyncio.to_thread(self._path(name).unlink, missing_ok=True)
        except OSError as exc:
            raise ImageStoreError(f"The file could not be removed ({exc.strerror}).") from None

    async def delete_older_than(self, cutoff: float) -> int:
        try:
            return await asyncio.to_thread(self._delete_older_than, cutoff)
        except OSError as exc:
            raise ImageStoreError(
                f"Old images in IMAGE_DIR {self.directory} could not be removed ({exc.strerror})."
            ) from None

    def _delete_older_than(self, cutoff: float) -> int:
        removed = 0
        if not self.directory.is_dir():
            return removed
        for shard in self.directory.iterdir():
            if not shard.is_dir():
                continue
            for path in shard.iterdir():
                # Images, and temporary files a crash left behind mid-write; nothing else.
                if not (is_valid_name(path.name) or path.name.endswith(".tmp")):
                    continue
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    async def check(self, *, min_free_bytes: int = 0) -> None:
        probe = self.directory / f".ready-{secrets.token_hex(4)}"
        try:
            free = await asyncio.to_thread(self._probe, probe)
        except OSError as exc:
            # /readyz needs no key: the path goes to the log, not to whoever asked.
            log.warning("IMAGE_DIR %s is not writable: %s", self.directory, exc)
            raise ImageStoreError(
                f"IMAGE_DIR is not writable ({exc.strerror or exc.__class__.__name__})."
            ) from None
        if free < min_free_bytes:
            raise ImageStoreError(
                f"IMAGE_DIR has {free / MB:.0f} MB free, less than MIN_FREE_DISK_MB "
                f"({min_free_bytes / MB:.10g})."
            )

    @staticmethod
    def _probe(path: Path) -> int:
        """Write and remove a file; the bytes left free to unprivileged writers."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"ok")
        path.unlink()
        usage = os.statvfs(path.parent)
        return usage.f_bavail * usage.f_frsize

    def public_url(self, name: str) -> str | None:
        return None
