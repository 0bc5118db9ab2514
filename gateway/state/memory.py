"""The in-process state backend: the default, enough for a single process; nothing here can fail or wait.

Every method runs without awaiting in between, so on one event loop each
check is as atomic as the Redis backend's script.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
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

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _KeyState:
    requests: dict[int, int] = field(default_factory=dict)  # bucket -> requests admitted
    tokens: dict[int, int] = field(default_factory=dict)  # bucket -> tokens charged
    budget_period: str = ""
    budget_spent: int = 0
    leases: dict[str, float] = field(default_factory=dict)  # lease id -> expiry


class MemoryStore(StateStore):
    """Limits and deployment health for this process alone."""

    def __init__(self, clock: Clock = time.time, lease_seconds: float = 30.0) -> None:
        super().__init__(clock, lease_seconds)
        self._keys: dict[str, _KeyState] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # deployment -> (failures in a row, forgotten at)
        self._cooldowns: dict[str, float] = {}  # deployment -> cooling down until

    async def admit(self, key: str, limits: Limits) -> Admission:
        if not limits.any:
            return Admission(None)
        now = self.clock()
        current = math.floor(now)
        state = self._keys.setdefault(key, _KeyState())
        requests = tokens = None
        spent = held = None
        end = None
        if limits.rpm is not None:
            _prune(state.requests, current)
            requests = summarize(state.requests, current, limits.rpm)
        if limits.tpm is not None:
            _prune(state.tokens, current)
            tokens = summarize(state.tokens, current, limits.tpm)
        if limits.budget is not None:
            label, end = period_bounds(now, limits.budget.period)
            spent = state.budget_spent if state.budget_period == label else 0
        if limits.max_concurrency is not None:
            state.leases = {lease: expiry for lease, expiry in state.leases.items() if expiry > now}
            held = len(state.leases)
        seen = Observed(now, requests, tokens, spent, end, held)
        lease = new_lease(key) if limits.max_concurrency is not None else None
        answer = admission(limits, seen, lease)
        if answer.allowed:
            if limits.rpm is not None:
                state.requests[current] = state.requests.get(current, 0) + 1
            if lease is not None:
                state.leases[lease.id] = now + self.lease_seconds
        return answer

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


def _prune(buckets: dict[int, int], current: int) -> None:
    for bucket in [bucket for bucket in buckets if bucket <= current - BUCKETS]:
        del buckets[bucket]
