"""A pool of SiliconFlow keys, grouped by account, and the choice of a key for each call.

SiliconFlow limits images per account, not per key, so keys are grouped by the account id
`/user/info` gives at start; keys of one account share its cooldown and budget. Each call goes
to the account with the most images-per-minute budget left for the model (when a budget is
set), then the fewest calls in flight, in turn among equals. A 429 cools the account down for
its `Retry-After`; a 401 takes the key out as invalid; a 403 takes it out for paid models when
the balance is spent, else for that model. Keys taken out are probed again every
`UPSTREAM_PROBE_SECONDS` and come back when they work.

With `UPSTREAM_MAX_IN_FLIGHT` (or a model's `max_in_flight`), an account has at most that many
calls of a model in flight, counted across instances with `REDIS_URL` (upstream_slots.py): a
call goes to the preferred account with room, else waits for one, up to `QUEUE_TIMEOUT`.

With a single key there is nothing to choose between: it is used as it always was, and its
errors reach the corridor's retries unchanged.

Keys never leave this module except in the Authorization header: logs and answers name them
by `key_label` only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from .errors import (
    RateLimitError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamPermissionError,
    UpstreamRateLimitError,
)
from .limits import MINUTE, MemoryWindows, WindowCounter
from .metrics import Metrics
from .upstream_accounts import (
    FREE_MODELS,
    UserInfoReader,
    account_label,
    is_free_model,
    key_label,
)
from .upstream_removals import (
    INVALID,
    NO_BALANCE,
    REFUSED,
    is_out,
    none_can_serve,
    removal_summary,
)
from .upstream_slots import CallSlots, MemorySlots
from .upstream_state import MemoryPoolState, PoolState

logger = logging.getLogger(__name__)

# `/user/info` at start and on probes: a slow answer must not hold the service's start.
PROBE_TIMEOUT = 5.0
# A budget no account can reach: `acquire` then only records what was spent.
_UNLIMITED = 1 << 40
# How often a call waiting for an in-flight slot looks again, for slots other instances free
# (this process's own wake it at once).
SLOT_POLL_SECONDS = 0.05


@dataclass(slots=True, eq=False)
class UpstreamKey:
    secret: str = field(repr=False)
    label: str
    # Until `/user/info` names the account, a key is an account of its own.
    account: str
    in_flight: int = 0


@dataclass(slots=True, eq=False)
class HeldKey:
    """A key chosen for one call of `model`, and the in-flight slot it holds until released."""

    key: UpstreamKey
    model: str
    # (account, token) of its slot when the model's calls in flight are capped.
    slot: tuple[str, str] | None = None

    @property
    def secret(self) -> str:
        return self.key.secret


class KeyPool:
    def __init__(
        self,
        keys: Sequence[str],
        *,
        site: str = "cn",
        state: PoolState | None = None,
        counter: WindowCounter | None = None,
        images_per_minute: Callable[[str], int] | None = None,
        max_in_flight: Callable[[str], int] | None = None,
        slots: CallSlots | None = None,
        queue_timeout: float = 60.0,
        lease_seconds: float = 600.0,
        cooldown_seconds: float = 10.0,
        probe_seconds: float = 300.0,
        balance_refresh_seconds: float = 600.0,
        low_balance_warning: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if not keys:
            raise ValueError("a key pool needs at least one key")
        self.keys = [UpstreamKey(k, key_label(k), key_label(k)) for k in dict.fromkeys(keys)]
        self.site = site
        self.state: PoolState = state or MemoryPoolState()
        self._counter = counter or MemoryWindows()
        self.budget = images_per_minute or (lambda model: 0)
        self.max_in_flight = max_in_flight or (lambda model: 0)
        self.slots: CallSlots = slots or MemorySlots()
        self.queue_timeout = queue_timeout
        self.lease_seconds = lease_seconds
        # Per model: one waiter at a time looks for a slot (asyncio.Lock is first come, first
        # served), woken when this process frees one.
        self._doors: dict[str, asyncio.Lock] = {}
        self._freed: dict[str, asyncio.Event] = {}
        self._waiting: Counter[str] = Counter()
        self.cooldown_seconds = cooldown_seconds
        self.probe_seconds = probe_seconds
        self.balance_refresh_seconds = balance_refresh_seconds
        self.low_balance_warning = low_balance_warning
        self._metrics = metrics
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
            removal_summary(self._seen_removals),
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
        back = [INVALID, *(reason for reason in held if reason.startswith(REFUSED))]
        if info.balance is not None and info.balance <= 0:
            await self.state.take_out(key.label, NO_BALANCE)
        else:
            back.append(NO_BALANCE)
        await self.state.put_back(key.label, back)

    def _note_balance(self, account: str, balance: float) -> None:
        self.balances[account] = balance
        label = account_label(account)
        if self._metrics is not None:
            self._metrics.upstream_balance.labels(label).set(balance)
        if self.low_balance_warning is not None and balance < self.low_balance_warning:
            logger.warning(
                "SiliconFlow account %s has %.2f left, below LOW_BALANCE_WARNING (%g)",
                label,
                balance,
                self.low_balance_warning,
            )

    async def choose(self, model: str, *, queued_at: float | None = None) -> HeldKey:
        """A key for one call of `model`, held in flight until `release`.

        With the model's calls in flight capped, this waits for an account with room, at
        most QUEUE_TIMEOUT from `queued_at` (when the call began to wait), then 429s.
        """
        cap = self.max_in_flight(model)
        if cap:
            return await self._hold(model, cap, queued_at)
        key = self._least_busy((await self._ranked(model))[0]) if self.shared else self.keys[0]
        key.in_flight += 1
        return HeldKey(key, model)

    async def after_every_key_failed(self, model: str, last: UpstreamError) -> UpstreamError:
        """The error that ends a call once each key has failed it: the pool's own "no key can
        serve the model" when that is so, else (a probe has just brought a key back) the last
        failure, for the corridor to retry."""
        if self.shared:
            try:
                await self._ranked(model)
            except UpstreamError as none_left:
                return none_left
        return last

    async def release(self, held: HeldKey) -> None:
        held.key.in_flight -= 1
        if held.slot is not None:
            account, token = held.slot
            held.slot = None
            await self.slots.give_back(held.model, account, token)
            freed = self._freed.get(held.model)
            if freed is not None:
                freed.set()

    def waiting(self, model: str) -> int:
        """Calls of the model in this process waiting for an in-flight slot now."""
        return self._waiting[model]

    async def _hold(self, model: str, cap: int, queued_at: float | None) -> HeldKey:
        started = queued_at if queued_at is not None else time.monotonic()
        door = self._doors.setdefault(model, asyncio.Lock())
        freed = self._freed.setdefault(model, asyncio.Event())
        self._waiting[model] += 1
        try:
            async with asyncio.timeout(started + self.queue_timeout - time.monotonic()):
                async with door:
                    while True:
                        freed.clear()
                        ranked = await self._ranked(model) if self.shared else [self.keys]
                        accounts = [keys[0].account for keys in ranked]
                        slot = await self.slots.take(model, accounts, cap, self.lease_seconds)
                        if slot is not None:
                            key = self._least_busy(ranked[accounts.index(slot[0])])
                            key.in_flight += 1
                            return HeldKey(key, model, slot)
                        try:
                            await asyncio.wait_for(freed.wait(), SLOT_POLL_SECONDS)
                        except TimeoutError:
                            pass
        except TimeoutError:
            if self._metrics is not None:
                self._metrics.limited.labels("upstream_pacing").inc()
            raise RateLimitError(
                f"Too many requests queued for {model}: its calls in flight limit ({cap} per "
                f"SiliconFlow account) would hold this one longer than QUEUE_TIMEOUT "
                f"({self.queue_timeout:g} s). Try again in {max(1, round(self.queue_timeout))} s.",
                retry_after=self.queue_timeout,
                code="upstream_pacing",
            ) from None
        finally:
            self._waiting[model] -= 1

    async def spent(self, key: UpstreamKey, model: str, images: int) -> None:
        """Count images a call made against its account's budget for the model."""
        if self.shared and self.budget(model):
            try:
                await self._counter.acquire(
                    _budget_key(key.account, model), images, _UNLIMITED, MINUTE
                )
            except (RedisError, OSError) as exc:
                logger.warning("account budget unavailable, images not counted: %s", exc)

    async def _ranked(self, model: str) -> list[list[UpstreamKey]]:
        """The keys of each account that can serve the model now, the preferred account first:
        the most budget left, then the fewest calls in flight, in turn among equals."""
        cooling = await self.state.cooling()
        removals = self._seen_removals = await self.state.removals()
        paid = not is_free_model(model, self.site)
        usable = [k for k in self.keys if not is_out(removals.get(k.label), model, paid)]
        ready = [k for k in usable if k.account not in cooling]
        if not ready:
            raise none_can_serve(
                self.keys,
                model,
                usable,
                cooling,
                removals,
                paid=paid,
                probe_seconds=self.probe_seconds,
            )
        accounts: dict[str, list[UpstreamKey]] = {}
        for key in ready:
            accounts.setdefault(key.account, []).append(key)
        limit = self.budget(model)
        left = {account: await self.budget_left(account, model, limit) for account in accounts}
        self._turn += 1
        turn, count = self._turn, len(accounts)

        def load(item: tuple[int, str]) -> tuple[int, int, int]:
            index, account = item
            # Calls in flight have not been counted against the budget yet: they will be.
            in_flight = sum(k.in_flight for k in accounts[account])
            return -(left[account] - in_flight if limit else 0), in_flight, (index - turn) % count

        order = sorted(enumerate(accounts), key=load)
        return [accounts[account] for _, account in order]

    def _least_busy(self, keys: list[UpstreamKey]) -> UpstreamKey:
        fewest = min(k.in_flight for k in keys)
        tied = [k for k in keys if k.in_flight == fewest]
        return tied[self._turn % len(tied)]

    async def budget_left(self, account: str, model: str, limit: int) -> int:
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
            await self._take_out(key, REFUSED + model, f"SiliconFlow refuses it {model}")
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

    def accounts_serving(self, model: str) -> int:
        """Accounts with a key for the model, as last seen (the pacer multiplies budgets by it)."""
        paid = not is_free_model(model, self.site)
        return max(
            1,
            len(
                {
                    k.account
                    for k in self.keys
                    if not is_out(self._seen_removals.get(k.label), model, paid)
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
            f"{'s' if len(accounts) != 1 else ''}{removal_summary(self._seen_removals)}"
        )
        return bool(usable), line


def _budget_key(account: str, model: str) -> str:
    return f"ipm:account:{account}:{model}"
