"""The key pool as operators see it (`GET /admin/upstream`, `sfproxy upstream`): accounts by
label, their keys' labels and states, balances, and the budgets and calls in flight of the
models asked about. Never a key, never an account id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .upstream_accounts import account_label
from .upstream_keys import KeyPool


async def pool_snapshot(pool: KeyPool, models: Sequence[str] = ()) -> dict[str, Any]:
    """For each of `models` with a budget, the images of the last minute against it; with a
    cap on calls in flight, the calls in flight now (every instance's, with Redis)."""
    cooling, removals = await pool.state.cooling(), await pool.state.removals()
    budgets = {model: limit for model in models if (limit := pool.budget(model))}
    caps = {model: cap for model in models if (cap := pool.max_in_flight(model))}
    ids = list(dict.fromkeys(key.account for key in pool.keys))
    in_flight = {model: await pool.slots.counts(model, ids) for model in caps}
    accounts: dict[str, dict[str, Any]] = {}
    for key in pool.keys:
        if key.account not in accounts:
            accounts[key.account] = {
                "account": account_label(key.account),
                # False: /user/info could not be read, so the key stands alone for now.
                "grouped": key.account != key.label,
                "cooling_seconds": round(cooling[key.account], 1)
                if key.account in cooling
                else None,
                "balance": pool.balances.get(key.account),
                "budgets": {
                    model: {
                        "limit": limit,
                        "used": limit - await pool.budget_left(key.account, model, limit),
                    }
                    for model, limit in budgets.items()
                },
                "calls_in_flight": {
                    model: {"limit": cap, "now": in_flight[model][key.account]}
                    for model, cap in caps.items()
                },
                "keys": [],
            }
        reasons = sorted(removals.get(key.label, ()))
        state = "out" if reasons else "cooling" if key.account in cooling else "ok"
        accounts[key.account]["keys"].append(
            {"label": key.label, "state": state, "reasons": reasons, "in_flight": key.in_flight}
        )
    return {"site": pool.site, "probed": pool.shared, "accounts": list(accounts.values())}
