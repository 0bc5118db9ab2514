"""The Redis state backend: limits, slots and deployment health shared by every worker and replica.

Each check is one round trip: a Lua script (atomic on the server) or a
pipeline. Every key expires on its own, so nothing is left behind by a key
removed from the config or a worker that died. Times are the workers' clocks
(keep them in sync with NTP); a key's data share one hash slot.

When Redis is down or slower than ``state_timeout``, the store counts the
failure, logs one warning per interval, and then admits (``open``) or raises
StateUnavailable (``closed``). Bookkeeping once a request is admitted
(charging tokens, renewing and returning slots, counting a deployment's
failures) may wait longer, up to ``BOOKKEEPING_TIMEOUT``: a busy worker's event
loop alone can hold an answer back for tens of milliseconds, and bookkeeping
given up is lost (tokens not counted, a slot held until its lease ends).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum, StrEnum
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.state.base import (
    BUCKETS,
    FAILURE_MEMORY,
    Admission,
    Clock,
    Lease,
    Limits,
    Observed,
    StateStore,
    StateUnavailable,
    Window,
    admission,
    new_lease,
    period_bounds,
)

__all__ = ["BOOKKEEPING_TIMEOUT", "FailurePolicy", "RedisStore"]

log = logging.getLogger("gateway.state")
T = TypeVar("T")

# KEYS: requests window, tokens window, budget counter, slot leases.
# ARGV: current bucket, rpm, tpm, budget, max concurrency (0 = no such limit), now, lease id,
#       lease expiry, window TTL (ms), leases TTL (ms).
# Mirrors gateway.state.base.summarize and refusal; returns what it saw (eight integers in one string: one
# reply line is cheaper to read than eight), counting only when all had room.
_ADMIT: Final = """
local current = tonumber(ARGV[1])
local function window(key, limit)
  local flat = redis.call('HGETALL', key)
  local live, used, newest, release = {}, 0, -1, -1
  for i = 1, #flat, 2 do
    local bucket = tonumber(flat[i])
    if bucket <= current - 60 then
      redis.call('HDEL', key, flat[i])
    else
      local count = tonumber(flat[i + 1])
      used = used + count
      newest = math.max(newest, bucket)
      live[#live + 1] = {bucket, count}
    end
  end
  if used >= limit then
    table.sort(live, function(a, b) return a[1] < b[1] end)
    local left = used
    for _, entry in ipairs(live) do
      if left < limit then break end
      left = left - entry[2]
      release = entry[1]
    end
  end
  return used, newest, release
end
local rpm, tpm, budget, slots = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local requests, request_newest, request_release = 0, -1, -1
if rpm > 0 then requests, request_newest, request_release = window(KEYS[1], rpm) end
local tokens, token_newest, token_release = 0, -1, -1
if tpm > 0 then tokens, token_newest, token_release = window(KEYS[2], tpm) end
local spent = 0
if budget > 0 then spent = tonumber(redis.call('GET', KEYS[3]) or '0') end
local held = 0
if slots > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[6])
  held = redis.call('ZCARD', KEYS[4])
end
if (rpm == 0 or requests < rpm) and (tpm == 0 or tokens < tpm) and (budget == 0 or spent < budget)
    and (slots == 0 or held < slots) then
  if rpm > 0 then
    redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
    redis.call('PEXPIRE', KEYS[1], ARGV[9])
  end
  if slots > 0 then
    redis.call('ZADD', KEYS[4], ARGV[8], ARGV[7])
    redis.call('PEXPIRE', KEYS[4], ARGV[10])
  end
end
return string.format('%d %d %d %d %d %d %d %d', requests, request_newest, request_release, tokens, token_newest,
  token_release, spent, held)
"""

# KEYS: tokens window, budget counter, slot leases.
# ARGV: tokens, current bucket ('' = no tpm), window TTL (ms), budget TTL (ms; 0 = no budget), lease id ('' = none).
_FINISH: Final = """
local tokens = tonumber(ARGV[1])
if tokens > 0 and ARGV[2] ~= '' then
  redis.call('HINCRBY', KEYS[1], ARGV[2], tokens)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if tokens > 0 and ARGV[4] ~= '0' then
  redis.call('INCRBY', KEYS[2], tokens)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
if ARGV[5] ~= '' then redis.call('ZREM', KEYS[3], ARGV[5]) end
return 0
"""

# KEYS: failures in a row, cooling down until. ARGV: max failures, until, cool-down (ms), failure memory (ms).
_FAILED: Final = """
local failures = redis.call('INCR', KEYS[1])
if failures >= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
  return 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 0
"""

_WINDOW_TTL_MS: Final = (BUCKETS + 1) * 1000
# A budget counter outlives its period a little, for a request that started in it and is charged after.
_BUDGET_SLACK: Final = 3600.0


# The longest wait for bookkeeping, in seconds, unless state_timeout is longer.
BOOKKEEPING_TIMEOUT: Final = 1.0


class FailurePolicy(StrEnum):
    """What a limit check does when the shared state cannot answer in time."""

    OPEN = "open"
    CLOSED = "closed"


class _Call(Enum):
    """What a round trip is for, which decides how long it may take and what its failure does."""

    CHECK = "check"  # a limit check: state_timeout, then state_failure decides
    ADVICE = "advice"  # read on a request's path (deployment health): state_timeout, then the fallback
    BOOKKEEPING = "bookkeeping"  # after admission: up to BOOKKEEPING_TIMEOUT, then the fallback


class RedisStore(StateStore):
    """State in one Redis database, reached through the ``redis`` package's asyncio client."""

    def __init__(
        self,
        client: Redis,
        *,
        failure: FailurePolicy = FailurePolicy.OPEN,
        timeout: float = 0.05,
        on_failure: Callable[[str], None] | None = None,
        warn_interval: float = 60.0,
        prefix: str = "gateway:",
        clock: Clock = time.time,
        lease_seconds: float = 30.0,
        where: str = "redis",
    ) -> None:
        super().__init__(clock, lease_seconds)
        self._redis = client
        self._failure = failure
        self._timeouts = {
            _Call.CHECK: timeout, _Call.ADVICE: timeout, _Call.BOOKKEEPING: max(timeout, BOOKKEEPING_TIMEOUT)
        }
        self._on_failure = on_failure
        self._warn_interval = warn_interval
        self._warned_at = -math.inf
        self._prefix = prefix
        self._where = where
        self._admit = client.register_script(_ADMIT)
        self._finish = client.register_script(_FINISH)
        self._failed = client.register_script(_FAILED)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """A store on its own connection pool; a failed command is retried once at once, on a fresh connection."""
        client = Redis.from_url(url, retry=Retry(NoBackoff(), 1), socket_timeout=5, socket_connect_timeout=5)
        parts = urlsplit(url)
        return cls(client, where=f"redis at {parts.hostname}:{parts.port or 6379}", **options)

    async def aclose(self) -> None:
        await super().aclose()
        await self._redis.aclose()

    async def admit(self, key: str, limits: Limits) -> Admission:
        if not limits.any:
            return Admission(None)
        now = self.clock()
        lease = new_lease(key) if limits.max_concurrency is not None else None
        budget_end = None
        budget_key = self._key(key, "budget")
        if limits.budget is not None:
            label, budget_end = period_bounds(now, limits.budget.period)
            budget_key = self._key(key, f"budget:{limits.budget.period}:{label}")
        keys = [self._key(key, "requests"), self._key(key, "tokens"), budget_key, self._key(key, "slots")]
        args: list[int | str] = [
            math.floor(now),
            limits.rpm or 0,
            limits.tpm or 0,
            limits.budget.tokens if limits.budget is not None else 0,
            limits.max_concurrency or 0,
            repr(now),
            lease.id if lease is not None else "",
            repr(now + self.lease_seconds),
            _WINDOW_TTL_MS,
            math.ceil(self.lease_seconds * 2000),
        ]
        reply: bytes | None = await self._guard("admit", lambda: self._admit(keys=keys, args=args), None, _Call.CHECK)
        if reply is None:
            return Admission(None, degraded=True)
        observed = map(int, reply.split())
        requests, request_newest, request_release, tokens, token_newest, token_release, spent, held = observed
        seen = Observed(
            now,
            _window(requests, request_newest, request_release) if limits.rpm is not None else None,
            _window(tokens, token_newest, token_release) if limits.tpm is not None else None,
            spent if limits.budget is not None else None,
            budget_end,
            held if limits.max_concurrency is not None else None,
        )
        return admission(limits, seen, lease)

    async def finish(self, key: str, limits: Limits, tokens: int, lease: Lease | None) -> None:
        tokens = tokens if limits.tpm is not None or limits.budget is not None else 0
        if not tokens and lease is None:
            return
        now = self.clock()
        budget_key, budget_ttl = self._key(key, "budget"), 0
        if limits.budget is not None:
            label, end = period_bounds(now, limits.budget.period)
            budget_key = self._key(key, f"budget:{limits.budget.period}:{label}")
            budget_ttl = math.ceil((end - now + _BUDGET_SLACK) * 1000)
        keys = [self._key(key, "tokens"), budget_key, self._key(key, "slots")]
        args: list[int | str] = [
            tokens,
            math.floor(now) if limits.tpm is not None else "",
            _WINDOW_TTL_MS,
            budget_ttl,
            lease.id if lease is not None else "",
        ]
        await self._guard("finish", lambda: self._finish(keys=keys, args=args), None, _Call.BOOKKEEPING)

    async def renew(self, leases: Sequence[Lease]) -> None:
        expiry = self.clock() + self.lease_seconds
        pipe = self._redis.pipeline(transaction=False)
        for lease in leases:
            slots = self._key(lease.key, "slots")
            pipe.zadd(slots, {lease.id: expiry})
            pipe.pexpire(slots, math.ceil(self.lease_seconds * 2000))
        await self._guard("renew", pipe.execute, None, _Call.BOOKKEEPING)

    async def failed(self, deployment: str, max_failures: int, cooldown: float) -> bool:
        keys = [self._deployment(deployment, "failures"), self._deployment(deployment, "cooldown")]
        args: list[int | str] = [
            max_failures, repr(self.clock() + cooldown), math.ceil(cooldown * 1000), math.ceil(FAILURE_MEMORY * 1000)
        ]
        return bool(await self._guard("failed", lambda: self._failed(keys=keys, args=args), 0, _Call.BOOKKEEPING))

    async def succeeded(self, deployment: str) -> None:
        failures = self._deployment(deployment, "failures")
        await self._guard("succeeded", lambda: self._redis.delete(failures), None, _Call.BOOKKEEPING)

    async def cooling_down(self, deployments: Sequence[str]) -> dict[str, float]:
        if not deployments:
            return {}
        keys = [self._deployment(name, "cooldown") for name in deployments]
        values: list[bytes | None] = await self._guard("cooling_down", lambda: self._redis.mget(keys), [], _Call.ADVICE)
        now = self.clock()
        left = {name: float(value) - now for name, value in zip(deployments, values, strict=False) if value is not None}
        return {name: seconds for name, seconds in left.items() if seconds > 0}

    def _key(self, key: str, what: str) -> str:
        return f"{self._prefix}key:{{{key}}}:{what}"

    def _deployment(self, name: str, what: str) -> str:
        return f"{self._prefix}deployment:{{{name}}}:{what}"

    async def _guard(self, what: str, call: Callable[[], Awaitable[Any]], fallback: T, kind: _Call) -> T:
        """One round trip within its time limit; on failure, the fallback or (a check, when closed) an error."""
        try:
            async with asyncio.timeout(self._timeouts[kind]):
                result: T = await call()
                return result
        except (RedisError, OSError, TimeoutError) as exc:
            problem = "did not answer in time" if isinstance(exc, TimeoutError) else f"failed ({type(exc).__name__})"
            if self._on_failure is not None:
                self._on_failure(what)
            now = time.monotonic()
            if now - self._warned_at >= self._warn_interval:
                self._warned_at = now
                log.warning(
                    "shared state unavailable: %s %s (state_failure: %s; further failures within %gs are only counted)",
                    self._where, problem, self._failure, self._warn_interval,
                )
            if kind is _Call.CHECK and self._failure is FailurePolicy.CLOSED:
                raise StateUnavailable(
                    f"The gateway's shared state ({self._where}) {problem}, and the gateway is configured to refuse"
                    " requests then (server.state_failure: closed)."
                ) from None
            return fallback


def _window(used: int, newest: int, release: int) -> Window:
    return Window(used, newest if newest >= 0 else None, release if release >= 0 else None)
