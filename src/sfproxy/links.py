"""Links handed to clients: the base URL of this service as the client's browser can reach it.

`PUBLIC_BASE_URL` wins. Without it, links follow the request: its scheme and `Host`, or, from a
peer in `FORWARDED_ALLOW_IPS` (a reverse proxy), `X-Forwarded-Proto`, `X-Forwarded-Host` and
`X-Forwarded-Prefix`. Anyone else's forwarding headers are ignored: a client could otherwise put
any host into the links other users' chats show.

A relay that runs beside the service (Open WebUI or LiteLLM in Docker) reaches it as
`http://sfproxy:8000`, a name its users' browsers cannot resolve: `link_warning` tells the
operator to set `PUBLIC_BASE_URL` whenever the service listens beyond loopback.
"""

from __future__ import annotations

import ipaddress
import re

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from .settings import Settings

# The scope key saying the TCP peer is a trusted proxy (set before X-Forwarded-For replaces
# the client address with the one the proxy names).
TRUSTED_PEER = "sfproxy.trusted_peer"

# Forwarded values end up inside URLs and Markdown: anything unusual is ignored.
_SCHEME = re.compile(r"^https?$")
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_PREFIX = re.compile(r"^/[A-Za-z0-9._~/\-]*$")


class TrustedProxies:
    """The peers whose forwarding headers are believed: addresses, networks, or `*`."""

    def __init__(self, entries: list[str]) -> None:
        self.everyone = "*" in entries
        self.networks = [
            ipaddress.ip_network(entry, strict=False) for entry in entries if entry != "*"
        ]

    def __contains__(self, host: str | None) -> bool:
        if self.everyone:
            return True
        if not host:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class ForwardedHeaders:
    """ASGI middleware: uvicorn's X-Forwarded-For/-Proto handling, for trusted peers only, and a
    note in the scope of whether the peer was one (for `public_base_url`).

    Run inside the app rather than by uvicorn, so that the peer is still known here, and so
    in-process tests see what production does.
    """

    def __init__(self, app: ASGIApp, *, trusted: list[str]) -> None:
        self.trusted = TrustedProxies(trusted)
        self.app = ProxyHeadersMiddleware(app, trusted_hosts=trusted)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = scope.get("client")
            scope[TRUSTED_PEER] = (peer[0] if peer else None) in self.trusted
        await self.app(scope, receive, send)  # type: ignore[arg-type]


def public_base_url(request: Request, configured: str | None) -> str:
    """The base of URLs handed to clients: PUBLIC_BASE_URL, else what the client used."""
    if configured:
        return configured
    headers = request.headers
    trusted = bool(request.scope.get(TRUSTED_PEER, False))
    # X-Forwarded-Proto's already, for a trusted peer (ProxyHeadersMiddleware); it allows ws.
    scheme = request.url.scheme if request.url.scheme in ("http", "https") else "http"
    forwarded_host = _first(headers.get("x-forwarded-host"), _HOST) if trusted else None
    host = forwarded_host or _first(headers.get("host"), _HOST) or request.url.netloc
    prefix = (_first(headers.get("x-forwarded-prefix"), _PREFIX) or "") if trusted else ""
    return f"{scheme}://{host}{prefix.rstrip('/')}"


def _first(value: str | None, pattern: re.Pattern[str]) -> str | None:
    if not value:
        return None
    first = value.split(",", 1)[0].strip()
    return first if pattern.match(first) else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def link_warning(settings: Settings) -> str | None:
    """Why image links may not open for the users of a relay, or None when they will."""
    if settings.public_base_url or settings.image_store == "off":
        return None
    if settings.image_public_base_url:
        # The store's own public address is in every link.
        return None
    if is_loopback(settings.host):
        return None
    return (
        f"PUBLIC_BASE_URL is not set and the service listens on {settings.host}: image links "
        "are built from each request's Host header (or X-Forwarded-Host from a proxy in "
        "FORWARDED_ALLOW_IPS). A relay in Docker (Open WebUI, LiteLLM, NewAPI) then hands its "
        "users links such as http://sfproxy:8000/v1/files/images/..., which their browsers "
        "cannot open. Set PUBLIC_BASE_URL to the address users' browsers reach this service at."
    )
