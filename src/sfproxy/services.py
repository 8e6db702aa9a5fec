"""The long-lived parts of a running service, built from settings once, in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from .auth import ClientKeys
from .catalogue import Catalogue
from .generate import ImageGenerator
from .settings import Settings
from .siliconflow import RetryPolicy, SiliconFlowClient
from .store import ImageStore, NoImageStore
from .store.local import LocalImageStore


@dataclass(slots=True)
class Services:
    settings: Settings
    catalogue: Catalogue
    keys: ClientKeys
    client: SiliconFlowClient
    store: ImageStore
    generator: ImageGenerator

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
            yield cls(
                settings=settings,
                catalogue=catalogue,
                keys=ClientKeys(settings.client_keys),
                client=client,
                store=store,
                generator=ImageGenerator(
                    client, store, catalogue, parallel_calls=settings.parallel_calls
                ),
            )


def make_store(settings: Settings) -> ImageStore:
    if settings.image_store == "off":
        return NoImageStore()
    if settings.image_store.startswith("s3://"):
        from .store.s3 import S3ImageStore

        return S3ImageStore.from_settings(settings)
    return LocalImageStore(settings.image_dir)
