"""Deployment health: failures in a row and cool-downs, kept in the state store so that every worker agrees.

Picking a deployment (``Router.pick``) stays synchronous: it reads what this
worker last heard from the store. Before picking among a route's deployments
a worker asks the store again, in one round trip, when it last asked more
than ``REFRESH`` seconds ago; a cool-down its own failures caused it knows at
once. A route with one deployment never asks: there is nothing to choose.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Final

from gateway.config import ProviderConfig
from gateway.state import StateStore

__all__ = ["REFRESH", "DeploymentHealth"]

# How stale this worker's view of other workers' cool-downs may be, in seconds.
REFRESH: Final = 1.0


class DeploymentHealth:
    """This worker's view of which deployments are cooling down, and its reports of their failures."""

    def __init__(
        self, store: StateStore, providers: Mapping[str, ProviderConfig], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._providers = providers
        self._clock = clock
        self._until: dict[str, float] = {}  # deployment -> cooling down until, on this worker's clock
        self._asked: dict[tuple[str, ...], float] = {}  # deployments -> when the store was last asked about them
        # Deployments this worker saw fail since it last saw them succeed: only their successes reach the store.
        self._failing: set[str] = set()

    def cooling_down(self, name: str) -> bool:
        return self._clock() < self._until.get(name, 0.0)

    async def refresh(self, names: tuple[str, ...]) -> None:
        """Ask the store which of ``names`` are cooling down, unless it was asked within ``REFRESH`` seconds."""
        if len(names) < 2:
            return
        asked = self._clock()
        if asked - self._asked.get(names, -math.inf) < REFRESH:
            return
        self._asked[names] = asked
        left = await self._store.cooling_down(names)
        now = self._clock()
        for name in names:
            self._until[name] = now + left.get(name, 0.0)

    async def failed(self, name: str) -> None:
        """Count a failure in a row; at the provider's ``max_failures`` it cools down, for every worker."""
        config = self._providers[name]
        if await self._store.failed(name, config.max_failures, config.cooldown):
            self._until[name] = self._clock() + config.cooldown
            self._failing.discard(name)  # the count starts again
        else:
            self._failing.add(name)

    async def succeeded(self, name: str) -> None:
        """End a run of failures this worker saw (a success of a deployment it never saw fail costs nothing)."""
        if name in self._failing:
            self._failing.discard(name)
            await self._store.succeeded(name)
