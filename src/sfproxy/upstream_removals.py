"""Why a SiliconFlow key is out of the pool, and what the pool answers when none can serve.

A key is out as *invalid* (401), for *paid models* when its balance is spent (403 with the
insufficient-balance message: free models keep working), or for one model SiliconFlow refuses
it (another 403). The reasons are what the pool's state keeps, per key label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .errors import NoUpstreamKeyError, UpstreamError, UpstreamRateLimitError

if TYPE_CHECKING:
    from .upstream_keys import UpstreamKey

INVALID = "invalid"
NO_BALANCE = "no_balance"
REFUSED = "refused:"


def is_out(reasons: frozenset[str] | None, model: str, paid: bool) -> bool:
    """Whether a key with these removal reasons may not serve the model."""
    if not reasons:
        return False
    return INVALID in reasons or (paid and NO_BALANCE in reasons) or (REFUSED + model) in reasons


def reason_text(reasons: frozenset[str], model: str, paid: bool) -> str:
    if INVALID in reasons:
        return "invalid (SiliconFlow answered 401)"
    if paid and NO_BALANCE in reasons:
        return "out of balance for paid models"
    return f"refused {model} by SiliconFlow (403)"


def removal_summary(removals: Mapping[str, frozenset[str]]) -> str:
    """ "; 1 invalid; 2 no_balance": the keys out, by reason, for log lines and /readyz."""
    out = Counter(reason.split(":")[0] for reasons in removals.values() for reason in reasons)
    return "".join(f"; {n} {why}" for why, n in sorted(out.items()))


def none_can_serve(
    keys: Sequence[UpstreamKey],
    model: str,
    usable: Sequence[UpstreamKey],
    cooling: Mapping[str, float],
    removals: Mapping[str, frozenset[str]],
    *,
    paid: bool,
    probe_seconds: float,
) -> UpstreamError:
    """The one error for a call no key can make: 429 while every usable account cools down
    (with the earliest Retry-After), else 503; it says why without naming a key."""
    out = Counter(
        reason_text(removals[k.label], model, paid)
        for k in keys
        if k.label in removals and is_out(removals[k.label], model, paid)
    )
    also = "".join(f"; {n} key{'s' if n > 1 else ''} {why}" for why, n in sorted(out.items()))
    if usable:
        accounts = {k.account for k in usable}
        wait = min(cooling[a] for a in accounts)
        n = len(accounts)
        return UpstreamRateLimitError(
            f"{'All ' + str(n) if n > 1 else 'The'} SiliconFlow account"
            f"{'s' if n > 1 else ''} {'are' if n > 1 else 'is'} rate limited for {model}; "
            f"the first is free again in {max(1, round(wait))} s{also}.",
            retry_after=wait,
            maybe_billed=False,
        )
    return NoUpstreamKeyError(
        f"No SiliconFlow key can serve {model}{also}. Keys taken out are checked again "
        f"every {probe_seconds:.0f} s.",
        maybe_billed=False,
    )
