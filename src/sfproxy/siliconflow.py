"""The SiliconFlow client: one class owning one connection pool.

Transport failures and SiliconFlow's error answers become `UpstreamError`s here, at the
boundary, so nothing past this module sees aiohttp. Each error says whether SiliconFlow may
already have done (and billed) the work (`maybe_billed`). A generation is one attempt: whether
to try again is a question of money, answered by the corridor with `RetryPolicy`. Downloads of
finished images cost nothing and are retried here, with exponential backoff and jitter.
Nothing here imports the web framework.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson

from . import __version__
from .errors import (
    ResultGoneError,
    UpstreamBadResponseError,
    UpstreamConnectionError,
    UpstreamError,
)
from .images import looks_complete, sniff_media_type
from .retries import MAX_RETRY_WAIT, RetryPolicy
from .upstream_accounts import AccountInfo, account_label, key_label, parse_user_info
from .upstream_keys import KeyPool, UpstreamKey
from .upstream_transport import EnvironmentProxies, GuardedRequest, transport_failure
from .upstream_wire import UpstreamImages, error_for, parse_images, parse_model_ids

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Builds the client's session from its timeouts: the seam tests use for the transport.
SessionFactory = Callable[[aiohttp.ClientTimeout], aiohttp.ClientSession]
TRACE_HEADER = "x-siliconcloud-trace-id"
# Listing models is a quick read; a SiliconFlow that takes longer is treated as down.
MODEL_LIST_TIMEOUT = 5.0
# SiliconFlow's JSON answers (image URLs, a job's status, an account) are a few kilobytes;
# one this large is not an answer, and is not read on.
MAX_ANSWER_BYTES = 1024 * 1024
CHUNK_BYTES = 256 * 1024


class UpstreamObserver(Protocol):
    """Told about every attempt, for metrics; must not raise or block."""

    def attempt(self, kind: str, model: str, outcome: str, seconds: float) -> None: ...

    def retry(self, kind: str, model: str, reason: str) -> None: ...


class _NoObserver:
    def attempt(self, kind: str, model: str, outcome: str, seconds: float) -> None:
        pass

    def retry(self, kind: str, model: str, reason: str) -> None:
        pass


class SiliconFlowClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | KeyPool,
        *,
        connect_timeout: float = 10.0,
        timeout: float = 300.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 0,
        max_download_bytes: int = 64 * 1024 * 1024,
        observer: UpstreamObserver | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # One key or several: each call is made with the key the pool chooses.
        self.keys = api_key if isinstance(api_key, KeyPool) else KeyPool([api_key])
        self._timeout = aiohttp.ClientTimeout(
            total=timeout, sock_connect=connect_timeout, sock_read=None
        )
        self._timeout_seconds = timeout
        self.retry = retry or RetryPolicy()
        self._max_connections = max_connections
        self._max_download_bytes = max_download_bytes
        self._observer: UpstreamObserver = observer or _NoObserver()
        self._session: aiohttp.ClientSession | None = None
        self._session_factory = session_factory
        self._proxies = EnvironmentProxies()

    async def start(self) -> None:
        if self._session is None and self._session_factory is not None:
            # The seam for tests: any session (and connector) they build.
            self._session = self._session_factory(self._timeout)
        elif self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"User-Agent": f"siliconflow-img-proxy/{__version__}"},
                # trust_env would look up proxies and ~/.netrc in a thread on every request;
                # the environment's proxies are read once instead (`_proxy_for`).
                trust_env=False,
            )

    async def close(self) -> None:
        await self.keys.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> SiliconFlowClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("SiliconFlowClient used before start()")
        return self._session

    async def generate(
        self,
        payload: dict[str, Any],
        *,
        sending: Callable[[], None] | None = None,
        queued_at: float | None = None,
    ) -> UpstreamImages:
        """One `POST /images/generations` attempt (the corridor decides about retries).

        `sending` is called once a key is held, just before the call goes out: until then the
        call may still be waiting for an in-flight slot (since `queued_at`), and cancelled.
        A refusal that is the key's own (429, 401, 403) moves the call to another account
        at once: nothing was made or billed, so this costs none of the corridor's retries.
        """
        images = payload.get("batch_size")
        result, key = await self.post_on_a_key(
            "generate",
            "/images/generations",
            payload,
            parse_images,
            images=images if isinstance(images, int) else 1,
            queued_at=queued_at,
            sending=sending,
        )
        return replace(result, account=account_label(key.account))

    async def post_on_a_key(
        self,
        kind: str,
        path: str,
        payload: dict[str, Any],
        parse: Callable[[bytes, str | None], T],
        *,
        images: int,
        queued_at: float | None,
        sending: Callable[[], None] | None = None,
    ) -> tuple[T, UpstreamKey]:
        """One `POST` of `payload` with the key the pool chooses for its model, parsed, and the
        key that made it, once its `images` are counted against the account's budget.

        A refusal that is the key's own (429, 401, 403) moves the call to another key at once:
        nothing was made or billed. Anything else is the caller's to retry, or not.
        """
        model = str(payload.get("model", ""))
        body = orjson.dumps(payload)
        # Each failure takes a key (or its account) out of the choice, so this ends.
        exc: UpstreamError | None = None
        for _ in range(len(self.keys.keys)):
            held = await self.keys.choose(model, queued_at=queued_at)
            if sending is not None:
                sending()
            started = time.perf_counter()
            try:
                result = parse(*await self.post(path, body, held.secret))
            except UpstreamError as failure:
                exc = failure
                self._observer.attempt(kind, model, exc.code or "error", _since(started))
                if not await self.keys.failed(held.key, model, exc):
                    raise
                logger.info("SiliconFlow %s for %s moves to another key", kind, model)
                continue
            finally:
                await self.keys.release(held)
            self._observer.attempt(kind, model, "ok", _since(started))
            await self.keys.spent(held.key, model, images)
            return result, held.key
        assert exc is not None
        raise await self.keys.after_every_key_failed(model, exc)

    async def user_info(self, api_key: str) -> AccountInfo:
        """The account a key belongs to, and its balance (`GET /user/info`)."""
        url = f"{self.base_url}/user/info"
        headers = {"Authorization": f"Bearer {api_key}"}
        async with self._request("GET", url, headers=headers) as response:
            raw = await self._read(response)
            if response.status != 200:
                raise self._error_for(response, raw)
        return parse_user_info(raw)

    def note_retry(
        self, kind: str, model: str, exc: UpstreamError, attempt: int, wait: float
    ) -> None:
        self._observer.retry(kind, model, exc.code or "error")
        logger.info(
            "retrying SiliconFlow %s (attempt %d of %d) in %.1fs after: %s",
            kind,
            attempt + 1,
            self.retry.retries + 1,
            wait,
            exc.message,
        )

    async def download(self, url: str, *, model: str = "") -> tuple[bytes, str]:
        """The image behind one of SiliconFlow's (signed, short-lived) URLs, and its media type.

        The bytes are checked to be a whole image: a transfer cut short is retried like a
        dropped connection, never handed on.
        """
        return await self._with_retries("download", model, lambda: self._download_once(url))

    async def _with_retries(
        self, kind: str, model: str, attempt_once: Callable[[], Awaitable[T]]
    ) -> T:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                result = await attempt_once()
            except UpstreamError as exc:
                self._observer.attempt(kind, model, exc.code or "error", _since(started))
                wait = self.retry.delay(attempt, exc.retry_after)
                if not self.retry.allows(exc, attempt, paid=False) or wait > MAX_RETRY_WAIT:
                    # A download follows a generation SiliconFlow has billed.
                    raise exc.given_up() from None
                attempt += 1
                self.note_retry(kind, model, exc, attempt, wait)
                await asyncio.sleep(wait)
            else:
                self._observer.attempt(kind, model, "ok", _since(started))
                return result

    async def post(self, path: str, body: bytes, api_key: str) -> tuple[bytes, str | None]:
        """One `POST` of a JSON body to SiliconFlow's API with this key: the answer (at most
        MAX_ANSWER_BYTES) and its trace id. An answer other than 200 is raised as the
        `UpstreamError` it means; nothing is retried here."""
        url = f"{self.base_url}{path}"
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        async with self._request("POST", url, data=body, headers=headers) as response:
            raw = await self._read(response)
            if response.status != 200:
                raise self._error_for(response, raw)
            return raw, response.headers.get(TRACE_HEADER)

    async def fetch(self, url: str, *, what: str, limit: int) -> bytes:
        """The file behind one of SiliconFlow's signed result URLs, refused past `limit` bytes
        before it is all read. A 403 or 404 is a `ResultGoneError`: the URL has expired."""
        async with self._request("GET", url) as response:
            if response.status in (403, 404):
                raise ResultGoneError(
                    f"SiliconFlow's {what} URL answered {response.status}: the {what} is gone "
                    "(its signed URL expired before it was downloaded).",
                    upstream_status=response.status,
                )
            if response.status != 200:
                raise self._error_for(response, await self._read(response))
            # A body shorter than its Content-Length is aiohttp's payload error: a broken
            # transfer (UpstreamConnectionError), tried again as downloads are.
            return await self._read(response, limit, what)

    async def _download_once(self, url: str) -> tuple[bytes, str]:
        data = await self.fetch(url, what="image", limit=self._max_download_bytes)
        media_type = sniff_media_type(data)
        if media_type is None:
            raise UpstreamBadResponseError(
                "SiliconFlow's image URL did not return an image (unknown file format)."
            )
        if not looks_complete(data, media_type):
            raise UpstreamConnectionError("SiliconFlow's image arrived cut off.")
        return data, media_type

    def _request(self, method: str, url: str, **kwargs: Any) -> GuardedRequest:
        proxy = self._proxies.proxy_for(url)
        if proxy is not None:
            kwargs["proxy"] = proxy
        return GuardedRequest(self.session, method, url, self._timeout_seconds, kwargs)

    async def _read(
        self, response: aiohttp.ClientResponse, limit: int = MAX_ANSWER_BYTES, what: str = "answer"
    ) -> bytes:
        """The body, refused past `limit` bytes: by its Content-Length before a byte is read,
        else as it arrives (decompressed, so a small gzip is no way round it)."""
        if (response.content_length or 0) > limit:
            raise _too_large(what, limit, response.status)
        data = bytearray()
        try:
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                data += chunk
                if len(data) > limit:
                    raise _too_large(what, limit, response.status)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_failure(exc, self._timeout_seconds) from None
        return bytes(data)

    def _error_for(self, response: aiohttp.ClientResponse, raw: bytes) -> UpstreamError:
        return error_for(
            response.status,
            raw,
            response.headers,
            response.headers.get(TRACE_HEADER),
            url=str(response.url),
            redact=self._redact,
        )

    def _redact(self, text: str) -> str:
        for key in self.keys.secrets():
            text = text.replace(key, key_label(key))
        return text

    async def list_models(self, *, timeout: float = MODEL_LIST_TIMEOUT) -> list[str]:
        """The ids of the image models this account can use (`GET /models?type=image`).

        One attempt with a short deadline: the caller (discovery.py) falls back and tries
        again later, so nothing waits on SiliconFlow here.
        """
        url = f"{self.base_url}/models"
        # Listing costs nothing: any key not known to be invalid will do.
        headers = {"Authorization": f"Bearer {self.keys.key_for_reading()}"}
        request = self._request(
            "GET",
            url,
            params={"type": "image"},
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        )
        # Its timeout message names the short deadline, not the generations' one.
        request.timeout = timeout
        async with request as response:
            raw = await self._read(response)
            if response.status != 200:
                raise self._error_for(response, raw)
        return parse_model_ids(raw)


def _too_large(what: str, limit: int, status: int) -> UpstreamBadResponseError:
    return UpstreamBadResponseError(
        f"SiliconFlow's {what} is larger than allowed ({limit} bytes).", upstream_status=status
    )


def _since(started: float) -> float:
    return time.perf_counter() - started
