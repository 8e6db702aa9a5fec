"""The long-lived parts of a running service, built from settings once, in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from .auth import ClientKeys, KeyCache
from .budgets import Budgets
from .catalogue import Catalogue
from .corridor import Corridor
from .db.database import Database
from .db.keys import KeyStore
from .discovery import ModelDiscovery
from .errors import ImageStoreError
from .formats import OutputFormats
from .generate import ImageGenerator
from .inputs import InputImages
from .jobs.money import JobMoney
from .jobs.poller import VideoPoller
from .jobs.repository import JobRepository
from .jobs.service import VideoJobs
from .ledger import Ledger, LedgerOff, LedgerWriter, remove_old_records
from .limits import ClientLimits, WindowCounter, make_counter
from .metrics import Metrics
from .pacing import ModelPacer
from .retries import RetryPolicy
from .settings import Settings
from .siliconflow import SessionFactory, SiliconFlowClient
from .spend_counters import SpendCounter, make_spend_counter
from .store import ImageStore, NoImageStore
from .store.local import LocalImageStore
from .upstream_keys import KeyPool
from .upstream_slots import RedisSlots
from .upstream_state import RedisPoolState
from .upstream_video import VideoUpstream

logger = logging.getLogger(__name__)


class _GenerationMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def generated(self, model: str, images: int) -> None:
        self._metrics.images.labels(model).inc(images)

    def queued(self, model: str, seconds: float) -> None:
        self._metrics.queue_seconds.labels(model).observe(seconds)

    def store_failed(self, operation: str) -> None:
        self._metrics.store_errors.labels(operation).inc()


@dataclass(slots=True)
class Services:
    settings: Settings
    # Holds the catalogue, which discovery may replace at run time.
    models: ModelDiscovery
    keys: ClientKeys
    client: SiliconFlowClient
    store: ImageStore
    generator: ImageGenerator
    corridor: Corridor
    inputs: InputImages
    metrics: Metrics
    counter: WindowCounter
    limits: ClientLimits
    budgets: Budgets
    # Client keys and the usage ledger (DATABASE_URL, else SQLite in the data directory).
    database: Database
    ledger: Ledger
    # Video jobs (jobs/): every video entry point's one service.
    videos: VideoJobs

    @property
    def catalogue(self) -> Catalogue:
        """The catalogue as it is now: read it once per request."""
        return self.models.current

    @classmethod
    @asynccontextmanager
    async def running(
        cls,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        upstream_session: SessionFactory | None = None,
    ) -> AsyncIterator[Services]:
        metrics = metrics or Metrics()
        settings.require_upstream_key()
        store = make_store(settings)
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        counter = make_counter(redis_url)
        spend: SpendCounter = make_spend_counter(redis_url)
        pacer = ModelPacer(
            counter,
            max_in_flight=settings.upstream_max_in_flight,
            images_per_minute=settings.upstream_images_per_minute,
            per_model=settings.model_pacing,
            queue_timeout=settings.queue_timeout,
            cooldown_seconds=settings.upstream_cooldown_seconds,
            metrics=metrics,
            accounts=lambda model: keys.accounts_serving(model),
        )
        keys = KeyPool(
            settings.upstream_keys,
            site=settings.site,
            counter=counter,
            images_per_minute=lambda model: pacer.limits(model)[1],
            max_in_flight=lambda model: pacer.limits(model)[0],
            slots=RedisSlots(redis_url) if redis_url else None,
            queue_timeout=settings.queue_timeout,
            # Longer than any call lasts: a slot left by a process that died comes free then.
            lease_seconds=settings.upstream_connect_timeout + settings.upstream_timeout + 60,
            cooldown_seconds=settings.upstream_key_cooldown_seconds,
            probe_seconds=settings.upstream_probe_seconds,
            state=RedisPoolState(redis_url) if redis_url else None,
            balance_refresh_seconds=settings.balance_refresh_seconds,
            low_balance_warning=settings.low_balance_warning,
            metrics=metrics,
        )
        client = SiliconFlowClient(
            settings.sf_base,
            keys,
            connect_timeout=settings.upstream_connect_timeout,
            timeout=settings.upstream_timeout,
            retry=RetryPolicy(
                retries=settings.upstream_retries, retry_unsure=settings.upstream_retry_unsure
            ),
            max_connections=settings.upstream_max_connections,
            observer=metrics,
            session_factory=upstream_session,
        )
        async with AsyncExitStack() as stack:
            stack.push_async_callback(counter.close)
            stack.push_async_callback(spend.close)
            stack.push_async_callback(keys.state.close)
            stack.push_async_callback(keys.slots.close)
            database = await stack.enter_async_context(Database.open(settings.database_target))
            client_keys = ClientKeys(
                settings.client_keys,
                KeyCache(KeyStore(database.engine), refresh_seconds=settings.keys_refresh_seconds),
            )
            await client_keys.start()
            stack.push_async_callback(client_keys.close)
            # Stopped after the flights (the exit stack runs backwards): a generation cancelled
            # at shutdown still hands its record to the writer, which then writes them all.
            writer: LedgerWriter | LedgerOff = (
                LedgerWriter(database.engine, capacity=settings.ledger_buffer, metrics=metrics)
                if settings.ledger == "on"
                else LedgerOff()
            )
            writer.start()
            stack.push_async_callback(writer.stop)
            await client.start()
            stack.push_async_callback(client.close)
            await keys.start(client.user_info)
            models = ModelDiscovery(settings, client.list_models)
            stack.push_async_callback(models.stop)
            await models.start()
            await store.start()
            stack.push_async_callback(store.close)
            background = [asyncio.create_task(metrics.watch_event_loop())]
            if settings.image_retention_days is not None and store.keeps_images:
                retention = settings.image_retention_days * 86400
                background.append(asyncio.create_task(remove_old_images(store, retention)))
            if settings.ledger_retention_days is not None:
                background.append(
                    asyncio.create_task(
                        remove_old_records(database.engine, settings.ledger_retention_days)
                    )
                )
            for task in background:
                stack.callback(task.cancel)
            generator = ImageGenerator(
                client,
                store,
                models,
                parallel_calls=settings.parallel_calls,
                pacer=pacer,
                observer=_GenerationMetrics(metrics),
                formats=OutputFormats(
                    default=None if settings.image_format == "keep" else settings.image_format,
                    quality=settings.image_compression,
                ),
            )
            limits = ClientLimits(
                counter,
                rpm=settings.client_rpm,
                images_per_day=settings.client_images_per_day,
                overrides=settings.client_overrides,
                metrics=metrics,
            )
            budgets = Budgets(
                spend,
                database.engine,
                settings.prices,
                daily=settings.client_daily_budget,
                monthly=settings.client_monthly_budget,
                overrides=settings.client_overrides,
                metrics=metrics,
            )
            ledger = Ledger(writer, settings.prices, metrics)
            corridor = Corridor(
                generator,
                limits,
                budgets=budgets,
                request_timeout=settings.request_timeout_seconds,
                handover_seconds=settings.handover_seconds,
                metrics=metrics,
                ledger=ledger,
            )
            stack.push_async_callback(corridor.flights.close)
            videos = VideoJobs(
                JobRepository(database.engine),
                VideoUpstream(client, max_bytes=settings.video_max_bytes),
                corridor,
                pacer,
                store,
                settings,
            )
            poller = VideoPoller(
                videos.repository,
                videos.upstream,
                store,
                JobMoney(spend, limits, ledger, metrics),
                videos,
                settings,
                metrics,
            )
            poller.start()
            # Stopped first: nothing it does is left half-done (a job's lease runs out instead).
            stack.push_async_callback(poller.stop)
            yield cls(
                settings=settings,
                models=models,
                keys=client_keys,
                client=client,
                store=store,
                generator=generator,
                corridor=corridor,
                inputs=InputImages(
                    store,
                    max_bytes=settings.max_image_bytes,
                    max_pixels=settings.max_input_pixels,
                    public_base=settings.image_public_base_url,
                ),
                metrics=metrics,
                counter=counter,
                limits=limits,
                budgets=budgets,
                database=database,
                ledger=ledger,
                videos=videos,
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
