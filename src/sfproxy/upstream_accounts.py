"""What SiliconFlow tells about accounts: `/user/info`, free models by site, and the labels
that name keys and accounts in logs and metrics without giving them away."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from .errors import UpstreamBadResponseError

# Free models by site: an account without balance still makes these (siliconflow-api.md).
FREE_MODELS: dict[str, frozenset[str]] = {
    "cn": frozenset({"Kwai-Kolors/Kolors"}),
    "com": frozenset(),
}


def is_free_model(model: str, site: str) -> bool:
    return model in FREE_MODELS.get(site, frozenset())


def account_label(account: str) -> str:
    """A short name for an account, for metrics and logs."""
    return "acct-" + hashlib.sha256(account.encode()).hexdigest()[:8]


def key_label(key: str) -> str:
    """A short name for a key that cannot be turned back into it."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class AccountInfo:
    id: str
    # `totalBalance`; None when SiliconFlow did not say.
    balance: float | None


def parse_user_info(raw: bytes) -> AccountInfo:
    """The account and balance in SiliconFlow's `/user/info` answer (balances are strings)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamBadResponseError("SiliconFlow's /user/info was not JSON.") from None
    data = body.get("data") if isinstance(body, dict) else None
    account = data.get("id") if isinstance(data, dict) else None
    if not isinstance(account, str | int) or isinstance(account, bool) or account == "":
        raise UpstreamBadResponseError("SiliconFlow's /user/info named no account.")
    assert isinstance(data, dict)
    balance = data.get("totalBalance", data.get("balance"))
    try:
        amount = float(balance) if isinstance(balance, str | int | float) else None
    except ValueError:
        amount = None
    return AccountInfo(id=str(account), balance=amount)


# Reads `/user/info` with a key; raises `UpstreamError`.
UserInfoReader = Callable[[str], Awaitable[AccountInfo]]
