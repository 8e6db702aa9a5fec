"""What choosing a key costs the CPU, measured directly: `KeyPool.choose` and `release`, in
this process, with one key and with the benchmark's pool of 4 keys in 2 accounts.

The latency runs beside it measure the whole service, where a few microseconds vanish in the
noise of a shared machine; this says how many there are.
"""

from __future__ import annotations

import asyncio
import time
from statistics import median

from sfproxy.upstream_keys import KeyPool

MODEL = "Qwen/Qwen-Image"
CALLS = 20_000
REPEATS = 5


async def _per_call_us(pool: KeyPool) -> float:
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(CALLS):
            await pool.release(await pool.choose(MODEL))
        timings.append((time.perf_counter() - started) / CALLS * 1e6)
    return median(timings)


async def choice_cost_us(accounts: dict[str, list[str]]) -> dict[str, float]:
    """Microseconds per choose + release: one key, the pool, and the pool with a cap on calls
    in flight (UPSTREAM_MAX_IN_FLIGHT, in-memory slots)."""
    keys = [key for account_keys in accounts.values() for key in account_keys]
    pools = {
        "one_key": KeyPool(keys[:1]),
        "pool": KeyPool(keys),
        "pool_capped": KeyPool(keys, max_in_flight=lambda model: 64),
    }
    for name in ("pool", "pool_capped"):
        # As /user/info groups them at start.
        for key in pools[name].keys:
            key.account = next(a for a, members in accounts.items() if key.secret in members)
    return {name: round(await _per_call_us(pool), 2) for name, pool in pools.items()}


if __name__ == "__main__":
    from .scenarios import POOL_ACCOUNTS

    print(asyncio.run(choice_cost_us(POOL_ACCOUNTS)))
