"""Shared state: rate limits, budgets, concurrency slots and deployment health.

``memory`` keeps it in this process (the default: a single process needs
nothing else); a ``redis://`` or ``rediss://`` URL shares it between every
worker and replica. Both backends answer through the same StateStore interface.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.state.base import (
    Admission,
    Budget,
    Lease,
    Limits,
    Period,
    Quota,
    Refusal,
    StateStore,
    StateUnavailable,
)
from gateway.state.memory import MemoryStore
from gateway.state.redis_store import DEFAULT_POOL_SIZE, DEFAULT_QUEUE_TIMEOUT, FailurePolicy, RedisStore

__all__ = [
    "Admission",
    "Budget",
    "FailurePolicy",
    "Lease",
    "Limits",
    "MemoryStore",
    "Period",
    "Quota",
    "RedisStore",
    "Refusal",
    "StateStore",
    "StateUnavailable",
    "create_store",
]


def create_store(
    state: str,
    failure: str = "open",
    timeout: float = 0.05,
    on_failure: Callable[[str], None] | None = None,
    lease_seconds: float = 30.0,
    pool_size: int = DEFAULT_POOL_SIZE,
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT,
    password: str | None = None,
) -> StateStore:
    """The store ``server.state`` names; ``on_failure`` is told of every failed round trip (for a metric)."""
    if state == "memory":
        return MemoryStore(lease_seconds=lease_seconds)
    return RedisStore.from_url(
        state,
        failure=FailurePolicy(failure),
        timeout=timeout,
        on_failure=on_failure,
        lease_seconds=lease_seconds,
        pool_size=pool_size,
        queue_timeout=queue_timeout,
        password=password,
    )
