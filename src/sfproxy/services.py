"""The long-lived parts of a running service, built from settings once, in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from .auth import ClientKeys
from .catalogue import Catalogue
from .errors import ImageStoreError
from .generate import ImageGenerator
from .inputs import InputImages
from .settings import Settings
from .siliconflow import RetryPolicy, SiliconFlowClient
from .store import ImageStore, NoImageStore
from .store.local import LocalImageStore

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    settings: Settings
    catalogue: Catalogue
    keys: ClientKeys
    client: SiliconFlowClient
    store: ImageStore
    generator: ImageGenerator
    inputs: InputImages

    @classmethod
    @asynccontextmanager
    async def running(cls, settings: Settings) -> AsyncIterator[Services]:
        catalogue = settings.catalogue
        client = SiliconFlowClient(
            settings.sf_base,
            settings.require_upstream_key().get_secret_value(),
            connect_timeout=settings.upstream_connect_timeout,
            timeout=settings.upstream_timeout,
            retry=RetryPolicy(retries=settings.upstream_retries),
            max_connections=settings.upstream_max_connections,
        )
        store = make_store(settings)
        async with AsyncExitStack() as stack:
            await client.start()
            stack.push_async_callback(client.close)
            await store.start()
            stack.push_async_callback(store.close)
            if settings.image_retention_days is not None and store.keeps_images:
                retention = settings.image_retention_days * 86400
                sweeper = asyncio.create_task(remove_old_images(store, retention))
                stack.callback(sweeper.cancel)
            yield cls(
                settings=settings,
                catalogue=catalogue,
                keys=ClientKeys(settings.client_keys),
                client=client,
                store=store,
                generator=ImageGenerator(
                    client, store, catalogue, parallel_calls=settings.parallel_calls
                ),
                inputs=InputImages(
                    store,
                    max_bytes=settings.max_image_bytes,
                    public_base=settings.image_public_base_url,
                ),
            )


async def remove_old_images(store: ImageStore, retention_seconds: float) -> None:
    """Delete images older than the retention, now and then periodically, until cancelled."""
    # Often enough that nothing outlives its retention by much more than a quarter of it.
    interval = min(3600.0, max(1.0, retention_seconds / 4))
    while True:
        try:
            removed = await store.delete_older_than(time.time() - retention_seconds)
        except ImageStoreError as exc:
            logger.warning("image retention sweep failed: %s", exc.message)
        else:
            if removed:
                logger.info("image retention: removed %d image(s)", removed)
        await asyncio.sleep(interval)


def make_store(settings: Settings) -> ImageStore:
    if settings.image_store == "off":
        return NoImageStore()
    if settings.image_store.startswith("s3://"):
        from .store.s3 import S3ImageStore

        return S3ImageStore.from_settings(settings)
    return LocalImageStore(settings.image_dir)
