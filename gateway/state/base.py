"""What every state backend agrees on: limits, answers, the store interface, and the pure rules behind them.

A limit check reads how much of each limit a key has used and, only when
every limit has room, counts the request and takes a concurrency slot, all at
once. Windows are one minute long and made of one-second buckets, so a count
is exact at one-second granularity and a window needs at most 60 numbers.
Both backends compute from the same observations with the same functions
here, so they give the same answers; the Redis backend's Lua script mirrors
``summarize`` and ``refusal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum, StrEnum
from typing import Annotated, ClassVar, Final

from annotated_types import Gt

from gateway.state.stored import ResponseStore

__all__ = [
    "BUCKETS",
    "CONCURRENCY_RETRY_AFTER",
    "FAILURE_MEMORY",
    "Admission",
    "Budget",
    "Clock",
    "Lease",
    "Limits",
    "Observed",
    "Period",
    "Quota",
    "Refusal",
    "StateStore",
    "StateUnavailable",
    "Window",
    "admission",
    "duration",
    "new_lease",
    "period_bounds",
    "refusal",
    "summarize",
]

Clock = Callable[[], float]

# A minute of one-second buckets: bucket b covers [b, b + 1) in Unix seconds and leaves the window at b + 60.
BUCKETS: Final = 60
# A refused concurrency slot frees when some other request ends, which nobody can predict; clients retry after this.
CONCURRENCY_RETRY_AFTER: Final = 1.0
# A deployment's count of failures in a row is forgotten this many seconds after its last failure.
FAILURE_MEMORY: Final = 600.0


class StateUnavailable(Exception):
    """The shared state could not be reached in time and ``state_failure`` is ``closed``: refuse with 503."""


class Period(StrEnum):
    """A budget's calendar period, in UTC; weeks start on Monday."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Budget:
    """A key's token allowance per calendar period (the config's ``keys[].budget`` is validated as this)."""

    tokens: Annotated[int, Gt(0)]
    period: Period
    # Read by pydantic, which validates the config into this type: a budget has no other fields.
    __pydantic_config__: ClassVar = {"extra": "forbid"}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client key is held to; None means no such limit."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    budget: Budget | None = None

    @property
    def any(self) -> bool:
        return self != _UNLIMITED


_UNLIMITED: Final = Limits()


class Refusal(Enum):
    """Which limit turned a request away, in the order they are reported when several do."""

    BUDGET = "budget"
    REQUESTS = "requests"
    TOKENS = "tokens"
    CONCURRENCY = "concurrency"


@dataclass(frozen=True, slots=True)
class Quota:
    """One limit as OpenAI's rate-limit headers describe it."""

    limit: int
    remaining: int
    reset: float  # seconds until it is back to its full limit


@dataclass(frozen=True, slots=True)
class Lease:
    """A concurrency slot; it comes back by itself when nobody renews it (a worker that died)."""

    key: str
    id: str


@dataclass(frozen=True, slots=True)
class Window:
    """What a one-minute window holds now, and the buckets that decide when it frees up."""

    used: int
    newest: int | None  # the newest bucket with anything in it
    release: int | None  # the bucket whose leaving brings `used` under the limit; None when it already is


@dataclass(frozen=True, slots=True)
class Observed:
    """What a limit check read before deciding, for the limits the key has."""

    now: float
    requests: Window | None = None
    tokens: Window | None = None
    budget_spent: int | None = None
    budget_end: float | None = None  # Unix time the budget period ends
    slots_held: int | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to a limit check: refused or not, and what the rate-limit headers say."""

    refusal: Refusal | None
    requests: Quota | None = None
    tokens: Quota | None = None  # the per-minute tokens
    budget: Quota | None = None
    concurrency: Quota | None = None
    retry_after: float | None = None  # seconds, when refused
    lease: Lease | None = None

    @property
    def allowed(self) -> bool:
        return self.refusal is None

    def headers(self) -> dict[str, str]:
        """OpenAI's rate-limit headers, plus ``retry-after`` (and the SDKs' ``retry-after-ms``) when refused.

        The ``-tokens`` trio describes whichever token limit is closer to refusing: the minute window or the
        budget period.
        """
        headers: dict[str, str] = {}
        tokens = min((q for q in (self.tokens, self.budget) if q is not None), key=lambda q: q.remaining, default=None)
        for kind, quota in (("requests", self.requests), ("tokens", tokens)):
            if quota is not None:
                headers[f"x-ratelimit-limit-{kind}"] = str(quota.limit)
                headers[f"x-ratelimit-remaining-{kind}"] = str(quota.remaining)
                headers[f"x-ratelimit-reset-{kind}"] = duration(quota.reset)
        if self.retry_after is not None:
            headers["retry-after"] = str(max(1, math.ceil(self.retry_after)))
            headers["retry-after-ms"] = str(max(1, math.ceil(self.retry_after * 1000)))
        return headers


def summarize(buckets: Mapping[int, int], current: int, limit: int) -> Window:
    """A window from its buckets (stale ones ignored), as the Redis script computes it too."""
    live = [(bucket, count) for bucket, count in buckets.items() if bucket > current - BUCKETS]
    used = sum(count for _, count in live)
    newest = max(live)[0] if live else None
    release = None
    if used >= limit:  # only a full window needs to know which bucket frees it
        left = used
        for bucket, count in sorted(live):
            if left < limit:
                break
            left -= count
            release = bucket
    return Window(used, newest, release)


def refusal(limits: Limits, seen: Observed) -> Refusal | None:
    """The limit that refuses, if any; a request is admitted only when every limit has room."""
    if limits.budget is not None and (seen.budget_spent or 0) >= limits.budget.tokens:
        return Refusal.BUDGET
    if limits.rpm is not None and seen.requests is not None and seen.requests.used >= limits.rpm:
        return Refusal.REQUESTS
    if limits.tpm is not None and seen.tokens is not None and seen.tokens.used >= limits.tpm:
        return Refusal.TOKENS
    if limits.max_concurrency is not None and (seen.slots_held or 0) >= limits.max_concurrency:
        return Refusal.CONCURRENCY
    return None


def admission(limits: Limits, seen: Observed, lease: Lease | None) -> Admission:
    """The answer for what a check observed; when admitted, the request and its slot are counted in it."""
    refused = refusal(limits, seen)
    admitted = refused is None
    now = seen.now
    waits: list[float] = []
    requests = tokens = budget = concurrency = None

    def after(bucket: int | None) -> float:
        return 0.0 if bucket is None else max(0.0, bucket + BUCKETS - now)

    if limits.rpm is not None and seen.requests is not None:
        window = seen.requests
        used = window.used + admitted
        newest = math.floor(now) if admitted else window.newest
        requests = Quota(limits.rpm, max(0, limits.rpm - used), after(newest))
        if window.used >= limits.rpm:
            waits.append(after(window.release))
    if limits.tpm is not None and seen.tokens is not None:
        window = seen.tokens
        tokens = Quota(limits.tpm, max(0, limits.tpm - window.used), after(window.newest))
        if window.used >= limits.tpm:
            waits.append(after(window.release))
    if limits.budget is not None and seen.budget_end is not None:
        spent = seen.budget_spent or 0
        reset = max(0.0, seen.budget_end - now)
        budget = Quota(limits.budget.tokens, max(0, limits.budget.tokens - spent), reset)
        if spent >= limits.budget.tokens:
            waits.append(reset)
    if limits.max_concurrency is not None:
        held = (seen.slots_held or 0) + admitted
        concurrency = Quota(limits.max_concurrency, max(0, limits.max_concurrency - held), 0.0)
        if (seen.slots_held or 0) >= limits.max_concurrency:
            waits.append(CONCURRENCY_RETRY_AFTER)
    return Admission(
        refused,
        requests,
        tokens,
        budget,
        concurrency,
        retry_after=max(waits) if not admitted else None,
        lease=lease if admitted else None,
    )


def period_bounds(now: float, period: Period) -> tuple[str, float]:
    """The period ``now`` falls in: a label (its first day) and its end as a Unix time, both in UTC."""
    return _period_of_day(math.floor(now / 86400), period)


@functools.lru_cache(maxsize=16)
def _period_of_day(day: int, period: Period) -> tuple[str, float]:
    """Unix days count whole UTC days, so the period depends on the day alone: computed once a day, not per check."""
    today = date(1970, 1, 1) + timedelta(days=day)
    if period is Period.DAY:
        start, end = today, today + timedelta(days=1)
    elif period is Period.WEEK:
        start = today - timedelta(days=today.weekday())
        end = start + timedelta(days=7)
    else:
        start = today.replace(day=1)
        end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return start.isoformat(), datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp()


def duration(seconds: float) -> str:
    """A wait as OpenAI writes it in ``x-ratelimit-reset-*``: ``20ms``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    ms = max(0, round(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


_PROCESS: Final = uuid.uuid4().hex[:12]
_LEASES: Final = itertools.count()


def new_lease(key: str) -> Lease:
    """A lease id unique across every worker and replica: this process's random prefix and a counter."""
    return Lease(key, f"{_PROCESS}-{next(_LEASES)}")


class StateStore(ResponseStore, ABC):
    """Limits, concurrency leases, deployment health and stored responses, kept in this process or shared by
    every worker.

    A limit check (``admit``) follows ``state_failure`` when the state cannot be reached: admit anyway, or
    raise StateUnavailable. Everything else never raises: bookkeeping once a request is under way
    (``finish``, ``renew``, ``failed``, ``succeeded``) has nobody left to refuse, and a deployment's
    health (``cooling_down``) is advice to routing, which then sees no deployment cooling down.
    """

    def __init__(self, clock: Clock, lease_seconds: float) -> None:
        self.clock = clock
        self.lease_seconds = lease_seconds
        self._held: set[Lease] = set()
        self._renewer: asyncio.Task[None] | None = None

    @abstractmethod
    async def admit(self, key: str, limits: Limits) -> Admission:
        """Check every limit of ``key`` and, when all have room, count the request and take a slot: one step."""

    @abstractmethod
    async def observe(self, keys: Mapping[str, Limits]) -> dict[str, Observed]:
        """What each key has used of its limits now, as a check would read it, counting nothing: the console's
        view, shared by every worker; a key whose state cannot be read now is left out."""

    @abstractmethod
    async def finish(self, key: str, limits: Limits, tokens: int, lease: Lease | None) -> None:
        """A request's end, in one step: add its tokens to the key's minute window and budget period (those the
        key has), and give its slot back."""

    @abstractmethod
    async def renew(self, leases: Sequence[Lease]) -> None:
        """Push the expiry of running requests' slots ``lease_seconds`` ahead (and put back any that lapsed)."""

    @abstractmethod
    async def failed(self, deployment: str, max_failures: int, cooldown: float) -> bool:
        """Count a failure in a row; at ``max_failures`` the deployment cools down (True) and the count restarts."""

    @abstractmethod
    async def succeeded(self, deployment: str) -> None:
        """End a deployment's run of failures."""

    @abstractmethod
    async def cooling_down(self, deployments: Sequence[str]) -> dict[str, float]:
        """Those of ``deployments`` cooling down now, with the seconds they have left."""

    async def start(self) -> None:  # most stores have nothing to do; not every store must say so
        """Get ready before the first request (the Redis store opens its connections)."""

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer

    def keep(self, lease: Lease) -> None:
        """Renew a slot in the background (all kept slots in one call) until ``let_go``."""
        self._held.add(lease)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_held())

    def let_go(self, lease: Lease) -> None:
        """Stop renewing a slot (``finish`` gives it back)."""
        self._held.discard(lease)

    async def _renew_held(self) -> None:
        while self._held:
            await asyncio.sleep(self.lease_seconds / 3)
            if self._held:
                await self.renew(tuple(self._held))
