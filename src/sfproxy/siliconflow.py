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
    UpstreamAuthError,
    UpstreamBadResponseError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamPermissionError,
    UpstreamRateLimitError,
    UpstreamRejectedError,
    UpstreamServerError,
    UpstreamUnavailableError,
)
from .images import looks_complete, sniff_media_type
from .retries import MAX_RETRY_WAIT, RetryPolicy, retry_after_seconds
from .upstream_accounts import AccountInfo, account_label, key_label, parse_user_info
from .upstream_keys import KeyPool
from .upstream_transport import EnvironmentProxies, GuardedRequest, transport_failure
from .upstream_wire import (
    UpstreamImages,
    error_message,
    parse_images,
    parse_model_ids,
    says_balance_is_spent,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Builds the client's session from its timeouts: the seam tests use for the transport.
SessionFactory = Callable[[aiohttp.ClientTimeout], aiohttp.ClientSession]
TRACE_HEADER = "x-siliconcloud-trace-id"
# Listing models is a quick read; a SiliconFlow that takes longer is treated as down.
MODEL_LIST_TIMEOUT = 5.0


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
        model = str(payload.get("model", ""))
        images = payload.get("batch_size")
        body = orjson.dumps(payload)
        # Each failure takes a key (or its account) out of the choice, so this ends.
        exc: UpstreamError | None = None
        for _ in range(len(self.keys.keys)):
            held = await self.keys.choose(model, queued_at=queued_at)
            if sending is not None:
                sending()
            started = time.perf_counter()
            try:
                result = await self._generate_once(body, held.secret)
            except UpstreamError as failure:
                exc = failure
                self._observer.attempt("generate", model, exc.code or "error", _since(started))
                if not await self.keys.failed(held.key, model, exc):
                    raise
                logger.info("SiliconFlow call for %s moves to another key", model)
                continue
            finally:
                await self.keys.release(held)
            self._observer.attempt("generate", model, "ok", _since(started))
            await self.keys.spent(held.key, model, images if isinstance(images, int) else 1)
            return replace(result, account=account_label(held.key.account))
        # Every key was tried: the pool says why none is left (or, if a probe just brought
        # one back, the call ends with its last failure, for the corridor to retry).
        await self.keys.release(await self.keys.choose(model))
        assert exc is not None
        raise exc

    async def user_info(self, api_key: str) -> AccountInfo:
        """The account a key belongs to, and its balance (`GET /user/info`)."""
        url = f"{self.base_url}/user/info"
        headers = {"Authorization": f"Bearer {api_key}"}
        async with self._request("GET", url, headers=headers) as response:
            raw = await self._read(response)
            if response.status != 200:
                raise self._error_for(response.status, raw, response.headers, None)
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
                    exc.retries_exhausted = exc.retryable
                    raise
                attempt += 1
                self.note_retry(kind, model, exc, attempt, wait)
                await asyncio.sleep(wait)
            else:
                self._observer.attempt(kind, model, "ok", _since(started))
                return result

    async def _generate_once(self, body: bytes, api_key: str) -> UpstreamImages:
        url = f"{self.base_url}/images/generations"
        headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
        }
        async with self._request("POST", url, data=body, headers=headers) as response:
            raw = await self._read(response)
            trace_id = response.headers.get(TRACE_HEADER)
            if response.status != 200:
                raise self._error_for(response.status, raw, response.headers, trace_id)
        return parse_images(raw, trace_id)

    async def _download_once(self, url: str) -> tuple[bytes, str]:
        async with self._request("GET", url) as response:
            if response.status != 200:
                raw = await self._read(response)
                if response.status == 404 or response.status == 403:
                    raise UpstreamBadResponseError(
                        f"SiliconFlow's image URL answered {response.status}: the image is "
                        "gone (its signed URL may have expired).",
                        upstream_status=response.status,
                    )
                raise self._error_for(response.status, raw, response.headers, None)
            if (response.content_length or 0) > self._max_download_bytes:
                raise UpstreamBadResponseError("SiliconFlow's image is larger than allowed.")
            data = await self._read(response)
        if len(data) > self._max_download_bytes:
            raise UpstreamBadResponseError("SiliconFlow's image is larger than allowed.")
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

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        try:
            return await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_failure(exc, self._timeout_seconds) from None

    def _error_for(
        self, status: int, raw: bytes, headers: Any, trace_id: str | None
    ) -> UpstreamError:
        message, upstream_code = error_message(raw)
        message = self._redact(message)
        logger.warning(
            "SiliconFlow answered %d (code %s, trace %s): %s",
            status,
            upstream_code,
            trace_id,
            message,
        )
        detail = f" (SiliconFlow code {upstream_code})" if upstream_code is not None else ""
        # Only an answer that says the work was not done (a refusal, 429, 503 overloaded)
        # proves nothing was billed; a 500, 502 or 504 may come after the image was made.
        unsure = status >= 500 and status != 503
        common: dict[str, Any] = {
            "upstream_status": status,
            "trace_id": trace_id,
            "maybe_billed": unsure,
        }
        if status == 401:
            return UpstreamAuthError(
                "SiliconFlow rejected this server's upstream API key (SILICONFLOW_API_KEY); "
                "the server operator must check it.",
                **common,
            )
        if status == 403:
            refused = UpstreamPermissionError(
                f"SiliconFlow refused access{detail}: {message}", **common
            )
            refused.insufficient_balance = says_balance_is_spent(message)
            return refused
        if status == 404:
            return UpstreamBadResponseError(
                f"SiliconFlow answered 404 for {self.base_url}/images/generations: check SF_BASE.",
                **common,
            )
        if status == 429:
            return UpstreamRateLimitError(
                f"SiliconFlow's rate limit was reached: {message}",
                retry_after=retry_after_seconds(headers),
                **common,
            )
        if status in (503, 504):
            return UpstreamUnavailableError(
                f"SiliconFlow is unavailable ({status}){detail}: {message}",
                retry_after=retry_after_seconds(headers),
                **common,
            )
        if status >= 500:
            return UpstreamServerError(
                f"SiliconFlow failed ({status}){detail}: {message}", **common
            )
        return UpstreamRejectedError(
            f"SiliconFlow rejected the request{detail}: {message}",
            param="model" if upstream_code == 20012 else None,
            **common,
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
                trace_id = response.headers.get(TRACE_HEADER)
                raise self._error_for(response.status, raw, response.headers, trace_id)
        return parse_model_ids(raw)


def _since(started: float) -> float:
    return time.perf_counter() - started
