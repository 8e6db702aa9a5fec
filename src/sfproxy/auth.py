"""Proxy access keys: wholly separate from the upstream SILICONFLOW_API_KEY.

A key is accepted from `Authorization: Bearer`, the `x-api-key` or `api-key` headers, or the
query parameters `access_token`, `key`, `token` and `apikey` (the original accepted them, and
some clients can only put a key in the URL). The client's credential is never sent upstream.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from starlette.requests import HTTPConnection

from .errors import AuthenticationError

HEADER_NAMES = ("x-api-key", "api-key")
QUERY_NAMES = ("access_token", "key", "token", "apikey")
ANONYMOUS = "anonymous"


def key_label(key: str) -> str:
    """A short, non-reversible name for a key, for logs, metrics and limits."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class Client:
    """Who made a request: `label` is a key's label (a database key's id, `ck_…`), or
    "anonymous" on a public API. Budgets are a database key's, in the site's currency."""

    label: str
    key: str | None = None
    daily_budget: Decimal | None = None
    monthly_budget: Decimal | None = None


class ClientKeys:
    def __init__(self, keys: Iterable[str]) -> None:
        # Digests have one length, so comparing them takes the same time whatever is sent.
        self._digests = {hashlib.sha256(key.encode()).digest(): key for key in keys}

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def authenticate(self, connection: HTTPConnection) -> Client:
        if not self.required:
            return Client(label=ANONYMOUS)
        presented = list(_credentials(connection))
        for credential in presented:
            key = self._match(credential)
            if key is not None:
                return Client(label=key_label(key), key=key)
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
