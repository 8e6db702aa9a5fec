"""What the fake SiliconFlow billed: a price per model, and running totals.

SiliconFlow bills each image it makes, at the model's price on the site. The fake does the same
for every image it returns from a generation, and for every video job that succeeds (a failed
one costs nothing), at the price of `prices` (default: the built-in table of the proxy's
`prices.py` for the fake's site), so a test can check that the proxy's ledger adds up to exactly
what the upstream billed, in all and per upstream account (`accounts` in the totals):

    fake.billing.set_prices({"Qwen/Qwen-Image": "0.5"})
    fake.billing.totals()  # {"currency": "CNY", "total": "1.5", "models": {...}}

Tests in another process read the same at `GET /_fake/billing` (and reset it with `DELETE`).
A model with no price is billed, but its amount is unknown: it shows under `unpriced`.
Account balances are apart from this (an account's `image_price`, see accounts.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from ..prices import BUILTIN_PRICES, CURRENCIES
from .config import Site


@dataclass(slots=True)
class _Billed:
    images: int = 0
    amount: Decimal = Decimal(0)


class FakeBilling:
    """Thread-safe: the server bills on its loop while tests read from theirs."""

    def __init__(self, site: Callable[[], Site]) -> None:
        self._site = site
        self._lock = threading.Lock()
        # Over the site's built-in prices; None makes a model's price unknown.
        self._prices: dict[str, Decimal | None] = {}
        self._billed: dict[str, _Billed] = {}
        self._unpriced: dict[str, int] = {}
        self._accounts: dict[str, _Billed] = {}

    def price(self, model: str) -> Decimal | None:
        with self._lock:
            return self._price(model)

    def _price(self, model: str) -> Decimal | None:
        if model in self._prices:
            return self._prices[model]
        return BUILTIN_PRICES[self._site()].get(model)

    def set_prices(self, prices: Mapping[str, Decimal | str | int | None]) -> None:
        """Prices per image by model, over the built-in ones (all or nothing)."""
        checked = {str(model): _amount(value) for model, value in prices.items()}
        with self._lock:
            self._prices.update(checked)

    def bill(self, model: str, images: int, account: str | None = None) -> None:
        """Bill `images` items of `model`, to `account` (the fake account's id) if given."""
        with self._lock:
            price = self._price(model)
            if price is None:
                self._unpriced[model] = self._unpriced.get(model, 0) + images
                return
            billed = self._billed.setdefault(model, _Billed())
            billed.images += images
            billed.amount += price * images
            if account is not None:
                by_account = self._accounts.setdefault(account, _Billed())
                by_account.images += images
                by_account.amount += price * images

    def billed_account(self, account: str) -> Decimal:
        """The amount billed to one account so far (priced items only)."""
        with self._lock:
            billed = self._accounts.get(account)
            return billed.amount if billed is not None else Decimal(0)

    def billed(self, model: str) -> Decimal:
        """The amount billed for the model so far (0 when none of its images were made)."""
        with self._lock:
            billed = self._billed.get(model)
            return billed.amount if billed is not None else Decimal(0)

    def total(self) -> Decimal:
        with self._lock:
            return sum((billed.amount for billed in self._billed.values()), Decimal(0))

    def images(self, model: str) -> int:
        """Images of the model billed so far, priced or not."""
        with self._lock:
            billed = self._billed.get(model)
            return (billed.images if billed is not None else 0) + self._unpriced.get(model, 0)

    def reset(self) -> None:
        """Totals back to zero; prices stay."""
        with self._lock:
            self._billed.clear()
            self._unpriced.clear()
            self._accounts.clear()

    def clear_prices(self) -> None:
        with self._lock:
            self._prices.clear()

    def totals(self) -> dict[str, Any]:
        """Amounts as strings, so that no float rounds them on the way to a test."""
        with self._lock:
            site = self._site()
            return {
                "currency": CURRENCIES[site],
                "total": str(sum((b.amount for b in self._billed.values()), Decimal(0))),
                "models": {
                    model: {"images": billed.images, "amount": str(billed.amount)}
                    for model, billed in self._billed.items()
                },
                "unpriced": dict(self._unpriced),
                "accounts": {
                    account: {"images": billed.images, "amount": str(billed.amount)}
                    for account, billed in self._accounts.items()
                },
                "prices": {
                    model: str(price) if price is not None else None
                    for model, price in {**BUILTIN_PRICES[site], **self._prices}.items()
                },
            }


def _amount(value: Decimal | str | int | None) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | str | int):
        raise ValueError("a price must be a decimal string, an integer or null")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a price: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"not a price: {value!r}")
    return amount
