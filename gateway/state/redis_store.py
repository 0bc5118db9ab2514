"""The Redis state backend: limits, slots and deployment health shared by every worker and replica.

Each check is one round trip: a Lua script (atomic on the server) or a
pipeline. Every key expires on its own, so nothing is left behind by a key
removed from the config or a worker that died. Times are the workers' clocks
(keep them in sync with NTP); a key's data share one hash slot.

Each worker holds a fixed pool of ``pool_size`` connections, opened when the
store starts and reopened as they break, so a burst of requests never opens
connections of its own: a check waits for a pooled connection up to
``queue_timeout`` (connecting, when one must reconnect, counts there), and
only its round trip is held to ``timeout`` (``state_timeout``).

When Redis cannot answer (down, slower than ``state_timeout``, or no pooled
connection within ``queue_timeout``), the store counts the failure and logs
one warning per interval; then a check either raises StateUnavailable
(``closed``) or is answered by the in-process guard (``open``): a
``MemoryStore`` that sees every request this worker admits, so it holds a key
to its limits as this worker alone has counted them. Bookkeeping once a
request is admitted (charging tokens, renewing and returning slots, counting
a deployment's failures) may wait longer, up to ``BOOKKEEPING_TIMEOUT``: a
busy worker's event loop alone can hold an answer back for tens of
milliseconds, and bookkeeping given up is lost in Redis (tokens not counted, a
slot held until its lease ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from enum import Enum, StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

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
    summarize,
)
from gateway.state.memory import MemoryStore
from gateway.state.stored import Entry, Fetched, Retention

__all__ = ["BOOKKEEPING_TIMEOUT", "DEFAULT_POOL_SIZE", "DEFAULT_QUEUE_TIMEOUT", "FailurePolicy", "RedisStore"]

log = logging.getLogger("gateway.state")

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

# Stored responses of one owner. KEYS: the expiry index (a sorted set of response ids by expiry, ms), the meta
# hash (response id -> "size item item...", and '*' -> the owner's total bytes), the record.
# ARGV: now (ms), TTL (ms), the owner's byte cap, the id, the record, the records' and the items' key prefixes,
# the number of item ids, the item ids, then the ids of the earlier responses to keep as long.
# Forgets what expired, keeps the earlier responses, makes room by forgetting what expires first, stores.
_STORED_COMMON: Final = """
local records, items = ARGV[2], ARGV[3]
local total = tonumber(redis.call('HGET', KEYS[2], '*') or '0')
local function words(meta)
  local out = {}
  for word in string.gmatch(meta, '%S+') do out[#out + 1] = word end
  return out
end
local function drop(old)
  local meta = redis.call('HGET', KEYS[2], old)
  if not meta then return 0 end
  local parts = words(meta)
  total = total - tonumber(parts[1])
  for i = 2, #parts do
    if redis.call('GET', items .. parts[i]) == old then redis.call('DEL', items .. parts[i]) end
  end
  redis.call('HDEL', KEYS[2], old)
  redis.call('ZREM', KEYS[1], old)
  return redis.call('DEL', records .. old)
end
local now = tonumber(ARGV[1])
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do drop(old) end
"""
_KEEP: Final = (
    _STORED_COMMON
    + """
local ttl, cap, id, data, count = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7], tonumber(ARGV[8])
local expires = now + ttl
for i = 9 + count, #ARGV do
  local earlier = ARGV[i]
  local meta = redis.call('HGET', KEYS[2], earlier)
  if meta and redis.call('PEXPIRE', records .. earlier, ttl) == 1 then
    redis.call('ZADD', KEYS[1], expires, earlier)
    local parts = words(meta)
    for j = 2, #parts do
      if redis.call('GET', items .. parts[j]) == earlier then redis.call('PEXPIRE', items .. parts[j], ttl) end
    end
  end
end
drop(id)
local size = string.len(data)
while total + size > cap do
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)
  if #oldest == 0 then break end
  drop(oldest[1])
end
redis.call('SET', records .. id, data, 'PX', ttl)
local meta = tostring(size)
for i = 9, 8 + count do
  redis.call('SET', items .. ARGV[i], id, 'PX', ttl)
  meta = meta .. ' ' .. ARGV[i]
end
redis.call('HSET', KEYS[2], id, meta, '*', total + size)
redis.call('ZADD', KEYS[1], expires, id)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
"""
)
# KEYS: as for _KEEP. ARGV: now (ms), the records' and the items' key prefixes, the id.
_FORGET: Final = (
    _STORED_COMMON
    + """
local dropped = drop(ARGV[4])
redis.call('HSET', KEYS[2], '*', total)
return dropped
"""
)

_WINDOW_TTL_MS: Final = (BUCKETS + 1) * 1000
# A budget counter outlives its period a little, for a request that started in it and is charged after.
_BUDGET_SLACK: Final = 3600.0


# The longest wait for bookkeeping, in seconds, unless state_timeout is longer.
BOOKKEEPING_TIMEOUT: Final = 1.0
# Connections per worker, and the longest a round trip waits for one of them (server.state_pool_size,
# server.state_queue_timeout).
DEFAULT_POOL_SIZE: Final = 16
DEFAULT_QUEUE_TIMEOUT: Final = 1.0


class FailurePolicy(StrEnum):
    """What a limit check does when the shared state cannot answer in time."""

    OPEN = "open"
    CLOSED = "closed"


class _Call(Enum):
    """What a round trip is for, which decides how long it may take and what its failure does."""

    CHECK = "check"  # a limit check: state_timeout, then state_failure decides
    ADVICE = "advice"  # read on a request's path (deployment health): state_timeout, then the fallback
    BOOKKEEPING = "bookkeeping"  # after admission: up to BOOKKEEPING_TIMEOUT, then the fallback
    STORED = "stored"  # stored responses, which may be large: as bookkeeping, then StateUnavailable or not stored


class _Unanswered(Exception):
    """A round trip that got no answer: ``problem`` says why, for the log (never for a client)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class _Script:
    """A Lua script, run by its digest (``EVALSHA``) and sent whole only when Redis does not know it yet."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


_ADMIT_SCRIPT: Final = _Script(_ADMIT)
_FINISH_SCRIPT: Final = _Script(_FINISH)
_FAILED_SCRIPT: Final = _Script(_FAILED)
_KEEP_SCRIPT: Final = _Script(_KEEP)
_FORGET_SCRIPT: Final = _Script(_FORGET)


class RedisStore(StateStore):
    """State in one Redis database, over a fixed pool of connections per worker, guarded in process."""

    def __init__(
        self,
        pool: BlockingConnectionPool,
        *,
        failure: FailurePolicy = FailurePolicy.OPEN,
        timeout: float = 0.05,
        queue_timeout: float = DEFAULT_QUEUE_TIMEOUT,
        on_failure: Callable[[str], None] | None = None,
        warn_interval: float = 60.0,
        prefix: str = "gateway:",
        clock: Clock = time.time,
        lease_seconds: float = 30.0,
        where: str = "redis",
    ) -> None:
        super().__init__(clock, lease_seconds)
        self._pool = pool
        self._failure = failure
        self._timeouts = {
            _Call.CHECK: timeout,
            _Call.ADVICE: timeout,
            _Call.BOOKKEEPING: max(timeout, BOOKKEEPING_TIMEOUT),
            _Call.STORED: max(timeout, BOOKKEEPING_TIMEOUT),
        }
        self._queue_timeout = queue_timeout
        self._on_failure = on_failure
        self._warn_interval = warn_interval
        self._warned_at = -math.inf
        self._prefix = prefix
        self._where = where
        # Redis could not be reached: one round trip at a time tries again (the probe); the others do not wait.
        self._down = False
        self._probing = False
        # The guard: sees every request this worker admits, and answers for the key when Redis cannot (open).
        self.guard = MemoryStore(clock, lease_seconds)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        queue_timeout: float = DEFAULT_QUEUE_TIMEOUT,
        password: str | None = None,
        **options: Any,
    ) -> RedisStore:
        """A store on its own pool of ``pool_size`` connections; connecting one counts toward ``queue_timeout``.
        ``password`` is used when the URL has none."""
        extra = {"password": password} if password is not None and urlsplit(url).password is None else {}
        pool = BlockingConnectionPool.from_url(
            url,
            **extra,
            max_connections=pool_size,
            timeout=None,  # the store bounds each wait itself
            socket_timeout=5,
            socket_connect_timeout=queue_timeout,
        )
        return cls(pool, queue_timeout=queue_timeout, where=f"redis at {_host_of(url)}", **options)

    async def start(self) -> None:
        """Open every connection of the pool now, and load the scripts, so that no request pays for either."""
        size = self._pool.max_connections
        opened = await asyncio.gather(*(self._connection() for _ in range(size)), return_exceptions=True)
        connections = [c for c in opened if not isinstance(c, BaseException)]
        try:
            if connections:
                for script in (_ADMIT_SCRIPT, _FINISH_SCRIPT, _FAILED_SCRIPT, _KEEP_SCRIPT, _FORGET_SCRIPT):
                    await connections[0].send_command("SCRIPT", "LOAD", script.text)
                    await connections[0].read_response()
        except (RedisError, OSError) as exc:
            log.warning("shared state: could not load the scripts at start (%s); they load on first use", exc)
        finally:
            for connection in connections:
                await self._pool.release(connection)
        if len(connections) < size:
            self._warn(f"could not be reached at start ({size - len(connections)} of {size} connections failed)")

    async def aclose(self) -> None:
        await super().aclose()
        await self._pool.disconnect()

    async def admit(self, key: str, limits: Limits) -> Admission:
        if not limits.any:
            return Admission(None)
        now = self.clock()
        lease = new_lease(key) if limits.max_concurrency is not None else None
        budget_key, budget_end = self._budget(key, limits, now)
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
        try:
            reply = await self._run("admit", _Call.CHECK, _ADMIT_SCRIPT, keys, args)
        except _Unanswered as exc:
            if self._failure is FailurePolicy.CLOSED:
                raise StateUnavailable(
                    f"The gateway's shared state {exc.problem}, and the gateway is configured to refuse requests"
                    " then (server.state_failure: closed)."
                ) from None
            return await self.guard.admit(key, limits)
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
        answer = admission(limits, seen, lease)
        if answer.allowed:
            self.guard.count(key, limits, answer.lease)
        return answer

    async def finish(self, key: str, limits: Limits, tokens: int, lease: Lease | None) -> None:
        await self.guard.finish(key, limits, tokens, lease)
        tokens = tokens if limits.tpm is not None or limits.budget is not None else 0
        if not tokens and lease is None:
            return
        now = self.clock()
        budget_key, end = self._budget(key, limits, now)
        budget_ttl = math.ceil((end - now + _BUDGET_SLACK) * 1000) if end is not None else 0
        keys = [self._key(key, "tokens"), budget_key, self._key(key, "slots")]
        args: list[int | str] = [
            tokens,
            math.floor(now) if limits.tpm is not None else "",
            _WINDOW_TTL_MS,
            budget_ttl,
            lease.id if lease is not None else "",
        ]
        await self._try("finish", _Call.BOOKKEEPING, _FINISH_SCRIPT, keys, args)

    async def observe(self, keys: Mapping[str, Limits]) -> dict[str, Observed]:
        now = self.clock()
        current = math.floor(now)
        commands: list[tuple[Any, ...]] = []
        ends: dict[str, float | None] = {}
        for key, limits in keys.items():
            budget_key, ends[key] = self._budget(key, limits, now)
            commands += [
                ("HGETALL", self._key(key, "requests")),
                ("HGETALL", self._key(key, "tokens")),
                ("GET", budget_key),
                ("ZCOUNT", self._key(key, "slots"), f"({now!r}", "+inf"),
            ]
        if not commands:
            return {}
        try:
            replies = await self._round_trip("observe", _Call.ADVICE, commands)
        except _Unanswered:
            return {}
        seen: dict[str, Observed] = {}
        for (key, limits), at in zip(keys.items(), range(0, len(replies), 4), strict=True):
            requests, tokens, spent, held = replies[at : at + 4]
            seen[key] = Observed(
                now,
                summarize(_buckets(requests), current, limits.rpm) if limits.rpm is not None else None,
                summarize(_buckets(tokens), current, limits.tpm) if limits.tpm is not None else None,
                int(spent or 0) if limits.budget is not None else None,
                ends[key],
                int(held) if limits.max_concurrency is not None else None,
            )
        return seen

    async def renew(self, leases: Sequence[Lease]) -> None:
        await self.guard.renew(leases)
        expiry = self.clock() + self.lease_seconds
        ttl = math.ceil(self.lease_seconds * 2000)
        commands: list[tuple[Any, ...]] = []
        for lease in leases:
            slots = self._key(lease.key, "slots")
            commands += [("ZADD", slots, repr(expiry), lease.id), ("PEXPIRE", slots, ttl)]
        with contextlib.suppress(_Unanswered):
            await self._round_trip("renew", _Call.BOOKKEEPING, commands)

    async def failed(self, deployment: str, max_failures: int, cooldown: float) -> bool:
        keys = [self._deployment(deployment, "failures"), self._deployment(deployment, "cooldown")]
        args: list[int | str] = [
            max_failures,
            repr(self.clock() + cooldown),
            math.ceil(cooldown * 1000),
            math.ceil(FAILURE_MEMORY * 1000),
        ]
        return bool(await self._try("failed", _Call.BOOKKEEPING, _FAILED_SCRIPT, keys, args))

    async def succeeded(self, deployment: str) -> None:
        with contextlib.suppress(_Unanswered):
            await self._round_trip("succeeded", _Call.BOOKKEEPING, [("DEL", self._deployment(deployment, "failures"))])

    async def cooling_down(self, deployments: Sequence[str]) -> dict[str, float]:
        if not deployments:
            return {}
        keys = [self._deployment(name, "cooldown") for name in deployments]
        try:
            [values] = await self._round_trip("cooling_down", _Call.ADVICE, [("MGET", *keys)])
        except _Unanswered:
            return {}
        now = self.clock()
        left = {name: float(value) - now for name, value in zip(deployments, values, strict=False) if value is not None}
        return {name: seconds for name, seconds in left.items() if seconds > 0}

    async def fetch_responses(self, owner: str, ids: Sequence[str], items: Sequence[str] = ()) -> Fetched:
        commands: list[tuple[Any, ...]] = []
        if ids:
            commands.append(("MGET", *(self._stored(owner, "r:") + i for i in ids)))
        if items:
            commands.append(("MGET", *(self._stored(owner, "i:") + item for item in items)))
        if not commands:
            return Fetched([], [])
        try:
            replies = await self._round_trip("fetch", _Call.STORED, commands)
        except _Unanswered as exc:
            raise StateUnavailable(f"The gateway's shared state {exc.problem}.") from None
        records = replies.pop(0) if ids else []
        holders = [h.decode() if h is not None else None for h in replies.pop(0)] if items else []
        return Fetched(records, holders)

    async def store_response(self, owner: str, entry: Entry, retention: Retention) -> bool:
        if len(entry.data) > retention.per_key:
            return False
        keys = [self._stored(owner, "index"), self._stored(owner, "meta")]
        args: list[int | str | bytes] = [
            math.floor(self.clock() * 1000),
            self._stored(owner, "r:"),
            self._stored(owner, "i:"),
            math.ceil(retention.ttl * 1000),
            retention.per_key,
            entry.id,
            entry.data,
            len(entry.items),
            *entry.items,
            *entry.touch,
        ]
        return await self._try("keep", _Call.STORED, _KEEP_SCRIPT, keys, args) is not None

    async def delete_response(self, owner: str, response_id: str) -> bool:
        keys = [self._stored(owner, "index"), self._stored(owner, "meta")]
        now = math.floor(self.clock() * 1000)
        args: list[int | str | bytes] = [now, self._stored(owner, "r:"), self._stored(owner, "i:"), response_id]
        try:
            return bool(await self._run("forget", _Call.STORED, _FORGET_SCRIPT, keys, args))
        except _Unanswered as exc:
            raise StateUnavailable(f"The gateway's shared state {exc.problem}.") from None

    def _stored(self, owner: str, what: str) -> str:
        return f"{self._prefix}responses:{{{owner}}}:{what}"

    def _budget(self, key: str, limits: Limits, now: float) -> tuple[str, float | None]:
        """The key of ``key``'s budget counter for the period ``now`` is in, and when that period ends."""
        if limits.budget is None:
            return self._key(key, "budget"), None
        label, end = period_bounds(now, limits.budget.period)
        return self._key(key, f"budget:{limits.budget.period}:{label}"), end

    def _key(self, key: str, what: str) -> str:
        return f"{self._prefix}key:{{{key}}}:{what}"

    def _deployment(self, name: str, what: str) -> str:
        return f"{self._prefix}deployment:{{{name}}}:{what}"

    async def _try(
        self, what: str, kind: _Call, script: _Script, keys: list[str], args: list[int | str] | list[int | str | bytes]
    ) -> Any:
        """A script run for bookkeeping: its reply, or None when Redis did not answer (already counted and logged)."""
        try:
            return await self._run(what, kind, script, keys, args)
        except _Unanswered:
            return None

    async def _run(
        self, what: str, kind: _Call, script: _Script, keys: list[str], args: list[int | str] | list[int | str | bytes]
    ) -> Any:
        """One script call; a Redis that lost its script cache (restarted) gets the script itself."""
        try:
            [reply] = await self._round_trip(what, kind, [("EVALSHA", script.sha, len(keys), *keys, *args)])
        except NoScriptError:
            [reply] = await self._round_trip(what, kind, [("EVAL", script.text, len(keys), *keys, *args)])
        return reply

    async def _round_trip(self, what: str, kind: _Call, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The commands' replies, on one pooled connection, within the call's time limit.

        Waiting for the connection (and connecting it, after a break) counts toward ``queue_timeout``, not
        toward the round trip. A connection that broke before anything came back is replaced and the commands
        sent once more. Raises ``_Unanswered`` (counted, and logged once per interval) when Redis cannot answer,
        and the first error reply as the ``ResponseError`` it is.
        """
        for attempt in (1, 2):
            try:
                connection = await self._connection()
            except (RedisError, OSError, TimeoutError) as exc:
                raise self._unanswered(what, exc) from None
            try:
                async with asyncio.timeout(self._timeouts[kind]):
                    await connection.send_packed_command(connection.pack_commands(commands))
                    replies = [await _reply(connection) for _ in commands]
            except RedisConnectionError as exc:
                await connection.disconnect(nowait=True)
                if attempt == 2:
                    raise self._unanswered(what, exc) from None
                continue
            except (RedisError, OSError, TimeoutError) as exc:
                await connection.disconnect(nowait=True)
                raise self._unanswered(what, exc) from None
            finally:
                await self._pool.release(connection)
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
            return replies
        raise AssertionError("unreachable")

    async def _connection(self) -> AbstractConnection:
        """A pooled connection, connected, within ``queue_timeout``.

        Once Redis could not be reached, one caller at a time tries again while the others fail at once, so an
        outage (even of a host that drops packets, where connecting waits out the deadline) slows nobody down.
        """
        if self._down and self._probing:
            raise TimeoutError("not tried: Redis could not be reached, and another request is trying again")
        self._probing = self._down
        try:
            async with asyncio.timeout(self._queue_timeout):
                connection: AbstractConnection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        except (RedisError, OSError, TimeoutError):
            self._down = True
            raise
        finally:
            self._probing = False
        self._down = False
        return connection

    def _unanswered(self, what: str, exc: BaseException) -> _Unanswered:
        problem = "did not answer in time" if isinstance(exc, TimeoutError) else f"failed ({type(exc).__name__})"
        if self._on_failure is not None:
            self._on_failure(what)
        self._warn(problem)
        return _Unanswered(problem)

    def _warn(self, problem: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= self._warn_interval:
            self._warned_at = now
            log.warning(
                "shared state unavailable: %s %s (state_failure: %s; further failures within %gs are only counted)",
                self._where,
                problem,
                self._failure,
                self._warn_interval,
            )


async def _reply(connection: AbstractConnection) -> Any:
    """The next reply, an error reply returned rather than raised, so the replies after it are still read."""
    try:
        return await connection.read_response()
    except ResponseError as error:
        return error


def _host_of(url: str) -> str:
    """``host:port`` of a Redis URL, for the log (never its password)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


def _buckets(reply: dict[bytes, bytes] | list[bytes]) -> dict[int, int]:
    """A window's hash as HGETALL answers it (a map under RESP3, field, value, field... under RESP2), bucket to
    count."""
    pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
    return {int(bucket): int(count) for bucket, count in pairs}


def _window(used: int, newest: int, release: int) -> Window:
    return Window(used, newest if newest >= 0 else None, release if release >= 0 else None)
