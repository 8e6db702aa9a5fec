"""The SiliconFlow client's transport: proxies from the environment, and requests whose
failures arrive as our `UpstreamError`s, each saying whether SiliconFlow may have billed."""

from __future__ import annotations

import urllib.request
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .errors import (
    UpstreamBadResponseError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamTimeoutError,
)


class EnvironmentProxies:
    """HTTP(S)_PROXY and NO_PROXY, read once, decided once per host."""

    def __init__(self) -> None:
        self._proxies = urllib.request.getproxies_environment()
        self._by_origin: dict[tuple[str, str], str | None] = {}

    def proxy_for(self, url: str) -> str | None:
        if not self._proxies:
            return None
        parts = urlsplit(url)
        origin = (parts.scheme, parts.netloc)
        if origin not in self._by_origin:
            bypass = urllib.request.proxy_bypass(parts.netloc)
            self._by_origin[origin] = None if bypass else self._proxies.get(parts.scheme)
        return self._by_origin[origin]


class GuardedRequest:
    """`session.request(...)` as a context manager that speaks only `UpstreamError`s."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        timeout: float,
        kwargs: dict[str, Any],
    ) -> None:
        self._context = session.request(method, url, **kwargs)
        self.timeout = timeout

    async def __aenter__(self) -> aiohttp.ClientResponse:
        try:
            return await self._context.__aenter__()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_failure(exc, self.timeout) from None

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._context.__aexit__(*exc_info)


def transport_failure(exc: BaseException, timeout: float) -> UpstreamError:
    """Our error for aiohttp's (or a timeout), wherever in a call it struck."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamConnectionError(
            "Could not connect to SiliconFlow (connect timeout).", maybe_billed=False
        )
    if isinstance(exc, TimeoutError):
        return UpstreamTimeoutError(f"SiliconFlow did not answer within {timeout:g} s.")
    if isinstance(exc, aiohttp.ClientConnectorError):
        # Refused or unreachable: the request was never sent, so nothing can have been billed.
        return UpstreamConnectionError(
            f"Could not connect to SiliconFlow ({exc.os_error.__class__.__name__}).",
            maybe_billed=False,
        )
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return UpstreamConnectionError(
            f"The connection to SiliconFlow failed ({exc.__class__.__name__})."
        )
    return UpstreamBadResponseError(
        f"SiliconFlow's answer could not be read ({exc.__class__.__name__})."
    )
