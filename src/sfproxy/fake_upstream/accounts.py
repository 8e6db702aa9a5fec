"""SiliconFlow accounts in the fake: keys, balances, per-model limits, and `/v1/user/info`.

With no account configured the fake behaves as it always has: one key (`FakeConfig.api_key`),
or any key when that is None, with no limits. Once an account exists, only the keys of
accounts are accepted, and each account answers as SiliconFlow does: 429 past its images per
minute or per day for a model (counted per account, so its keys share them), 403 (code 30001)
for a paid model when its balance is spent, 403 for a model it is refused, 401 for a revoked key.

    fake.accounts.add("acct-a", keys=["sk-a1", "sk-a2"], images_per_minute=2)
    fake.accounts.set_balance("acct-a", 0)
    fake.accounts.revoke("sk-a2")

Tests in another process reach the same under `/_fake/accounts` and `/_fake/keys`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .control import CONTROL_PREFIX, control_error, json_object
from .responses import api_error, json_response, unauthorized

USER_INFO_PATH = "/v1/user/info"
# Free on siliconflow.cn, so an empty account still makes them (siliconflow-api.md).
FREE_MODELS = frozenset({"Kwai-Kolors/Kolors"})
MINUTE = 60.0
DAY = 86400.0
INSUFFICIENT_BALANCE = {
    "code": 30001,
    "message": "Sorry, your account balance is insufficient",
    "data": None,
}
RATE_LIMITED = (
    "Request was rejected due to rate limiting. "
    "If you want more, please contact contact@siliconflow.cn"
)
# Stands for "the fake's single configured key" when no accounts exist.
DEFAULT_ACCOUNT_ID = "fake-account"


@dataclass(slots=True)
class FakeAccount:
    id: str
    name: str = ""
    email: str = ""
    balance: float = 100.0
    charge_balance: float = 0.0
    # None: unlimited. Per model, `model_limits` wins: {model: {"ipm": n, "ipd": n}}.
    images_per_minute: int | None = None
    images_per_day: int | None = None
    model_limits: dict[str, dict[str, int | None]] = field(default_factory=dict)
    # What a paid image costs; 0 leaves the balance alone.
    image_price: float = 0.0
    refused_models: set[str] = field(default_factory=set)
    # Per model: times and amounts of images made, for the per-minute and per-day windows.
    made: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    # Generations this account has in flight now, and the most it had at once.
    in_flight: int = 0
    peak_in_flight: int = 0

    def limits(self, model: str) -> tuple[int | None, int | None]:
        own = self.model_limits.get(model, {})
        return own.get("ipm", self.images_per_minute), own.get("ipd", self.images_per_day)

    def used(self, model: str, window: float, now: float) -> tuple[int, float]:
        """Images made in the window, and when the oldest of them leaves it."""
        entries = self.made.get(model, deque())
        while entries and entries[0][0] <= now - DAY:
            entries.popleft()
        inside = [(at, n) for at, n in entries if at > now - window]
        oldest = inside[0][0] + window - now if inside else 0.0
        return sum(n for _, n in inside), oldest

    def user_info(self) -> dict[str, Any]:
        total = self.balance + self.charge_balance
        return {
            "code": 20000,
            "message": "OK",
            "status": True,
            "data": {
                "id": self.id,
                "name": self.name,
                "image": "",
                "email": self.email,
                "isAdmin": False,
                "balance": f"{self.balance:.4f}",
                "status": "normal",
                "introduction": "",
                "role": "",
                "chargeBalance": f"{self.charge_balance:.4f}",
                "totalBalance": f"{total:.4f}",
            },
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "balance": self.balance,
            "charge_balance": self.charge_balance,
            "images_per_minute": self.images_per_minute,
            "images_per_day": self.images_per_day,
            "model_limits": self.model_limits,
            "image_price": self.image_price,
            "refused_models": sorted(self.refused_models),
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
        }


_SETTABLE = {
    "name",
    "email",
    "balance",
    "charge_balance",
    "images_per_minute",
    "images_per_day",
    "model_limits",
    "image_price",
    "refused_models",
}


class FakeAccounts:
    """Accounts and their keys; thread-safe, since tests steer it from their own thread."""

    def __init__(self, default_key: Callable[[], str | None]) -> None:
        self._default_key = default_key
        self._lock = threading.Lock()
        self._accounts: dict[str, FakeAccount] = {}
        # Key -> account id; revoked keys stay known, so restoring one puts it back.
        self._keys: dict[str, str] = {}
        self._revoked: set[str] = set()

    def add(self, account_id: str, keys: Iterable[str] = (), **fields: Any) -> FakeAccount:
        with self._lock:
            account = self._accounts.get(account_id) or FakeAccount(id=account_id)
            _apply(account, fields)
            self._accounts[account_id] = account
            for key in keys:
                self._keys[key] = account_id
                self._revoked.discard(key)
            return account

    def update(self, account_id: str, **fields: Any) -> FakeAccount:
        with self._lock:
            account = self._account(account_id)
            _apply(account, fields)
            return account

    def set_balance(self, account_id: str, balance: float) -> None:
        self.update(account_id, balance=balance, charge_balance=0.0)

    def add_key(self, key: str, account_id: str) -> None:
        with self._lock:
            self._account(account_id)
            self._keys[key] = account_id
            self._revoked.discard(key)

    def revoke(self, key: str) -> None:
        with self._lock:
            if key not in self._keys:
                raise ValueError("unknown key")
            self._revoked.add(key)

    def restore(self, key: str) -> None:
        with self._lock:
            self._revoked.discard(key)

    def reset_counters(self, account_id: str | None = None) -> None:
        with self._lock:
            for account in self._accounts.values():
                if account_id is None or account.id == account_id:
                    account.made.clear()
                    account.peak_in_flight = account.in_flight

    def clear(self) -> None:
        """Back to the default: no accounts, the single configured key."""
        with self._lock:
            self._accounts.clear()
            self._keys.clear()
            self._revoked.clear()

    def to_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    **account.to_json(),
                    "keys": sorted(k for k, a in self._keys.items() if a == account.id),
                    "revoked": sorted(k for k in self._revoked if self._keys.get(k) == account.id),
                }
                for account in self._accounts.values()
            ]

    def authorize(self, authorization: str | None) -> FakeAccount | None:
        """The account a request's Bearer key belongs to; None for an unknown or revoked key."""
        with self._lock:
            if not self._accounts:
                expected = self._default_key()
                if expected is not None and authorization != f"Bearer {expected}":
                    return None
                return FakeAccount(id=DEFAULT_ACCOUNT_ID)
            scheme, _, key = (authorization or "").partition(" ")
            if scheme != "Bearer" or key in self._revoked or key not in self._keys:
                return None
            return self._accounts[self._keys[key]]

    @contextmanager
    def calling(self, account: FakeAccount) -> Iterator[None]:
        """Count a generation in flight for its account while it is made."""
        with self._lock:
            account.in_flight += 1
            account.peak_in_flight = max(account.peak_in_flight, account.in_flight)
        try:
            yield
        finally:
            with self._lock:
                account.in_flight -= 1

    def admit(self, account: FakeAccount, model: str, images: int) -> web.Response | None:
        """Count a generation against the account, or SiliconFlow's refusal of it."""
        with self._lock:
            if model in account.refused_models:
                return api_error(403)
            paid = model not in FREE_MODELS
            if paid and account.balance + account.charge_balance <= 0:
                return json_response(INSUFFICIENT_BALANCE, status=403)
            now = time.time()
            per_minute, per_day = account.limits(model)
            for limit, window, name in ((per_minute, MINUTE, "IPM"), (per_day, DAY, "IPD")):
                if limit is None:
                    continue
                used, frees_in = account.used(model, window, now)
                if used + images > limit:
                    return api_error(
                        429,
                        body=_rate_limited(name),
                        retry_after=max(1, round(frees_in + 0.5)),
                    )
            account.made.setdefault(model, deque()).append((now, images))
            if paid and account.image_price:
                account.balance -= account.image_price * images
            return None

    def _account(self, account_id: str) -> FakeAccount:
        account = self._accounts.get(account_id)
        if account is None:
            raise ValueError(f"unknown account {account_id!r}")
        return account


def _rate_limited(limit: str) -> str:
    return orjson.dumps({"message": RATE_LIMITED, "data": f"Rate limit exceeded: {limit}"}).decode()


def _apply(account: FakeAccount, fields: dict[str, Any]) -> None:
    unknown = set(fields) - _SETTABLE
    if unknown:
        raise ValueError(f"unknown account fields: {sorted(unknown)}")
    for name, value in fields.items():
        if name in ("balance", "charge_balance", "image_price"):
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError(f"{name} must be a number")
            value = float(value)
        elif name in ("images_per_minute", "images_per_day"):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an integer or null")
        elif name == "refused_models":
            value = set(value)
        elif name == "model_limits":
            if not isinstance(value, dict):
                raise ValueError("model_limits must be an object of model -> {ipm, ipd}")
            value = {str(model): dict(limits) for model, limits in value.items()}
        setattr(account, name, value)


def add_account_routes(app: web.Application, accounts: FakeAccounts) -> None:
    routes = _AccountRoutes(accounts)
    router = app.router
    router.add_get(USER_INFO_PATH, routes.user_info)
    router.add_get(f"{CONTROL_PREFIX}/accounts", routes.list_accounts)
    router.add_post(f"{CONTROL_PREFIX}/accounts", routes.add_account)
    router.add_delete(f"{CONTROL_PREFIX}/accounts", routes.clear_accounts)
    router.add_patch(f"{CONTROL_PREFIX}/accounts/{{id}}", routes.update_account)
    router.add_delete(f"{CONTROL_PREFIX}/accounts/{{id}}/counters", routes.reset_counters)
    router.add_post(f"{CONTROL_PREFIX}/keys", routes.add_key)
    router.add_post(f"{CONTROL_PREFIX}/keys/revoke", routes.revoke_key)
    router.add_post(f"{CONTROL_PREFIX}/keys/restore", routes.restore_key)


class _AccountRoutes:
    def __init__(self, accounts: FakeAccounts) -> None:
        self._accounts = accounts

    async def user_info(self, request: web.Request) -> web.Response:
        account = self._accounts.authorize(request.headers.get("Authorization"))
        if account is None:
            return unauthorized()
        return json_response(account.user_info())

    async def list_accounts(self, request: web.Request) -> web.Response:
        return json_response(self._accounts.to_json())

    async def add_account(self, request: web.Request) -> web.Response:
        """Body: {"id", "keys"?: [...], and any account field}."""
        data = await json_object(request)
        account_id, keys = data.pop("id", None), data.pop("keys", [])
        if not isinstance(account_id, str) or not isinstance(keys, list):
            raise control_error("id must be a string and keys a list")
        return _answer(lambda: self._accounts.add(account_id, keys, **data).to_json(), 201)

    async def clear_accounts(self, request: web.Request) -> web.Response:
        self._accounts.clear()
        return json_response([])

    async def update_account(self, request: web.Request) -> web.Response:
        data = await json_object(request)
        account_id = request.match_info["id"]
        return _answer(lambda: self._accounts.update(account_id, **data).to_json())

    async def reset_counters(self, request: web.Request) -> web.Response:
        self._accounts.reset_counters(request.match_info["id"])
        return json_response({"reset": request.match_info["id"]})

    async def add_key(self, request: web.Request) -> web.Response:
        data = await json_object(request)
        key, account_id = str(data.get("key", "")), str(data.get("account", ""))
        return _answer(lambda: self._accounts.add_key(key, account_id), 201)

    async def revoke_key(self, request: web.Request) -> web.Response:
        key = str((await json_object(request)).get("key", ""))
        return _answer(lambda: self._accounts.revoke(key))

    async def restore_key(self, request: web.Request) -> web.Response:
        key = str((await json_object(request)).get("key", ""))
        return _answer(lambda: self._accounts.restore(key))


def _answer(change: Callable[[], Any], status: int = 200) -> web.Response:
    try:
        result = change()
    except (ValueError, TypeError) as error:
        raise control_error(str(error)) from None
    return json_response(result if result is not None else {"ok": True}, status=status)
