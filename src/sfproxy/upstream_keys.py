"""A pool of SiliconFlow keys, grouped by account, and the choice of a key for each call.

SiliconFlow limits images per account, not per key, so keys are grouped by the account id
`/user/info` gives at start; keys of one account share its cooldown and budget. Each call goes
to the account with the most images-per-minute budget left for the model (when a budget is
set), then the fewest calls in flight, in turn among equals. A 429 cools the account down for
its `Retry-After`; a 401 takes the key out as invalid; a 403 takes it out for paid models when
the balance is spent, else for that model. Keys taken out are probed again every
`UPSTREAM_PROBE_SECONDS` and come back when they work.

With a single key there is nothing to choose between: it is used as it always was, and its
errors reach the corridor's retries unchanged.

Keys never leave this module except in the Authorization header: logs and answers name them
by `key_label` only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from .errors import (
    NoUpstreamKeyError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamPermissionError,
    UpstreamRateLimitError,
)
from .limits import MINUTE, MemoryWindows, WindowCounter
from .upstream_accounts import (
    FREE_MODELS,
    UserInfoReader,
    account_label,
    is_free_model,
    key_label,
)
from .upstream_state import MemoryPoolState, PoolState

logger = logging.getLogger(__name__)

# `/user/info` at start and on probes: a slow answer must not hold the service's start.
PROBE_TIMEOUT = 5.0
INVALID = "invalid"
NO_BALANCE = "no_balance"
_REFUSED = "refused:"
# A budget no account can reach: `acquire` then only records what was spent.
_UNLIMITED = 1 << 40


@dataclass(slots=True, eq=False)
class UpstreamKey:
    secret: str = field(repr=False)
    label: str
    # Until `/user/info` names the account, a key is an account of its own.
    account: str
    in_flight: int = 0


class KeyPool:
    def __init__(
        self,
        keys: Sequence[str],
        *,
        site: str = "cn",
        state: PoolState | None = None,
        counter: WindowCounter | None = None,
        images_per_minute: Callable[[str], int] | None = None,
        cooldown_seconds: float = 10.0,
        probe_seconds: float = 300.0,
        balance_refresh_seconds: float = 600.0,
        low_balance_warning: float | None = None,
        on_balance: Callable[[str, float], None] | None = None,
    ) -> None:
        if not keys:
            raise ValueError("a key pool needs at least one key")
        self.keys = [UpstreamKey(k, key_label(k), key_label(k)) for k in dict.fromkeys(keys)]
        self.site = site
        self.state: PoolState = state or MemoryPoolState()
        self._counter = counter or MemoryWindows()
        self._budget = images_per_minute or (lambda model: 0)
        self.cooldown_seconds = cooldown_seconds
        self.probe_seconds = probe_seconds
        self.balance_refresh_seconds = balance_refresh_seconds
        self.low_balance_warning = low_balance_warning
        self._on_balance = on_balance
        # Account -> its total balance, as /user/info last said.
        self.balances: dict[str, float] = {}
        self._reader: UserInfoReader | None = None
        self._turn = 0
        # The last removals seen, for what must answer without awaiting (the pacer, /readyz).
        self._seen_removals: dict[str, frozenset[str]] = {}
        self._probing: list[asyncio.Task[None]] = []

    @property
    def shared(self) -> bool:
        """Whether there are keys to choose between (one key is used as it always was)."""
        return len(self.keys) > 1

    def secrets(self) -> list[str]:
        return [key.secret for key in self.keys]

    async def start(self, reader: UserInfoReader) -> None:
        """Group the keys by account, then re-probe the ones taken out, until `close`."""
        if not self.shared:
            return
        self._reader = reader
        await self.probe(self.keys)
        accounts = {key.account for key in self.keys}
        logger.info(
            "SiliconFlow keys: %d in %d account(s)%s",
            len(self.keys),
            len(accounts),
            self._removal_summary(),
        )
        self._probing = [
            asyncio.create_task(self._every(self.probe_seconds, self.probe_now)),
            asyncio.create_task(self._every(self.balance_refresh_seconds, self.refresh_balances)),
        ]

    async def probe_all(self, reader: UserInfoReader) -> None:
        """Probe every key once, even a single one (for `sfproxy upstream`)."""
        self._reader = reader
        await self.probe(self.keys)

    async def close(self) -> None:
        for task in self._probing:
            task.cancel()
        self._probing = []

    async def _every(self, seconds: float, probe: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await probe()
            except Exception:
                # A probe that failed in an unforeseen way must not end the probing for good.
                logger.exception("probing SiliconFlow keys failed")

    async def refresh_balances(self) -> None:
        """Read each account's balance now, with one of its keys not known to be invalid."""
        removals = await self.state.removals()
        by_account: dict[str, UpstreamKey] = {}
        for key in self.keys:
            if INVALID not in removals.get(key.label, ()):
                by_account.setdefault(key.account, key)
        await self.probe(list(by_account.values()))

    async def probe_now(self) -> None:
        """Probe every key taken out (or whose account is unknown) with `/user/info` now."""
        removals = await self.state.removals()
        await self.probe([k for k in self.keys if k.label in removals or k.account == k.label])

    async def probe(self, keys: Sequence[UpstreamKey]) -> None:
        if self._reader is not None and keys:
            await asyncio.gather(*(self._probe(key, self._reader) for key in keys))
            self._seen_removals = await self.state.removals()

    async def _probe(self, key: UpstreamKey, reader: UserInfoReader) -> None:
        try:
            info = await asyncio.wait_for(reader(key.secret), PROBE_TIMEOUT)
        except UpstreamAuthError:
            await self._take_out(key, INVALID, "SiliconFlow refused it (401)")
            return
        except (UpstreamError, TimeoutError) as exc:
            # Unreadable for now: it keeps serving as an account of its own until a probe works.
            message = exc.message if isinstance(exc, UpstreamError) else "no answer"
            logger.warning("SiliconFlow /user/info for %s failed: %s", key.label, message)
            return
        key.account = info.id
        if info.balance is not None:
            self._note_balance(info.id, info.balance)
        held = (await self.state.removals()).get(key.label, frozenset())
        # A model refused before is tried again: nothing in /user/info says it still is.
        back = [INVALID, *(reason for reason in held if reason.startswith(_REFUSED))]
        if info.balance is not None and info.balance <= 0:
            await self.state.take_out(key.label, NO_BALANCE)
        else:
            back.append(NO_BALANCE)
        await self.state.put_back(key.label, back)

    def _note_balance(self, account: str, balance: float) -> None:
        self.balances[account] = balance
        label = account_label(account)
        if self._on_balance is not None:
            self._on_balance(label, balance)
        if self.low_balance_warning is not None and balance < self.low_balance_warning:
            logger.warning(
                "SiliconFlow account %s has %.2f left, below LOW_BALANCE_WARNING (%g)",
                label,
                balance,
                self.low_balance_warning,
            )

    async def choose(self, model: str) -> UpstreamKey:
        """A key for one call of `model`; counts it in flight until `release`."""
        if not self.shared:
            key = self.keys[0]
        else:
            key = await self._choose(model)
        key.in_flight += 1
        return key

    def release(self, key: UpstreamKey) -> None:
        key.in_flight -= 1

    async def spent(self, key: UpstreamKey, model: str, images: int) -> None:
        """Count images a call made against its account's budget for the model."""
        if self.shared and self._budget(model):
            try:
                await self._counter.acquire(
                    _budget_key(key.account, model), images, _UNLIMITED, MINUTE
                )
            except (RedisError, OSError) as exc:
                logger.warning("account budget unavailable, images not counted: %s", exc)

    async def _choose(self, model: str) -> UpstreamKey:
        cooling = await self.state.cooling()
        removals = self._seen_removals = await self.state.removals()
        paid = not is_free_model(model, self.site)
        usable = [k for k in self.keys if not _out(removals.get(k.label), model, paid)]
        ready = [k for k in usable if k.account not in cooling]
        if not ready:
            raise self._none_can_serve(model, usable, cooling, removals, paid)
        accounts: dict[str, list[UpstreamKey]] = {}
        for key in ready:
            accounts.setdefault(key.account, []).append(key)
        limit = self._budget(model)
        left = {account: await self._budget_left(account, model, limit) for account in accounts}

        def load(account: str) -> tuple[int, int]:
            # Calls in flight have not been counted against the budget yet: they will be.
            in_flight = sum(k.in_flight for k in accounts[account])
            return -(left[account] - in_flight if limit else 0), in_flight

        best = min(load(a) for a in accounts)
        self._turn += 1
        tied = [a for a in accounts if load(a) == best]
        keys = accounts[tied[self._turn % len(tied)]]
        fewest = min(k.in_flight for k in keys)
        tied_keys = [k for k in keys if k.in_flight == fewest]
        return tied_keys[self._turn % len(tied_keys)]

    async def _budget_left(self, account: str, model: str, limit: int) -> int:
        if not limit:
            return 0
        try:
            return limit - await self._counter.used(_budget_key(account, model), MINUTE)
        except (RedisError, OSError):
            # Fail open, as pacing does: without the counts, accounts are equal.
            return 0

    async def failed(self, key: UpstreamKey, model: str, exc: UpstreamError) -> bool:
        """Note a failed call; True when the fault was the key's, so another may succeed."""
        if not self.shared:
            return False
        if isinstance(exc, UpstreamRateLimitError):
            seconds = exc.retry_after if exc.retry_after is not None else self.cooldown_seconds
            await self.state.cool_down(key.account, seconds)
            logger.warning(
                "SiliconFlow account of %s is rate limited for %s: cooling down for %.0f s",
                key.label,
                model,
                seconds,
            )
        elif isinstance(exc, UpstreamAuthError):
            await self._take_out(key, INVALID, "SiliconFlow refused it (401)")
        elif isinstance(exc, UpstreamPermissionError) and exc.insufficient_balance:
            await self._take_out(key, NO_BALANCE, "its balance is spent (paid models only)")
        elif isinstance(exc, UpstreamPermissionError):
            await self._take_out(key, _REFUSED + model, f"SiliconFlow refuses it {model}")
        else:
            return False
        self._seen_removals = await self.state.removals()
        return True

    async def _take_out(self, key: UpstreamKey, reason: str, why: str) -> None:
        await self.state.take_out(key.label, reason)
        logger.warning(
            "SiliconFlow key %s taken out: %s; probed again every %.0f s",
            key.label,
            why,
            self.probe_seconds,
        )

    def _none_can_serve(
        self,
        model: str,
        usable: list[UpstreamKey],
        cooling: dict[str, float],
        removals: dict[str, frozenset[str]],
        paid: bool,
    ) -> UpstreamError:
        out = Counter(
            _reason(removals[k.label], model, paid)
            for k in self.keys
            if k.label in removals and _out(removals[k.label], model, paid)
        )
        also = "".join(f"; {n} key{'s' if n > 1 else ''} {why}" for why, n in sorted(out.items()))
        if usable:
            accounts = {k.account for k in usable}
            wait = min(cooling[a] for a in accounts)
            n = len(accounts)
            error: UpstreamError = UpstreamRateLimitError(
                f"{'All ' + str(n) if n > 1 else 'The'} SiliconFlow account"
                f"{'s' if n > 1 else ''} {'are' if n > 1 else 'is'} rate limited for {model}; "
                f"the first is free again in {max(1, round(wait))} s{also}.",
                retry_after=wait,
                maybe_billed=False,
            )
        else:
            error = NoUpstreamKeyError(
                f"No SiliconFlow key can serve {model}{also}. Keys taken out are checked again "
                f"every {self.probe_seconds:.0f} s.",
                maybe_billed=False,
            )
        return error

    def accounts_serving(self, model: str) -> int:
        """Accounts with a key for the model, as last seen (the pacer multiplies budgets by it)."""
        paid = not is_free_model(model, self.site)
        return max(
            1,
            len(
                {
                    k.account
                    for k in self.keys
                    if not _out(self._seen_removals.get(k.label), model, paid)
                }
            ),
        )

    def key_for_reading(self) -> str:
        """A key not known to be invalid, for calls that cost nothing (model lists)."""
        for key in self.keys:
            if INVALID not in self._seen_removals.get(key.label, frozenset()):
                return key.secret
        return self.keys[0].secret

    def readiness(self) -> tuple[bool, str | None]:
        """Whether some key can serve some model, and a line that says how many can (none
        for a single key: it is not probed, so there is nothing to say)."""
        if not self.shared:
            return True, None
        removals = self._seen_removals
        free_models = bool(FREE_MODELS.get(self.site))
        usable = [
            k
            for k in self.keys
            if INVALID not in removals.get(k.label, ())
            and (free_models or NO_BALANCE not in removals.get(k.label, ()))
        ]
        accounts = {k.account for k in usable}
        line = (
            f"{len(usable)} of {len(self.keys)} keys usable, in {len(accounts)} account"
            f"{'s' if len(accounts) != 1 else ''}{self._removal_summary()}"
        )
        return bool(usable), line

    async def snapshot(self, models: Sequence[str] = ()) -> dict[str, Any]:
        """Accounts, their key labels, states, balances and, for those of `models` with a
        budget, the images of the last minute against it: for operators (no key, no id)."""
        cooling, removals = await self.state.cooling(), await self.state.removals()
        budgets = {model: limit for model in models if (limit := self._budget(model))}
        accounts: dict[str, dict[str, Any]] = {}
        for key in self.keys:
            account = accounts.setdefault(
                key.account,
                {
                    "account": account_label(key.account),
                    # False: /user/info could not be read, so the key stands alone for now.
                    "grouped": key.account != key.label,
                    "cooling_seconds": round(cooling[key.account], 1)
                    if key.account in cooling
                    else None,
                    "balance": self.balances.get(key.account),
                    "budgets": {
                        model: {
                            "limit": limit,
                            "used": limit - await self._budget_left(key.account, model, limit),
                        }
                        for model, limit in budgets.items()
                    },
                    "keys": [],
                },
            )
            reasons = sorted(removals.get(key.label, ()))
            state = "out" if reasons else "cooling" if key.account in cooling else "ok"
            account["keys"].append(
                {"label": key.label, "state": state, "reasons": reasons, "in_flight": key.in_flight}
            )
        return {"site": self.site, "probed": self.shared, "accounts": list(accounts.values())}

    def _removal_summary(self) -> str:
        out = Counter(
            reason.split(":")[0] for reasons in self._seen_removals.values() for reason in reasons
        )
        return "".join(f"; {n} {why}" for why, n in sorted(out.items()))


def _out(reasons: frozenset[str] | None, model: str, paid: bool) -> bool:
    if not reasons:
        return False
    return INVALID in reasons or (paid and NO_BALANCE in reasons) or (_REFUSED + model) in reasons


def _reason(reasons: frozenset[str], model: str, paid: bool) -> str:
    if INVALID in reasons:
        return "invalid (SiliconFlow answered 401)"
    if paid and NO_BALANCE in reasons:
        return "out of balance for paid models"
    return f"refused {model} by SiliconFlow (403)"


def _budget_key(account: str, model: str) -> str:
    return f"ipm:account:{account}:{model}"
