"""Proxy access keys: wholly separate from the upstream SILICONFLOW_API_KEY.

A key is accepted from `Authorization: Bearer`, the `x-api-key` or `api-key` headers, or the
query parameters `access_token`, `key`, `token` and `apikey` (the original accepted them, and
some clients can only put a key in the URL). The client's credential is never sent upstream.

Keys come from ALLOW_CLIENT_KEYS (labelled `key-…`) and from the database (`sfproxy keys`,
`/admin/keys`; labelled by their id `ck_…`), the latter through an in-memory `KeyCache`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from starlette.requests import HTTPConnection

from .db.keys import KeyRecord, KeyStore
from .errors import AuthenticationError, PermissionDeniedError

logger = logging.getLogger(__name__)

HEADER_NAMES = ("x-api-key", "api-key")
QUERY_NAMES = ("access_token", "key", "token", "apikey")
ANONYMOUS = "anonymous"
# Unknown keys start a refresh of the database's keys at most this often.
MISS_INTERVAL = 0.5
# A load of the keys that takes longer is a database in trouble: the last map keeps serving.
LOAD_TIMEOUT = 5.0


def key_label(key: str) -> str:
    """A short, non-reversible name for a key, for logs, metrics and limits."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class Client:
    """Who made a request: `label` is a key's label (a database key's id, `ck_…`), or
    "anonymous" on a public API. A database key also brings its name (for logs), its budgets
    in the site's currency, its own rpm / images_per_day (over CLIENT_LIMITS and the defaults,
    see limits.py) and the models it may use (None: any)."""

    label: str
    key: str | None = None
    daily_budget: Decimal | None = None
    monthly_budget: Decimal | None = None
    name: str | None = None
    rpm: int | None = None
    images_per_day: int | None = None
    models: tuple[str, ...] | None = None
    # An operator's key (ADMIN_KEYS) reading jobs on /v1 (routes.common.identify): it sees
    # every client's videos, and makes nothing.
    admin: bool = False

    @classmethod
    def of_record(cls, record: KeyRecord) -> Client:
        return cls(
            label=record.id,
            daily_budget=record.daily_budget,
            monthly_budget=record.monthly_budget,
            name=record.name,
            rpm=record.rpm,
            images_per_day=record.images_per_day,
            models=record.models,
        )

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def require_model(self, model: str, requested: str | None = None) -> None:
        """403 unless the key may use `model` (as resolved from an alias) or the alias it was
        asked by, so that a key may be given either."""
        if self.allows(model) or (requested is not None and self.allows(requested)):
            return
        raise PermissionDeniedError(
            f"This key may not use the model {requested or model}. "
            f"Models it may use: {', '.join(self.models or ())}.",
            param="model",
            code="model_not_allowed",
        )


class ClientKeys:
    """ALLOW_CLIENT_KEYS, and the database's keys through a `KeyCache` (when there is one).

    The API is public only while there are no ALLOW_CLIENT_KEYS and the database has never held
    a key: once a key is created, every request needs one, even after that key is revoked or
    has expired (revoking the last key must not open the service to everyone).
    """

    def __init__(self, keys: Iterable[str], cache: KeyCache | None = None) -> None:
        # Digests have one length, so comparing them takes the same time whatever is sent.
        self._digests = {hashlib.sha256(key.encode()).digest(): key for key in keys}
        self.cache = cache

    @property
    def required(self) -> bool:
        return bool(self._digests) or (self.cache is not None and self.cache.exists)

    async def start(self) -> None:
        if self.cache is not None:
            await self.cache.start()
        if self.required:
            stored = len(self.cache.by_digest) if self.cache is not None else 0
            logger.info(
                "client keys: %d from ALLOW_CLIENT_KEYS, %d live in the database; every "
                "request needs one",
                len(self._digests),
                stored,
            )

    async def close(self) -> None:
        if self.cache is not None:
            await self.cache.close()

    async def authenticate(self, connection: HTTPConnection) -> Client:
        if not self.required:
            return Client(label=ANONYMOUS)
        presented = list(_credentials(connection))
        for credential in presented:
            key = self._match(credential)
            if key is not None:
                return Client(label=key_label(key), key=key)
        if self.cache is not None and presented:
            record = await self.cache.lookup(*presented)
            if record is not None:
                if record.expired(datetime.now(UTC)):
                    raise AuthenticationError("This proxy key has expired.", code="expired_api_key")
                return Client.of_record(record)
        if presented:
            raise AuthenticationError("Incorrect API key provided for this proxy.")
        raise AuthenticationError(
            "Missing API key: send this proxy's key as 'Authorization: Bearer <key>' "
            "(or the x-api-key header)."
        )

    def _match(self, credential: str) -> str | None:
        digest = hashlib.sha256(credential.encode()).digest()
        found = None
        # Every key is compared, so timing does not tell which one nearly matched.
        for candidate, key in self._digests.items():
            if hmac.compare_digest(digest, candidate):
                found = key
        return found


class KeyCache:
    """The database's live keys, by hash, in memory: requests never wait for the database.

    Refreshed every `refresh_seconds` in the background, so a key revoked (or changed) on any
    instance is refused (or changed) on every instance that soon. An unknown key waits for a
    refresh that starts after it arrived, so a key created a moment ago works at once; those
    refreshes start at most once per `miss_interval` and one at a time, however many unknown
    keys arrive, so guessing keys cannot flood the database. When the database fails, the
    last map keeps serving.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        refresh_seconds: float,
        miss_interval: float = MISS_INTERVAL,
        timeout: float = LOAD_TIMEOUT,
    ) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.miss_interval = miss_interval
        self.timeout = timeout
        self.by_digest: Mapping[str, KeyRecord] = {}
        self.exists = False
        # Whether the last load failed: outages are logged when they start and end.
        self.failing = False
        self.loads = 0
        self._last_start = -math.inf
        self._loading: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_periodically())

    async def close(self) -> None:
        for task in (self._refresher, self._loading):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def lookup(self, *credentials: str) -> KeyRecord | None:
        """The record of the first credential that is a live key. One wait for a reload
        covers all of a request's credentials."""
        digests = [hashlib.sha256(credential.encode()).hexdigest() for credential in credentials]
        record = self._find(digests)
        if record is None:
            await self._loaded_since(time.monotonic())
            record = self._find(digests)
        return record

    def _find(self, digests: list[str]) -> KeyRecord | None:
        by_digest = self.by_digest
        return next((by_digest[d] for d in digests if d in by_digest), None)

    async def refresh(self) -> None:
        """Load now (or join the load under way) and wait for it."""
        await asyncio.shield(self._loading or self._load())

    async def reload(self) -> None:
        """A load that starts after any under way: for a change this instance just made."""
        if self._loading is not None:
            await asyncio.shield(self._loading)
        await self.refresh()

    async def _loaded_since(self, moment: float) -> None:
        while self._last_start < moment:
            loading = self._loading
            if loading is None:
                delay = self._last_start + self.miss_interval - time.monotonic()
                if delay > 0:
                    # Every waiter wakes; the first starts the load and the others join it.
                    await asyncio.sleep(delay)
                    continue
                loading = self._load()
            await asyncio.shield(loading)

    def _load(self) -> asyncio.Task[None]:
        self._last_start = time.monotonic()
        self._loading = asyncio.create_task(self._read())
        return self._loading

    async def _read(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                live = await self.store.live()
        except Exception as exc:  # noqa: BLE001 - any failure: keep serving the last map
            if not self.failing:
                logger.warning(
                    "client keys: the database did not answer (%s); serving the %d key(s) "
                    "loaded before",
                    type(exc).__name__,
                    len(self.by_digest),
                )
            self.failing = True
        else:
            if self.failing:
                logger.info("client keys: the database answers again")
            if live.exists and not self.exists:
                logger.info("client keys: the database holds keys; every request needs one")
            self.failing = False
            self.by_digest, self.exists = live.by_digest, live.exists
            self.loads += 1
        finally:
            self._loading = None

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self.refresh()


def _credentials(connection: HTTPConnection) -> Iterator[str]:
    authorization = connection.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            yield value.strip()
    for name in HEADER_NAMES:
        header = connection.headers.get(name)
        if header and header.strip():
            yield header.strip()
    for name in QUERY_NAMES:
        query = connection.query_params.get(name)
        if query:
            yield query
