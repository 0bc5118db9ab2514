"""The in-process state backend: the default, enough for a single process; nothing here can fail or wait.

Every method runs without awaiting in between, so on one event loop each
check is as atomic as the Redis backend's script.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.state.base import (
    BUCKETS,
    FAILURE_MEMORY,
    Admission,
    Clock,
    Lease,
    Limits,
    Observed,
    StateStore,
    admission,
    new_lease,
    period_bounds,
    summarize,
)
from gateway.state.stored import Entry, Fetched, Retention

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _KeyState:
    requests: dict[int, int] = field(default_factory=dict)  # bucket -> requests admitted
    tokens: dict[int, int] = field(default_factory=dict)  # bucket -> tokens charged
    budget_period: str = ""
    budget_spent: int = 0
    leases: dict[str, float] = field(default_factory=dict)  # lease id -> expiry


@dataclass(slots=True)
class _Record:
    expires: float
    data: bytes
    items: tuple[str, ...]


@dataclass(slots=True)
class _Shelf:
    """One owner's stored responses, in the order they expire (the TTL is the same for all, and a touched
    record moves to the end), and which of them holds each item."""

    records: OrderedDict[str, _Record] = field(default_factory=OrderedDict)
    items: dict[str, str] = field(default_factory=dict)  # item id -> response id
    size: int = 0

    def prune(self, now: float) -> None:
        while self.records and next(iter(self.records.values())).expires <= now:
            self.drop(next(iter(self.records)))

    def drop(self, response_id: str) -> bool:
        record = self.records.pop(response_id, None)
        if record is None:
            return False
        self.size -= len(record.data)
        for item in record.items:
            if self.items.get(item) == response_id:
                del self.items[item]
        return True


class MemoryStore(StateStore):
    """Limits and deployment health for this process alone."""

    def __init__(self, clock: Clock = time.time, lease_seconds: float = 30.0) -> None:
        super().__init__(clock, lease_seconds)
        self._keys: dict[str, _KeyState] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # deployment -> (failures in a row, forgotten at)
        self._cooldowns: dict[str, float] = {}  # deployment -> cooling down until
        self._shelves: dict[str, _Shelf] = {}  # owner -> stored responses

    async def admit(self, key: str, limits: Limits) -> Admission:
        if not limits.any:
            return Admission(None)
        now = self.clock()
        current = math.floor(now)
        state = self._keys.setdefault(key, _KeyState())
        _prune(state.requests, current)
        _prune(state.tokens, current)
        state.leases = {lease: expiry for lease, expiry in state.leases.items() if expiry > now}
        lease = new_lease(key) if limits.max_concurrency is not None else None
        answer = admission(limits, _observed(state, limits, now), lease)
        if answer.allowed:
            if limits.rpm is not None:
                state.requests[current] = state.requests.get(current, 0) + 1
            if lease is not None:
                state.leases[lease.id] = now + self.lease_seconds
        return answer

    async def observe(self, keys: Mapping[str, Limits]) -> dict[str, Observed]:
        now = self.clock()
        return {key: _observed(self._keys.get(key) or _KeyState(), limits, now) for key, limits in keys.items()}

    def count(self, key: str, limits: Limits, lease: Lease | None) -> None:
        """Count a request admitted elsewhere (the shared state), with its slot, without checking: as the
        Redis store's guard, this store sees every request its worker admits."""
        now = self.clock()
        state = self._keys.setdefault(key, _KeyState())
        if limits.rpm is not None:
            current = math.floor(now)
            _prune(state.requests, current)
            state.requests[current] = state.requests.get(current, 0) + 1
        if lease is not None:
            state.leases = {held: expiry for held, expiry in state.leases.items() if expiry > now}
            state.leases[lease.id] = now + self.lease_seconds

    async def finish(self, key: str, limits: Limits, tokens: int, lease: Lease | None) -> None:
        if lease is not None and (held := self._keys.get(lease.key)) is not None:
            held.leases.pop(lease.id, None)
        if not tokens or (limits.tpm is None and limits.budget is None):
            return
        now = self.clock()
        state = self._keys.setdefault(key, _KeyState())
        if limits.tpm is not None:
            current = math.floor(now)
            _prune(state.tokens, current)
            state.tokens[current] = state.tokens.get(current, 0) + tokens
        if limits.budget is not None:
            label, _ = period_bounds(now, limits.budget.period)
            if state.budget_period != label:
                state.budget_period, state.budget_spent = label, 0
            state.budget_spent += tokens

    async def renew(self, leases: Sequence[Lease]) -> None:
        expiry = self.clock() + self.lease_seconds
        for lease in leases:
            self._keys.setdefault(lease.key, _KeyState()).leases[lease.id] = expiry

    async def failed(self, deployment: str, max_failures: int, cooldown: float) -> bool:
        now = self.clock()
        count, forgotten_at = self._failures.get(deployment, (0, now))
        count = (count if forgotten_at > now else 0) + 1
        if count >= max_failures:
            self._failures.pop(deployment, None)
            if cooldown > 0:
                self._cooldowns[deployment] = now + cooldown
            return True
        self._failures[deployment] = (count, now + FAILURE_MEMORY)
        return False

    async def succeeded(self, deployment: str) -> None:
        self._failures.pop(deployment, None)

    async def cooling_down(self, deployments: Sequence[str]) -> dict[str, float]:
        now = self.clock()
        left = {name: self._cooldowns.get(name, now) - now for name in deployments}
        return {name: seconds for name, seconds in left.items() if seconds > 0}

    async def fetch_responses(self, owner: str, ids: Sequence[str], items: Sequence[str] = ()) -> Fetched:
        shelf = self._shelves.get(owner)
        if shelf is None:
            return Fetched([None] * len(ids), [None] * len(items))
        shelf.prune(self.clock())
        records = [record.data if (record := shelf.records.get(i)) is not None else None for i in ids]
        return Fetched(records, [shelf.items.get(item) for item in items])

    async def store_response(self, owner: str, entry: Entry, retention: Retention) -> bool:
        if len(entry.data) > retention.per_key:
            return False
        now = self.clock()
        shelf = self._shelves.setdefault(owner, _Shelf())
        shelf.prune(now)
        expires = now + retention.ttl
        for earlier in entry.touch:
            if (record := shelf.records.get(earlier)) is not None:
                record.expires = expires
                shelf.records.move_to_end(earlier)
        shelf.drop(entry.id)
        while shelf.records and shelf.size + len(entry.data) > retention.per_key:
            shelf.drop(next(iter(shelf.records)))
        shelf.records[entry.id] = _Record(expires, entry.data, entry.items)
        shelf.size += len(entry.data)
        for item in entry.items:
            shelf.items[item] = entry.id
        return True

    async def delete_response(self, owner: str, response_id: str) -> bool:
        shelf = self._shelves.get(owner)
        if shelf is None:
            return False
        shelf.prune(self.clock())
        return shelf.drop(response_id)


def _observed(state: _KeyState, limits: Limits, now: float) -> Observed:
    """What a check of ``limits`` reads in ``state`` now (stale buckets and lapsed slots left out)."""
    current = math.floor(now)
    budget = end = None
    if limits.budget is not None:
        label, end = period_bounds(now, limits.budget.period)
        budget = state.budget_spent if state.budget_period == label else 0
    return Observed(
        now,
        summarize(state.requests, current, limits.rpm) if limits.rpm is not None else None,
        summarize(state.tokens, current, limits.tpm) if limits.tpm is not None else None,
        budget,
        end,
        sum(expiry > now for expiry in state.leases.values()) if limits.max_concurrency is not None else None,
    )


def _prune(buckets: dict[int, int], current: int) -> None:
    for bucket in [bucket for bucket in buckets if bucket <= current - BUCKETS]:
        del buckets[bucket]
