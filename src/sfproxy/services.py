"""The long-lived parts of a running service, built from settings once, in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from .auth import Client, ClientKeys
from .catalogue import Catalogue, plan_batches
from .errors import ImageStoreError
from .generate import Generation, ImageGenerator, ImageJob, Progress
from .inputs import InputImages
from .limits import ClientLimits, Reservation, WindowCounter, make_counter
from .metrics import Metrics
from .pacing import ModelPacer
from .settings import Settings
from .siliconflow import RetryPolicy, SiliconFlowClient
from .store import ImageStore, NoImageStore
from .store.local import LocalImageStore

logger = logging.getLogger(__name__)


class _GenerationMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def generated(self, model: str, images: int) -> None:
        self._metrics.images.labels(model).inc(images)

    def store_failed(self, operation: str) -> None:
        self._metrics.store_errors.labels(operation).inc()


@dataclass(slots=True)
class Services:
    settings: Settings
    catalogue: Catalogue
    keys: ClientKeys
    client: SiliconFlowClient
    store: ImageStore
    generator: ImageGenerator
    inputs: InputImages
    metrics: Metrics
    counter: WindowCounter
    limits: ClientLimits

    @classmethod
    @asynccontextmanager
    async def running(
        cls, settings: Settings, metrics: Metrics | None = None
    ) -> AsyncIterator[Services]:
        metrics = metrics or Metrics()
        catalogue = settings.catalogue
        client = SiliconFlowClient(
            settings.sf_base,
            settings.require_upstream_key().get_secret_value(),
            connect_timeout=settings.upstream_connect_timeout,
            timeout=settings.upstream_timeout,
            retry=RetryPolicy(retries=settings.upstream_retries),
            max_connections=settings.upstream_max_connections,
            observer=metrics,
        )
        store = make_store(settings)
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        counter = make_counter(redis_url)
        pacer = ModelPacer(
            counter,
            max_in_flight=settings.upstream_max_in_flight,
            images_per_minute=settings.upstream_images_per_minute,
            per_model=settings.model_pacing,
            queue_timeout=settings.queue_timeout,
            metrics=metrics,
        )
        async with AsyncExitStack() as stack:
            stack.push_async_callback(counter.close)
            await client.start()
            stack.push_async_callback(client.close)
            await store.start()
            stack.push_async_callback(store.close)
            background = [asyncio.create_task(metrics.watch_event_loop())]
            if settings.image_retention_days is not None and store.keeps_images:
                retention = settings.image_retention_days * 86400
                background.append(asyncio.create_task(remove_old_images(store, retention)))
            for task in background:
                stack.callback(task.cancel)
            yield cls(
                settings=settings,
                catalogue=catalogue,
                keys=ClientKeys(settings.client_keys),
                client=client,
                store=store,
                generator=ImageGenerator(
                    client,
                    store,
                    catalogue,
                    parallel_calls=settings.parallel_calls,
                    pacer=pacer,
                    observer=_GenerationMetrics(metrics),
                ),
                inputs=InputImages(
                    store,
                    max_bytes=settings.max_image_bytes,
                    max_pixels=settings.max_input_pixels,
                    public_base=settings.image_public_base_url,
                ),
                metrics=metrics,
                counter=counter,
                limits=ClientLimits(
                    counter,
                    rpm=settings.client_rpm,
                    images_per_day=settings.client_images_per_day,
                    overrides=settings.client_overrides,
                    metrics=metrics,
                ),
            )

    async def admit(self, client: Client, job: ImageJob) -> Reservation:
        """Charge the job's images to the client's daily limit, before any work (or 429)."""
        planned = sum(plan_batches(self.catalogue.spec(job.model), job.n, job.batch_size))
        return await self.limits.reserve_images(client, planned)

    async def generate(
        self, job: ImageJob, reservation: Reservation, progress: Progress | None = None
    ) -> Generation:
        """The generation path; images that were not made are refunded to the client."""
        try:
            return await self.generator.run(job, progress)
        except BaseException:
            await reservation.refund()
            raise


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
