"""What SiliconFlow charges per image (or video), by site and model: the ledger's costs.

SiliconFlow bills per item made, at a price that depends on the model and the site, in the
site's currency: CNY on siliconflow.cn, USD on siliconflow.com. The built-in table holds the
prices SiliconFlow published in 2026; `PRICES_JSON` overrides or adds entries for the site the
service uses. A model in neither is *unknown*: its cost is recorded as unknown (NULL), never as
zero, and a budget cannot be reserved for it (see the README's "Budgets").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from .catalogue import Site

CURRENCIES: dict[Site, str] = {"cn": "CNY", "com": "USD"}

_D = Decimal
BUILTIN_PRICES: dict[Site, dict[str, Decimal]] = {
    "cn": {
        "Kwai-Kolors/Kolors": _D("0"),
        "Qwen/Qwen-Image": _D("0.3"),
        "Qwen/Qwen-Image-Edit": _D("0.3"),
        "Qwen/Qwen-Image-Edit-2509": _D("0.3"),
        "Tongyi-MAI/Z-Image": _D("0.3"),
        "Tongyi-MAI/Z-Image-Turbo": _D("0.1"),
        "baidu/ERNIE-Image-Turbo": _D("0.11"),
        # Per video (issue 14's Wan models).
        "Wan-AI/Wan2.2-T2V-A14B": _D("2"),
        "Wan-AI/Wan2.2-I2V-A14B": _D("2"),
    },
    "com": {
        "black-forest-labs/FLUX.2-pro": _D("0.03"),
        "black-forest-labs/FLUX.2-flex": _D("0.06"),
        "Tongyi-MAI/Z-Image-Turbo": _D("0.005"),
    },
}


@dataclass(frozen=True, slots=True)
class Price:
    """The price of one image (or video) of a model."""

    amount: Decimal
    currency: str

    def of(self, items: int) -> Decimal:
        return self.amount * items


class Prices:
    def __init__(self, site: Site, overrides: Mapping[str, Decimal | None] | None = None) -> None:
        self.site = site
        self.currency = CURRENCIES[site]
        table: dict[str, Decimal | None] = dict(BUILTIN_PRICES[site])
        # An override of None makes a built-in price unknown again (say, after a change).
        table.update(overrides or {})
        self._table = table

    def of(self, model: str) -> Price | None:
        """The model's price per item on this site; None when it is not known."""
        amount = self._table.get(model)
        return None if amount is None else Price(amount, self.currency)

    def table(self) -> dict[str, Decimal]:
        """Every known price on this site (for /admin and the docs)."""
        return {model: amount for model, amount in self._table.items() if amount is not None}
