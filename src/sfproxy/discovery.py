"""The account's own models: read from SiliconFlow at start and every MODEL_REFRESH_SECONDS.

`ModelDiscovery` holds the catalogue the services read on every request (`current`). A refresh
builds a whole new `Catalogue` and swaps it in with one assignment, so a request sees either
the old list or the new one, never half of each. Which list that is:

- MODELS / MODELS_JSON set: always theirs. Discovery runs once at start, only to warn about
  listed models the account does not have.
- otherwise: exactly the account's image models, described by the catalogue for the site; if
  reading them fails, the site's built-in list, until a later refresh succeeds.

`status` is what `/readyz` shows under `checks.models`; a failed discovery never makes the
service unready, since the built-in list still serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .catalogue import SITE_HOSTS, Catalogue
from .errors import ProxyError
from .settings import Settings

logger = logging.getLogger(__name__)

# The longest the start waits for the first discovery; past it the service starts with the
# configured or built-in list and the discovery finishes in the background.
START_WAIT_SECONDS = 3.0
# Reads the account's image model ids (SiliconFlowClient.list_models, or a key from a pool).
ListModels = Callable[[], Awaitable[list[str]]]


class ModelDiscovery:
    def __init__(self, settings: Settings, list_models: ListModels) -> None:
        self._settings = settings
        self._list_models = list_models
        self._site = settings.site
        self.current: Catalogue = settings.catalogue
        self.status = (
            "configured (MODELS/MODELS_JSON)"
            if settings.models_configured
            else f"built-in list for {SITE_HOSTS[self._site]}: not discovered yet"
        )
        # The ids the account offered at the last successful discovery.
        self.account_models: list[str] | None = None
        self._lock = asyncio.Lock()
        self._first = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> bool:
        """Read the account's models now and apply them; False if SiliconFlow could not say.

        One at a time: a call made while another runs waits for it, then reads again.
        """
        async with self._lock:
            try:
                model_ids = await self._list_models()
            except ProxyError as exc:
                self._failed(exc.message)
                return False
            except Exception as exc:  # noqa: BLE001 - a bug here must not end the refreshes
                logger.exception("reading the account's image models failed")
                self._failed(exc.__class__.__name__)
                return False
            if not model_ids:
                self._failed("the account lists no image models")
                return False
            self.account_models = model_ids
            if self._settings.models_configured:
                self._check_configured(model_ids)
            else:
                self._apply(model_ids)
            return True

    def _apply(self, model_ids: list[str]) -> None:
        catalogue = Catalogue.discovered(model_ids, self._settings.alias_entries, site=self._site)
        if catalogue.dropped_aliases:
            logger.warning(
                "MODEL_ALIASES: %s point at models the account does not have; left out",
                ", ".join(catalogue.dropped_aliases),
            )
        previous = [spec.id for spec in self.current.listed]
        self.current = catalogue
        self.status = f"discovered: {len(catalogue.listed)} image models"
        listed = [spec.id for spec in catalogue.listed]
        if listed != previous:
            logger.info("image models of the account: %s", ", ".join(listed))

    def _check_configured(self, model_ids: list[str]) -> None:
        offered = set(model_ids)
        missing = [spec.id for spec in self.current.listed if spec.id not in offered]
        if missing:
            logger.warning(
                "MODELS/MODELS_JSON list %s, which the SiliconFlow account does not offer",
                ", ".join(missing),
            )
            self.status = f"configured (MODELS/MODELS_JSON); not offered: {', '.join(missing)}"
        else:
            self.status = "configured (MODELS/MODELS_JSON)"

    def _failed(self, reason: str) -> None:
        if self._settings.models_configured:
            self.status = f"configured (MODELS/MODELS_JSON); discovery failed: {reason}"
            logger.warning("could not read the account's image models: %s", reason)
            return
        if self.current.source == "discovered":
            # A list that worked a while ago is a better guess than the built-in one.
            self.status = f"discovered earlier; the last refresh failed: {reason}"
            logger.warning("model refresh failed, keeping the models found before: %s", reason)
            return
        host = SITE_HOSTS[self._site]
        self.status = f"built-in list for {host}: discovery failed: {reason}"
        logger.warning(
            "could not read the account's image models (%s); serving the built-in list for %s",
            reason,
            host,
        )

    async def start(self) -> None:
        """Begin discovering in the background; wait for the first answer a short while."""
        self._task = asyncio.create_task(self._run(), name="model-discovery")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), START_WAIT_SECONDS)
        if not self._first.is_set():
            logger.warning(
                "SiliconFlow's model list did not come within %.0f s; starting with %s",
                START_WAIT_SECONDS,
                "the configured models"
                if self._settings.models_configured
                else f"the built-in list for {SITE_HOSTS[self._site]}",
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        try:
            await self.refresh()
        finally:
            self._first.set()
        interval = self._settings.model_refresh_seconds
        # Configured models never change: the start-up check is all discovery does for them.
        if interval <= 0 or self._settings.models_configured:
            return
        while True:
            await asyncio.sleep(interval)
            await self.refresh()
